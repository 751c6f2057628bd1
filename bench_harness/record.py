"""Run records: the one place where the JSON record of a run is built.

A record is a plain dict (it is written as JSON by ``bench_harness.store``) with, at the top, the
identity of the run (``run_id``, ``pruner``, ``dataset``, ``model``, ``seed``, ``config`` and its
hash), where its pieces came from (``plugins``: the package and version of the pruner, dataset and
model plugins), whether it is the dense reference (``dense_reference``), its ``status`` and
``error`` (for a failure in plugin code, ``failed_plugin`` names the plugin's package), the
``flags`` that make its result suspect, the epochs it was resumed from (``resumed_from_epochs``),
and then what it measured: ``metrics``, the per-epoch ``history``, the per-event ``events``,
``telemetry`` and the ``environment`` (the machine it ran on, ``host`` included).

:func:`incomplete_reason` says whether a stored record is a finished run that resume may skip;
:func:`computed` keeps what a run computed, without where and when it ran, so records made on two
machines (or by two executors) can be compared.
"""

from __future__ import annotations

import math
import platform
import socket
import traceback
from datetime import datetime, timezone

import torch

import bench_harness
from bench_harness.config import RunConfig

SCHEMA_VERSION = 3
"""2: ``plugins``, ``dense_reference``, ``events``, ``val_loss`` in the history. 3: ``flags``,
``resumed_from_epochs``, ``failed_plugin``, ``metrics.chance_accuracy``."""

PLUGIN_KINDS = ("pruner", "dataset", "model")


def cpu_name() -> str:
    """The processor's model name (Linux reports it in /proc/cpuinfo; elsewhere the platform's word)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            for line in stream:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    """Versions and hardware a record was produced with."""
    import torchvision

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "bench_harness": bench_harness.__version__,
        "device": device.type,
        "device_name": name,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
    }


def now() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def plugin_provenance(registries, config: RunConfig) -> dict:
    """Which plugin (package, version, module) provides the run's pruner, dataset and model, and
    the module its code lives in (``code``: the pruner's class, the dataset's loader, the model's
    builder), which may be a submodule of the plugin's."""
    entries = {
        "pruner": registries.pruners.entry(config.pruner),
        "dataset": registries.datasets.entry(config.dataset),
        "model": registries.models.entry(config.model),
    }
    code = {
        "pruner": entries["pruner"].obj,
        "dataset": getattr(entries["dataset"].obj, "load", None),
        "model": getattr(entries["model"].obj, "build", None),
    }
    return {kind: {**entry.provenance, "code": getattr(code[kind], "__module__", None)} for kind, entry in entries.items()}


def same_plugins(record: dict, provenance: dict) -> bool:
    """True when a record was produced by the same package versions of its three plugins.

    A record from another version of a pruner (or dataset, or model) package may describe something
    that version no longer computes, so it does not count as complete.
    """
    recorded = record.get("plugins")
    if not isinstance(recorded, dict):
        return False
    for kind in PLUGIN_KINDS:
        then, current = recorded.get(kind), provenance.get(kind) or {}
        then = then if isinstance(then, dict) else {}
        if (then.get("distribution"), then.get("version")) != (current.get("distribution"), current.get("version")):
            return False
    return True


def new_record(config: RunConfig, device: torch.device, provenance: dict | None = None, dense_reference: bool = False) -> dict:
    """The record of a run that is about to start."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": config.run_id(),
        "pruner": config.pruner,
        "dataset": config.dataset,
        "model": config.model,
        "seed": config.seed,
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        "dense_reference": dense_reference,
        "plugins": provenance or {},
        "status": "running",
        "error": None,
        "failed_plugin": None,
        "flags": [],
        "resumed_from_epochs": [],
        "started_at": now(),
        "finished_at": None,
        "metrics": {},
        "history": [],
        "events": [],
        "telemetry": {"train": None, "inference": None},
        "environment": environment(device),
    }


def for_run(config: RunConfig, registries, device: torch.device) -> dict:
    """The new record of a planned run, with its plugins' provenance and the dense-reference mark."""
    prunes = registries.pruners.get(config.pruner).prunes
    return new_record(config, device, plugin_provenance(registries, config), dense_reference=not prunes)


def mark_failed(record: dict, exc: BaseException) -> dict:
    """Turn a record into a failed one, with the error, the plugin it came from and its traceback.

    When plugin code raised it (or broke the contract in an answer the harness checked), the error
    names the plugin's package, so the reader knows whom to ask; ``failed_plugin`` holds that
    plugin's provenance.
    """
    record["status"] = "failed"
    record["error"], record["failed_plugin"] = failure_reason(exc, record.get("plugins") or {})
    record["traceback"] = "".join(traceback.format_exception(exc))
    record["finished_at"] = now()
    return record


def failure_reason(exc: BaseException, plugins: dict) -> tuple[str, dict | None]:
    """The one-line reason for a failure, naming the plugin's package when plugin code raised it,
    and that plugin (kind and provenance), or None."""
    message = f"{type(exc).__name__}: {exc}" if not isinstance(exc, SystemExit) else f"SystemExit: the code called sys.exit({exc.code!r})"
    blamed = blame(exc, plugins)
    if blamed is None:
        return message, None
    kind, provenance = blamed
    return f"{message} (raised by the {kind} plugin {describe_plugin(provenance)})", {"kind": kind, **provenance}


def describe_plugin(provenance: dict) -> str:
    """``package version (module)``, or the module alone for a plugin registered by hand."""
    module = provenance.get("module") or provenance.get("plugin") or "?"
    if provenance.get("distribution"):
        return f"{provenance['distribution']} {provenance.get('version')} ({module})"
    return str(module)


def blame(exc: BaseException, plugins: dict) -> tuple[str, dict] | None:
    """Which of the run's plugins (kind, provenance) raised ``exc``, or None for the harness's own code.

    The innermost frame of the traceback that runs a plugin's module decides; an answer the harness
    refused (``bench_harness.errors.PluginFault``) blames the plugin that gave it.
    """
    modules = {}
    for kind in PLUGIN_KINDS:
        provenance = plugins.get(kind)
        if isinstance(provenance, dict):
            for key in ("module", "code"):
                if provenance.get(key):
                    modules[str(provenance[key])] = kind
    found = None
    frame = exc.__traceback__
    while frame is not None:
        name = str(frame.tb_frame.f_globals.get("__name__", ""))
        for module, kind in modules.items():
            if name == module or name.startswith(module + "."):
                found = kind
        frame = frame.tb_next
    if found is None:
        found = getattr(exc, "kind", None) if type(exc).__module__ == "bench_harness.errors" else None
    if found is None or not isinstance(plugins.get(found), dict):
        return None
    return found, plugins[found]


CHANCE_MARGIN = 0.05
"""A run is at chance when its test accuracy is at most this far (5 points) above the best constant guess."""
DENSE_MARGIN = 0.25
"""... and its dense reference is far above when it beats the best constant guess by at least 25 points."""


def add_flags(record: dict, dense_accuracy: float | None, watch_finding: str | None) -> None:
    """Flag what makes a finished run's result suspect, in ``record["flags"]`` (kind and one sentence).

    ``at_chance``: see :func:`flag_at_chance`. ``weights_changed``: the weight watch saw the pruner
    change the weights outside the pruning event (``watch_finding``, see ``bench_harness.watch``).
    """
    record["flags"] = [{"kind": "weights_changed", "message": watch_finding}] if watch_finding else []
    flag_at_chance(record, dense_accuracy)


def flag_at_chance(record: dict, dense_accuracy: float | None) -> None:
    """(Re)decide the ``at_chance`` flag of a finished run, keeping its other flags.

    ``at_chance``: the test accuracy is within :data:`CHANCE_MARGIN` of ``metrics.chance_accuracy``
    (the share of the test set's most frequent class: what a constant prediction scores) while the
    dense reference of the same table and seed (``dense_accuracy``, None when none is recorded) is
    at least :data:`DENSE_MARGIN` above it. The runner decides it where the record is stored (a Ray
    worker does not see the results folder), so it is the first flag.
    """
    flags = [flag for flag in record.get("flags") or [] if flag.get("kind") != "at_chance"]
    metrics = record.get("metrics") or {}
    accuracy, chance = metrics.get("test_accuracy"), metrics.get("chance_accuracy")
    if (
        dense_accuracy is not None and isinstance(accuracy, (int, float)) and isinstance(chance, (int, float))
        and accuracy <= chance + CHANCE_MARGIN and dense_accuracy >= chance + DENSE_MARGIN
    ):
        flags.insert(0, {
            "kind": "at_chance",
            "message": f"Test accuracy {100 * accuracy:.1f}% is at chance (a constant guess scores {100 * chance:.1f}%) "
                       f"while the dense reference of the same seed reaches {100 * dense_accuracy:.1f}%.",
        })
    record["flags"] = flags


def incomplete_reason(record: dict, config: RunConfig) -> str | None:
    """Why a stored ``ok`` record of ``config`` cannot count as a finished run, or None if it can.

    Resume skips a run only when its record holds what every reader relies on; anything less (a file
    cut short by hand, a field removed) is trained again and replaced.
    """
    if not record.get("run_id"):
        return "it names no run"
    if record.get("run_id") != config.run_id():
        return f"it names run {record.get('run_id')!r}, not {config.run_id()!r}"
    metrics = record.get("metrics")
    if not isinstance(metrics, dict):
        return "it holds no metrics"
    for key in ("test_accuracy", "sparsity"):
        value = metrics.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return f"it has no {key}"
    history = record.get("history")
    if not isinstance(history, list) or len(history) != config.epochs:
        return f"its history does not hold the run's {config.epochs} epochs"
    if not isinstance(record.get("config_hash"), str):
        return "it has no config hash"
    return None


def note_resumed(record: dict, epoch: int, started_at: str | None, earlier: list) -> None:
    """Say in the record that training continued from a checkpoint after ``epoch`` (after the
    ``earlier`` resumptions the checkpoint remembers), and keep the first attempt's start time."""
    record["resumed_from_epochs"] = [int(e) for e in earlier] + [epoch]
    if started_at:
        record["started_at"] = started_at


def mark_ok(record: dict) -> dict:
    """Turn a record into a finished one."""
    record["status"] = "ok"
    record["finished_at"] = now()
    return record


def add_training(record: dict, history: list) -> None:
    """The per-epoch history and the events of a trained run (``EpochReport`` objects)."""
    record["history"] = [
        {
            "epoch": report.epoch, "train_loss": report.train_loss, "val_loss": report.val_loss,
            "val_accuracy": report.val_accuracy, "sparsity": report.sparsity, "pruned": report.pruned,
        }
        for report in history
    ]
    record["events"] = [report.event.to_dict() for report in history if report.event is not None]


EXECUTION_KEYS = frozenset({"started_at", "finished_at", "environment", "telemetry", "traceback", "model_file"})
"""Top-level record keys that say where, when and how a run executed, not what it computed."""

EXECUTION_METRICS = frozenset({
    "train_seconds", "prune_seconds", "inference_seconds", "capture_seconds", "peak_memory_mb",
    "inference_peak_memory_mb", "train_energy_joules", "inference_energy_joules",
})
"""Metrics measured with a clock or a power meter: they differ from one execution to the next."""


def _execution_metric(key: str) -> bool:
    return key in EXECUTION_METRICS or "latency" in key or "throughput" in key or key.startswith("compact_speedup")


def computed(record: dict) -> dict:
    """What a run computed: the record without its execution fields (times, clocks, energy, the
    machine, the traceback's frames, file paths), so two executions of the same config compare
    equal on one machine, whichever executor ran them."""
    kept = {key: value for key, value in record.items() if key not in EXECUTION_KEYS}
    if isinstance(kept.get("metrics"), dict):
        kept["metrics"] = {key: value for key, value in kept["metrics"].items() if not _execution_metric(key)}
    if isinstance(kept.get("events"), list):
        kept["events"] = [{key: value for key, value in event.items() if key != "seconds"} if isinstance(event, dict) else event
                          for event in kept["events"]]
    return kept
