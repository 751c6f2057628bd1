"""Plans the grid of runs and executes each one: data, model, pruner, training, measurement, record.

A run that raises is recorded as failed with its reason and the grid goes on; an interrupted
command (Ctrl-C) stops at once, leaving every record written so far intact.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from bench_harness import record as records
from bench_harness.augment import RandomCropFlip
from bench_harness.config import RunConfig, resolve_val_size
from bench_harness.data import DataRequest, TrainValTest, default_cache_dir, load_dataset, split_validation
from bench_harness.engine import EpochReport, Normaliser, ResidentSplit, Trainer, TrainingOutcome, fit_together, make_optimizer, synchronise
from bench_harness.errors import UserError
from bench_harness.masks import MaskSet
from bench_harness.measure import trained_model
from bench_harness.measure.telemetry import TelemetrySampler, nvml_index
from bench_harness.plugins import Registries
from bench_harness.pruner import PruningContext, find_prunable_layers
from bench_harness.schedule import PruningSchedule
from bench_harness.store import ResultsStore


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
        val_size = base.val_size
        if val_size is not None and spec.train_images is not None and val_size == resolve_val_size(None, spec.train_images):
            val_size = None  # the default, spelt out: the same runs as leaving it unset
        for pruner_name in pruners:
            pruner_class = registries.pruners.get(pruner_name)
            if base.granularity not in pruner_class.granularities:
                if skip_unsupported:
                    continue
                raise UserError(
                    f"Pruner '{pruner_name}' supports {', '.join(pruner_class.granularities)} only, not --granularity {base.granularity}."
                )
            config = replace(base, pruner=pruner_name, dataset=dataset, model=model, val_size=val_size)
            if not pruner_class.prunes:
                config = config.as_dense_reference()
            else:
                if not pruner_class.regrows():
                    config = config.without_regrowth()  # the same computation whatever they are: one hash
                if not PruningSchedule.for_run(config).event_epochs:
                    raise UserError(
                        f"--prune-every {config.prune_every} with --epochs {config.epochs} leaves no pruning event "
                        f"(events follow every N-th epoch from --prune-start, never the last); lower --prune-every or raise --epochs."
                    )
            planned.extend(replace(config, seed=seed) for seed in range(seeds))
    if not planned:
        raise UserError(f"No registered pruner supports --granularity {base.granularity}; see `bench list`.")
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


MAX_CONCURRENCY = 32
"""PyTorch hands out at most 32 distinct streams per device; more runs would share streams and stop overlapping."""


def default_concurrency(device: torch.device) -> int:
    """Runs trained at once: five on a GPU (PROTOCOL.md §3: five interleaved graphs keep an H100 busy
    at a small fraction of its memory), one on the CPU, where interleaving gains nothing."""
    return 5 if device.type == "cuda" else 1


@dataclass
class PreparedRun:
    """One run, built and ready to train: its model, optimizer, masks, pruner and trainer."""

    config: RunConfig
    record: dict
    trainer: Trainer
    input_shape: tuple[int, int, int]
    prunes: bool


def prepare_run(config: RunConfig, registries: Registries, data: DataCache, use_cuda_graph: bool) -> PreparedRun:
    """Build everything a run needs, seeded so the same config always starts from the same point."""
    device = data.device
    pruner_class = registries.pruners.get(config.pruner)
    record = records.for_run(config, registries, device)
    _, _, _, splits = data.get(config.dataset, config.val_size)
    input_shape = tuple(splits.train_images.shape[1:])
    dataset_spec = registries.datasets.get(config.dataset)
    model_spec = registries.models.get(config.model)

    torch.manual_seed(config.seed)
    model = model_spec.build(input_shape, dataset_spec.num_classes).to(device)
    layers = find_prunable_layers(model)
    optimizer = make_optimizer(model, config.lr, device)
    masks = MaskSet(layers)
    context = PruningContext(model, layers, optimizer, config.seed, device, config.granularity, config.batch_size)
    pruner = pruner_class(context)
    schedule = PruningSchedule.for_run(config, pruner_class.prunes, pruner_class.regrows())
    trainer = Trainer(
        model, optimizer, layers, masks, pruner, schedule, Normaliser(splits.mean, splits.std, device),
        config.batch_size, config.seed, device, config.granularity, config.scope, use_cuda_graph=use_cuda_graph,
        augmenter=RandomCropFlip(config.seed, device) if config.augment else None,
    )
    record["schedule"] = schedule.describe()
    return PreparedRun(config, record, trainer, input_shape, pruner_class.prunes)


def _peak_memory_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def measure_run(run: PreparedRun, outcome: TrainingOutcome, test: ResidentSplit, save_models_to: Path | None) -> None:
    """Inference-phase measurements of one trained run, written into its record."""
    trainer, config, record = run.trainer, run.config, run.record
    model, masks, device = trainer.model, trainer.masks, trainer.device
    _reset_peak_memory(device)
    compact, compact_metrics = None, {}
    with TelemetrySampler(nvml_index(device), config.telemetry_period) as inference_telemetry:
        synchronise(device)
        started = time.perf_counter()
        test_evaluation = trainer.evaluate(test)
        synchronise(device)
        inference_seconds = time.perf_counter() - started
        dense_speed = trained_model.speed(model, run.input_shape, device)
        if config.granularity == "neurons" and run.prunes:
            compact, compact_metrics = trained_model.compaction(model, masks, run.input_shape, device, dense_speed)
    records.add_training(record, outcome.history)
    record["metrics"].update({
        "test_accuracy": test_evaluation.accuracy,
        "test_loss": test_evaluation.loss,
        "val_accuracy": outcome.history[-1].val_accuracy,
        **trained_model.size_and_work(model, masks, run.input_shape),
        "sparsity": masks.sparsity(),
        "alive_units": masks.alive_unit_counts(),
        "train_seconds": outcome.train_seconds,
        "prune_seconds": outcome.prune_seconds,
        "inference_seconds": inference_seconds,
        **dense_speed,
        "inference_peak_memory_mb": _peak_memory_mb(device),
        "inference_energy_joules": inference_telemetry.energy_joules,
        **compact_metrics,
    })
    record["telemetry"]["inference"] = inference_telemetry.summary()
    if save_models_to is not None:
        # Neuron pruning saves the physically smaller model; connection pruning the masked one.
        path = save_models_to / f"{config.run_id()}.pt"
        trained_model.save_model(compact if compact is not None else model, path)
        record["model_file"] = str(path)


def execute_group(
    configs: list[RunConfig],
    registries: Registries,
    data: DataCache,
    on_epoch: Callable[[EpochReport], None] | None = None,
    save_models_to: Path | None = None,
    use_cuda_graph: bool = True,
) -> list[dict]:
    """Train runs that share a dataset together (interleaved on one device) and measure each.

    Returns one record per config, in order; a run that fails at any stage gets a failed record and
    the others go on. Training telemetry and peak memory describe the whole group, which shares the
    device: ``concurrent_runs`` in each record says how many runs that was, and the training energy
    is split evenly between them.
    """
    device = data.device
    results: list[dict | None] = [None] * len(configs)
    prepared: list[tuple[int, PreparedRun]] = []
    for position, config in enumerate(configs):
        try:
            prepared.append((position, prepare_run(config, registries, data, use_cuda_graph)))
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing run is recorded, the others go on
            results[position] = records.mark_failed(records.for_run(config, registries, device), exc)
    if prepared:
        train, val, test, _ = data.get(configs[0].dataset, configs[0].val_size)
        callbacks = [on_epoch if index == 0 else None for index in range(len(prepared))]
        _reset_peak_memory(device)
        with TelemetrySampler(nvml_index(device), configs[0].telemetry_period) as train_telemetry:
            outcomes = fit_together([run.trainer for _, run in prepared], train, val, callbacks)
        peak_train_mb = _peak_memory_mb(device)
        energy = train_telemetry.energy_joules
        summary = train_telemetry.summary()  # one measurement of the whole group, shared by its runs
        for (position, run), outcome in zip(prepared, outcomes):
            record = run.record
            record["metrics"].update({
                "train_images": len(train), "val_images": len(val), "test_images": len(test),
                "concurrent_runs": len(prepared), "engine": run.trainer.engine, "graph_error": run.trainer.graph_error,
                "capture_seconds": run.trainer.capture_seconds,
                "peak_memory_mb": peak_train_mb,
                "train_energy_joules": None if energy is None else energy / len(prepared),
            })
            record["telemetry"]["train"] = None if summary is None else {**summary, "concurrent_runs": len(prepared)}
            try:
                if outcome.error is not None:
                    raise outcome.error
                measure_run(run, outcome, test, save_models_to)
                records.mark_ok(record)
            except Exception as exc:  # noqa: BLE001
                records.mark_failed(record, exc)
            results[position] = record
        for _, run in prepared:
            run.trainer.release_graph()
        prepared.clear()
        gc.collect()  # free the group's models, optimizer state and graph pools before the next group
    return results


def _shares_data_schedule(first: RunConfig, second: RunConfig) -> bool:
    keys = ("dataset", "model", "epochs", "batch_size", "val_size")
    return all(getattr(first, key) == getattr(second, key) for key in keys)


def group_runs(configs: list[RunConfig], concurrency: int) -> list[list[RunConfig]]:
    """Consecutive runs that can train together: same dataset, model and data schedule, at most N."""
    groups: list[list[RunConfig]] = []
    for config in configs:
        last = groups[-1] if groups else None
        if last and len(last) < concurrency and _shares_data_schedule(last[0], config):
            last.append(config)
        else:
            groups.append([config])
    return groups


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
    concurrency: int | None = None,
    use_cuda_graph: bool = True,
) -> GridSummary:
    """Execute every planned run, skipping complete ones unless ``force``; each record is stored at once."""
    summary = GridSummary(failed=[])
    if not configs:
        return summary
    device = resolve_device(configs[0].device)
    if concurrency is not None and not 1 <= concurrency <= MAX_CONCURRENCY:
        raise UserError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}, got {concurrency}.")
    data = DataCache(registries, data_dir, device)
    pending = []
    for index, config in enumerate(configs):
        if not force and store.is_complete(config, records.plugin_provenance(registries, config)):
            summary.skipped += 1
            if on_run_end:
                on_run_end(index, config, None)
        else:
            pending.append((index, config))
    position = {id(config): index for index, config in pending}
    for group in group_runs([config for _, config in pending], concurrency or default_concurrency(device)):
        if on_run_start:
            on_run_start(position[id(group[0])], group[0], len(group))
        for config, record in zip(group, execute_group(group, registries, data, on_epoch, store.models_dir if save_models else None, use_cuda_graph)):
            try:
                store.write(config, record)
            except ValueError as exc:  # e.g. a non-finite number a plugin put in the record
                store.write(config, records.mark_failed(records.for_run(config, registries, data.device), exc))
                record = store.read(store.path_for(config))
            if record["status"] == "ok":
                summary.completed += 1
            else:
                summary.failed.append(f"{config.run_id()}: {record['error']}")
            if on_run_end:
                on_run_end(position[id(config)], config, record)
    return summary
