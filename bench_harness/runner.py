"""Plans the grid of runs and executes each one: data, model, pruner, training, measurement, record.

A run that raises is recorded as failed with its reason and the grid goes on; an interrupted
command (Ctrl-C) stops at once, leaving every record written so far intact.
"""

from __future__ import annotations

import platform
import time
import traceback
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

import bench_harness
from bench_harness.config import RunConfig, resolve_val_size
from bench_harness.data import DataRequest, TrainValTest, default_cache_dir, load_dataset, split_validation
from bench_harness.engine import EpochReport, Normaliser, ResidentSplit, Trainer, synchronise
from bench_harness.errors import UserError
from bench_harness.masks import MaskSet
from bench_harness.measure import trained_model
from bench_harness.measure.telemetry import TelemetrySampler
from bench_harness.plugins import Registries
from bench_harness.pruner import PruningContext, find_prunable_layers
from bench_harness.schedule import PruningSchedule
from bench_harness.store import SCHEMA_VERSION, ResultsStore


def resolve_device(name: str) -> torch.device:
    """``auto`` -> the GPU if there is one, else the CPU; asking for CUDA without one is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but PyTorch sees no CUDA GPU; use --device cpu or auto.")
    return torch.device(name)


def plan_runs(base: RunConfig, pruners: list[str], datasets: list[str], seeds: int, registries: Registries, skip_unsupported: bool = False) -> list[RunConfig]:
    """Every (dataset, pruner, seed) run of a command, with names checked before anything trains."""
    base.validate()
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {seeds}.")
    if not pruners:
        raise UserError("Name at least one pruner with --pruner NAME, or use --all.")
    planned = []
    for dataset in datasets:
        spec = registries.datasets.get(dataset)
        model = base.model or spec.default_model
        registries.models.get(model)
        for pruner_name in pruners:
            pruner_class = registries.pruners.get(pruner_name)
            if base.granularity not in pruner_class.granularities:
                if skip_unsupported:
                    continue
                raise UserError(
                    f"Pruner '{pruner_name}' supports {', '.join(pruner_class.granularities)} only, not --granularity {base.granularity}."
                )
            for seed in range(seeds):
                planned.append(replace(base, pruner=pruner_name, dataset=dataset, model=model, seed=seed))
    return planned


class DataCache:
    """Loads each dataset once per command and keeps its splits resident on the run device."""

    def __init__(self, registries: Registries, data_dir: Path | None, device: torch.device) -> None:
        self.registries = registries
        self.request = DataRequest(data_dir=data_dir, cache_dir=default_cache_dir())
        self.device = device
        self._resident: dict[tuple[str, int], tuple[ResidentSplit, ResidentSplit, ResidentSplit, TrainValTest]] = {}

    def get(self, dataset: str, val_size: int | None) -> tuple[ResidentSplit, ResidentSplit, ResidentSplit, TrainValTest]:
        """(train, val, test) on the device, plus the host-side splits (for shapes and statistics)."""
        key = (dataset, val_size)
        if key not in self._resident:
            loaded = load_dataset(self.registries.datasets.get(dataset), self.request)
            splits = split_validation(loaded, resolve_val_size(val_size, len(loaded.train_labels)))

            def resident(images: torch.Tensor, labels: torch.Tensor) -> ResidentSplit:
                return ResidentSplit(images.to(self.device), labels.to(self.device))

            self._resident[key] = (
                resident(splits.train_images, splits.train_labels),
                resident(splits.val_images, splits.val_labels),
                resident(splits.test_images, splits.test_labels),
                splits,
            )
        return self._resident[key]


def environment(device: torch.device) -> dict:
    """Versions and hardware a record was produced with."""
    import torchvision

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "bench_harness": bench_harness.__version__,
        "device": device.type,
        "device_name": name,
        "platform": platform.platform(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _new_record(config: RunConfig, device: torch.device) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": config.run_id(),
        "pruner": config.pruner,
        "dataset": config.dataset,
        "model": config.model,
        "seed": config.seed,
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        "status": "running",
        "error": None,
        "started_at": _now(),
        "finished_at": None,
        "metrics": {},
        "history": [],
        "telemetry": {"train": None, "inference": None},
        "environment": environment(device),
    }


def execute_run(
    config: RunConfig,
    registries: Registries,
    data: DataCache,
    on_epoch: Callable[[EpochReport], None] | None = None,
    save_models_to: Path | None = None,
) -> dict:
    """Run one configuration to completion and return its record; failures become failed records."""
    device = data.device
    record = _new_record(config, device)
    try:
        _train_and_measure(config, registries, data, record, on_epoch, save_models_to)
        record["status"] = "ok"
    except UserError:
        raise  # a mistake in the command (e.g. no data) fails every run alike: stop and say it once
    except Exception as exc:  # noqa: BLE001 - a failing run is recorded, the others go on
        record["status"] = "failed"
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()
    record["finished_at"] = _now()
    return record


def _peak_memory_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _nvml_index(device: torch.device) -> int | None:
    # NVML numbers GPUs as the driver does; with CUDA_VISIBLE_DEVICES set, CUDA's index may differ.
    return (device.index or 0) if device.type == "cuda" else None


def _train_and_measure(config: RunConfig, registries: Registries, data: DataCache, record: dict, on_epoch, save_models_to: Path | None) -> None:
    device = data.device
    train, val, test, splits = data.get(config.dataset, config.val_size)
    input_shape = tuple(splits.train_images.shape[1:])
    dataset_spec = registries.datasets.get(config.dataset)
    model_spec = registries.models.get(config.model)
    pruner_class = registries.pruners.get(config.pruner)

    torch.manual_seed(config.seed)
    model = model_spec.build(input_shape, dataset_spec.num_classes).to(device)
    layers = find_prunable_layers(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    masks = MaskSet(layers)
    context = PruningContext(model, layers, optimizer, config.seed, device, config.granularity, config.batch_size)
    pruner = pruner_class(context)
    schedule = PruningSchedule.build(config.epochs, config.prune_every, config.prune_rate, config.target_sparsity, pruner_class.prunes)
    trainer = Trainer(
        model, optimizer, layers, masks, pruner, schedule, Normaliser(splits.mean, splits.std, device),
        config.batch_size, config.seed, device, config.granularity, config.scope,
    )

    # Phase 1: training, with its own telemetry and peak-memory counter.
    _reset_peak_memory(device)
    with TelemetrySampler(_nvml_index(device), config.telemetry_period) as train_telemetry:
        outcome = trainer.fit(train, val, on_epoch)
    peak_train_mb = _peak_memory_mb(device)

    # Phase 2: inference (the test set once, then latency and throughput), measured separately.
    _reset_peak_memory(device)
    compact_metrics: dict = {}
    with TelemetrySampler(_nvml_index(device), config.telemetry_period) as inference_telemetry:
        synchronise(device)
        started = time.perf_counter()
        test_accuracy = trainer.evaluate(test)
        synchronise(device)
        inference_seconds = time.perf_counter() - started
        dense_speed = trained_model.speed(model, input_shape, device)
        compact = None
        if config.granularity == "neurons" and pruner_class.prunes:
            compact, compact_metrics = trained_model.compaction(model, masks, input_shape, device, dense_speed)
    peak_inference_mb = _peak_memory_mb(device)

    record["history"] = [
        {"epoch": r.epoch, "train_loss": r.train_loss, "val_accuracy": r.val_accuracy, "sparsity": r.sparsity, "pruned": r.pruned}
        for r in outcome.history
    ]
    record["schedule"] = {"event_epochs": list(schedule.event_epochs), "rate": schedule.rate}
    record["metrics"] = {
        "test_accuracy": test_accuracy,
        "val_accuracy": outcome.history[-1].val_accuracy,
        "train_images": len(train),
        "val_images": len(val),
        "test_images": len(test),
        **trained_model.size_and_work(model, masks, input_shape),
        "sparsity": masks.sparsity(),
        "alive_units": masks.alive_unit_counts(),
        "train_seconds": outcome.train_seconds,
        "prune_seconds": outcome.prune_seconds,
        "inference_seconds": inference_seconds,
        **dense_speed,
        "peak_memory_mb": peak_train_mb,
        "inference_peak_memory_mb": peak_inference_mb,
        "train_energy_joules": train_telemetry.energy_joules,
        "inference_energy_joules": inference_telemetry.energy_joules,
        **compact_metrics,
    }
    record["telemetry"] = {"train": train_telemetry.summary(), "inference": inference_telemetry.summary()}
    if save_models_to is not None:
        # Neuron pruning saves the physically smaller model; connection pruning the masked one.
        path = save_models_to / f"{config.run_id()}.pt"
        trained_model.save_model(compact if compact is not None else model, path)
        record["model_file"] = str(path)


@dataclass
class GridSummary:
    """What a ``bench run`` command did."""

    completed: int = 0
    skipped: int = 0
    failed: list[str] | None = None


def run_grid(
    configs: list[RunConfig],
    registries: Registries,
    store: ResultsStore,
    data_dir: Path | None,
    force: bool = False,
    save_models: bool = False,
    on_run_start: Callable[[int, RunConfig], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    on_run_end: Callable[[int, RunConfig, dict | None], None] | None = None,
) -> GridSummary:
    """Execute every planned run, skipping complete ones unless ``force``; each record is stored at once."""
    summary = GridSummary(failed=[])
    if not configs:
        return summary
    device = resolve_device(configs[0].device)
    data = DataCache(registries, data_dir, device)
    for index, config in enumerate(configs):
        if not force and store.is_complete(config):
            summary.skipped += 1
            if on_run_end:
                on_run_end(index, config, None)
            continue
        if on_run_start:
            on_run_start(index, config)
        record = execute_run(config, registries, data, on_epoch, store.models_dir if save_models else None)
        store.write(config, record)
        if record["status"] == "ok":
            summary.completed += 1
        else:
            summary.failed.append(f"{config.run_id()}: {record['error']}")
        if on_run_end:
            on_run_end(index, config, record)
    return summary
