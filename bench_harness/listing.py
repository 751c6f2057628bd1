"""Text for ``bench list`` (what the plugins registered) and ``bench info`` (this machine)."""

from __future__ import annotations

import platform

from tabulate import tabulate

import bench_harness
from bench_harness.plugins import plugin_infos, registries


def capabilities(pruner_class) -> str:
    """What a pruner does beyond scoring, in the words of the README's contract table."""
    found = [
        (f"variant of {pruner_class.variant_of}", pruner_class.variant_of is not None),
        ("compensates", pruner_class.compensates()), ("regrows", pruner_class.regrows()),
        ("layer inputs", pruner_class.wants_inputs), ("dense gradients", pruner_class.wants_dense_gradients),
        ("layer outputs", pruner_class.wants_activations),
    ]
    return ", ".join(name for name, present in found if present) or "-"


def plugin_tables() -> str:
    """Three tables: pruners, datasets, models, each with its source plugin, package and version."""
    found = registries()
    pruner_rows = [
        [entry.name, entry.obj.description, ", ".join(entry.obj.granularities), capabilities(entry.obj),
         "yes" if entry.obj.capturable else "no (eager)", entry.source]
        for entry in found.pruners
    ]
    dataset_rows = [
        [entry.name, entry.obj.description, "x".join(map(str, entry.obj.input_shape)), entry.obj.num_classes, entry.obj.default_model, entry.source]
        for entry in found.datasets
    ]
    model_rows = [[entry.name, entry.obj.description, entry.source] for entry in found.models]
    plugins = [[info.name, info.module, info.distribution or "-", info.version or "-", ", ".join(info.hooks)] for info in plugin_infos()]
    return "\n\n".join(
        [
            "Pruners\n" + tabulate(pruner_rows, ["name", "description", "granularities", "capabilities", "graph-capturable", "source"]),
            "Datasets\n" + tabulate(dataset_rows, ["name", "description", "shape", "classes", "default model", "source"]),
            "Models\n" + tabulate(model_rows, ["name", "description", "source"]),
            "Plugins\n" + tabulate(plugins, ["plugin", "module", "package", "version", "hooks"]),
        ]
    )


def machine_report() -> str:
    """Device, driver, NVML availability and versions, as ``bench info`` prints them."""
    import torch
    import torchvision

    rows = [
        ["bench-harness", bench_harness.__version__],
        ["python", platform.python_version()],
        ["torch", torch.__version__],
        ["torchvision", torchvision.__version__],
        ["CUDA available", torch.cuda.is_available()],
    ]
    if torch.cuda.is_available():
        rows.append(["CUDA device", torch.cuda.get_device_name(0)])
        rows.append(["CUDA runtime", torch.version.cuda])
    try:
        from bench_harness.measure.telemetry import nvml_info

        nvml = nvml_info()
        rows.append(["NVML available", nvml["nvml_available"]])
        rows.append(["NVIDIA driver", nvml.get("driver_version") or "-"])
        for device in nvml.get("devices", []):
            rows.append([f"GPU {device['index']}", f"{device['name']} ({device['memory_total_mb']:.0f} MB)"])
        if nvml.get("error"):
            rows.append(["NVML note", nvml["error"]])
    except ImportError:
        rows.append(["NVML available", False])
    return tabulate(rows, tablefmt="plain")
