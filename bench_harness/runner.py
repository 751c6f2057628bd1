"""Plans the grid of runs and executes each one: data, model, pruner, training, measurement, record.

A run that raises (plugin code included, ``sys.exit`` too) is recorded as failed with its reason
and the grid goes on. Each record is written the moment its run ends; until then the run's
checkpoint, replaced every ``--checkpoint-every`` epochs, lets a rerun continue where it stopped.
An interrupted command (Ctrl-C, a kill) loses at most the epochs since each run's last checkpoint;
a full disk or a failing GPU stops the grid with every record written so far intact. With an
executor (``--executor ray``, ``bench_harness.cluster``) the groups train elsewhere, by this same
code, and their records are still written here.
"""

from __future__ import annotations

import gc
import time
import warnings
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Protocol

import torch

from bench_harness import checkpoint
from bench_harness import record as records
from bench_harness.augment import RandomCropFlip
from bench_harness.config import CHECKPOINT_BUDGET, RunConfig, resolve_val_size
from bench_harness.data import DataRequest, TrainValTest, default_cache_dir, load_dataset, split_validation
from bench_harness.engine import EpochReport, Normaliser, ResidentSplit, Trainer, TrainingOutcome, fit_together, make_optimizer, synchronise
from bench_harness.errors import CONTAINED, STOPS_THE_GRID, StoreError, UserError
from bench_harness.watch import WeightWatch
from bench_harness.masks import MaskSet
from bench_harness.measure import trained_model
from bench_harness.measure.telemetry import TelemetrySampler, nvml_index
from bench_harness.plugins import Registries
from bench_harness.pruner import PruningContext, find_prunable_layers
from bench_harness.schedule import PruningSchedule
from bench_harness.store import Claim, ResultsStore, probe_writable


class Checkpoints(Protocol):
    """Where a group's checkpoints are read and written: the results store, or (on a Ray worker)
    the checkpoints shipped with the group and back to the driver (``bench_harness.cluster``)."""

    def checkpoint_path(self, config: RunConfig) -> Path: ...

    def read_checkpoint(self, config: RunConfig) -> bytes | None: ...

    def write_checkpoint(self, config: RunConfig, data: bytes) -> None: ...

    def remove_checkpoint(self, config: RunConfig) -> None: ...


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
        # The dense reference first: a pruned run's record can then be compared with it when written.
        for pruner_name in sorted(pruners, key=lambda name: registries.pruners.get(name).prunes):
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
    """Runs trained at once: five on a GPU (five interleaved graphs are expected to keep an
    H100 busy at a small fraction of its memory; the GPU check measures it), one on the CPU, where interleaving gains nothing."""
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
    watch = WeightWatch(model)
    with watch.guard("__init__"):
        pruner = pruner_class(context)
    schedule = PruningSchedule.for_run(config, pruner_class.prunes, pruner_class.regrows())
    trainer = Trainer(
        model, optimizer, layers, masks, pruner, schedule, Normaliser(splits.mean, splits.std, device),
        config.batch_size, config.seed, device, config.granularity, config.scope, use_cuda_graph=use_cuda_graph,
        augmenter=RandomCropFlip(config.seed, device) if config.augment else None, watch=watch,
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


def dense_references(registries: Registries, config: RunConfig) -> list[RunConfig]:
    """The dense reference runs (one per registered dense pruner) a pruning run of ``config``'s
    table and seed is compared with; none for a dense run itself."""
    if not registries.pruners.get(config.pruner).prunes:
        return []
    return [replace(config, pruner=name).as_dense_reference() for name in registries.pruners.names()
            if not registries.pruners.get(name).prunes]


def dense_accuracy(store: ResultsStore, registries: Registries, config: RunConfig) -> float | None:
    """The test accuracy of the dense reference of ``config``'s table and seed, if it is recorded."""
    for reference in dense_references(registries, config):
        path = store.path_for(reference)
        record = store.read(path) if path.is_file() else None
        metrics = record.get("metrics") if record else None
        accuracy = metrics.get("test_accuracy") if isinstance(metrics, dict) else None
        if record and record.get("status") == "ok" and isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool):
            return float(accuracy)
    return None


def checkpoint_identity(run: PreparedRun) -> dict:
    """What a checkpoint must match to be resumed: the run, its exact config and its plugins."""
    return {"run_id": run.config.run_id(), "config_hash": run.config.config_hash(), "plugins": run.record["plugins"],
            "started_at": run.record["started_at"], "resumed_from_epochs": list(run.record["resumed_from_epochs"])}


def _resume(run: PreparedRun, store: Checkpoints) -> None:
    """Restore a prepared run from its checkpoint, if it has a usable one (else leave it fresh).

    Raises what the restore raised (the pruner's ``load_state_dict`` is plugin code); the caller
    then builds the run afresh, since a half-restored run is neither the old one nor a new one.
    """
    data = store.read_checkpoint(run.config)
    if data is None:
        return
    try:
        state, saved = checkpoint.loads(data, checkpoint_identity(run))
    except ValueError as exc:
        warnings.warn(f"Ignoring checkpoint {store.checkpoint_path(run.config)}: {exc}; the run starts over.", stacklevel=2)
        store.remove_checkpoint(run.config)
        return
    run.trainer.load_state_dict(state)
    records.note_resumed(run.record, run.trainer.epochs_done, saved.get("started_at"), saved.get("resumed_from_epochs") or [])


def execute_group(
    configs: list[RunConfig],
    registries: Registries,
    data: DataCache,
    on_epoch: Callable[[EpochReport], None] | None = None,
    save_models_to: Path | None = None,
    use_cuda_graph: bool = True,
    store: ResultsStore | None = None,
    checkpoint_every: int | None = 0,
    on_record: Callable[[int, dict], None] | None = None,
    checkpoints: Checkpoints | None = None,
    on_run_epoch: Callable[[int, EpochReport], None] | None = None,
    on_group_epoch: Callable[[int], None] | None = None,
) -> list[dict]:
    """Train runs that share a dataset together (interleaved on one device) and measure each.

    Returns one record per config, in order, and hands each to ``on_record(position, record)`` the
    moment its run ends (so it is stored then, not when the group ends). A run that fails at any
    stage, in plugin code or not, ``sys.exit`` included, gets a failed record and the others go on.
    With a ``store`` (or other ``checkpoints``: a Ray worker ships them to the driver), a run with a
    checkpoint continues from it, and every ``checkpoint_every``-th epoch (0: never; None: as often
    as :data:`~bench_harness.config.CHECKPOINT_BUDGET` allows) a run's checkpoint is replaced; the
    ``store`` also holds the dense reference a finished run is flagged against. ``on_epoch`` hears
    the first run's epochs, ``on_run_epoch(position, report)`` every run's, ``on_group_epoch(epoch)``
    the end of each of the group's epochs. Training telemetry and peak memory describe the
    whole group, which shares the device: ``concurrent_runs`` in each record says how many runs that
    was, and the training energy is split evenly between them (none for a resumed run, whose earlier
    epochs were not measured).
    """
    device = data.device
    results: list[dict | None] = [None] * len(configs)
    checkpoints = store if checkpoints is None else checkpoints

    def finished(position: int, record: dict) -> None:
        results[position] = record
        if on_record is not None:
            on_record(position, record)

    def prepared_or_failed(config: RunConfig) -> PreparedRun | None:
        try:
            return prepare_run(config, registries, data, use_cuda_graph)
        except UserError:
            raise
        except CONTAINED as exc:  # a failing run is recorded, the others go on
            finished(configs.index(config), records.mark_failed(records.for_run(config, registries, device), exc))
            return None

    prepared: list[tuple[int, PreparedRun]] = []
    for position, config in enumerate(configs):
        run = prepared_or_failed(config)
        if run is not None and checkpoints is not None:
            try:
                _resume(run, checkpoints)
            except STOPS_THE_GRID:
                raise
            except CONTAINED as exc:
                reason, _ = records.failure_reason(exc, run.record["plugins"])
                warnings.warn(f"Could not resume {config.run_id()} from its checkpoint ({reason}); the run starts over.", stacklevel=2)
                checkpoints.remove_checkpoint(config)
                run = prepared_or_failed(config)
        if run is not None:
            prepared.append((position, run))
    if not prepared:
        return results

    train, val, test, _ = data.get(configs[0].dataset, configs[0].val_size)
    chance = float(torch.bincount(test.labels).max()) / len(test)
    trainers = [run.trainer for _, run in prepared]

    def reporter(index: int, position: int) -> Callable[[EpochReport], None] | None:
        first = on_epoch if index == 0 else None
        if on_run_epoch is None:
            return first

        def report(epoch_report: EpochReport) -> None:
            on_run_epoch(position, epoch_report)
            if first is not None:
                first(epoch_report)

        return report

    callbacks = [reporter(index, position) for index, (position, _) in enumerate(prepared)]
    _reset_peak_memory(device)
    train_telemetry = TelemetrySampler(nvml_index(device), configs[0].telemetry_period)
    group: dict = {}

    def group_measurements() -> dict:
        # Training is over for the whole group (its runs end together): one measurement shared by all.
        if not group:
            train_telemetry.stop()
            group.update(peak=_peak_memory_mb(device), energy=train_telemetry.energy_joules, summary=train_telemetry.summary())
        return group

    uncheckpointed: set[int] = set()
    last_written: dict[int, tuple[float, float]] = {}  # index -> (when the last checkpoint ended, what it cost)

    def due(index: int) -> bool:
        if checkpoint_every is not None:
            return bool(checkpoint_every) and prepared[index][1].trainer.epochs_done % checkpoint_every == 0
        if index not in last_written:
            return True  # the first one also measures what a checkpoint costs here
        ended, cost = last_written[index]
        return time.perf_counter() - ended >= cost * len(prepared) / CHECKPOINT_BUDGET

    def after_epoch(index: int) -> None:
        _, run = prepared[index]
        if checkpoints is None or index in uncheckpointed or not due(index):
            return
        started = time.perf_counter()
        try:
            data = checkpoint.dumps(run.trainer.state_dict(), checkpoint_identity(run))
        except STOPS_THE_GRID:
            raise
        except CONTAINED as exc:  # the pruner's state_dict() is plugin code: the run trains on, unprotected
            uncheckpointed.add(index)
            reason, _ = records.failure_reason(exc, run.record["plugins"])
            warnings.warn(f"Could not checkpoint {run.config.run_id()} ({reason}); it trains on without checkpoints.", stacklevel=2)
            return
        checkpoints.write_checkpoint(run.config, data)
        last_written[index] = (time.perf_counter(), time.perf_counter() - started)

    def on_done(index: int) -> None:
        position, run = prepared[index]
        record, trainer = run.record, run.trainer
        record["metrics"].update({
            "train_images": len(train), "val_images": len(val), "test_images": len(test), "chance_accuracy": chance,
            "concurrent_runs": len(prepared), "engine": trainer.engine, "graph_error": trainer.graph_error,
            "capture_seconds": trainer.capture_seconds,
        })
        try:
            if trainer.outcome.error is not None:
                raise trainer.outcome.error
            shared = group_measurements()
            resumed = bool(record["resumed_from_epochs"])
            record["metrics"].update({
                "peak_memory_mb": shared["peak"],
                "train_energy_joules": None if shared["energy"] is None or resumed else shared["energy"] / len(prepared),
            })
            summary = shared["summary"]
            record["telemetry"]["train"] = None if summary is None else {
                **summary, "concurrent_runs": len(prepared), "from_epoch": (record["resumed_from_epochs"] or [0])[-1] + 1}
            measure_run(run, trainer.outcome, test, save_models_to)
            records.add_flags(record, dense_accuracy(store, registries, run.config) if store is not None else None,
                              trainer.watch.describe())
            records.mark_ok(record)
        except STOPS_THE_GRID:
            raise
        except CONTAINED as exc:
            records.mark_failed(record, exc)
        trainer.release_graph()
        finished(position, record)

    train_telemetry.start()
    try:
        fit_together(trainers, train, val, callbacks, after_epoch=after_epoch, on_done=on_done, on_epoch_end=on_group_epoch)
    finally:
        train_telemetry.stop()
        for trainer in trainers:
            trainer.release_graph()
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
    elsewhere: list[str] = field(default_factory=list)
    """Runs left to another live ``bench run`` on the same folder (their claim was held)."""
    resumed: int = 0
    """Runs that continued from a checkpoint."""
    kept_success: list[str] = field(default_factory=list)
    """Failed runs whose earlier ``ok`` record was kept (the failure went to ``failures/``)."""
    cleaned: int = 0
    """Temporary files of interrupted commands removed at the start."""


def preflight(store: ResultsStore, save_models: bool, checkpoint_every: int | None) -> int:
    """Before anything trains: every folder the grid writes into takes a file (a probe is written,
    flushed and removed, so a full disk shows too), and what interrupted commands left behind is
    removed. Returns how many temporary files were removed."""
    if store.root.exists() and not store.root.is_dir():
        raise StoreError(f"Could not write into the results folder {store.root}: it is a file, not a folder; choose a folder with --results.")
    probe_writable(store.runs_dir, "the results folder")
    probe_writable(store.claims_dir, "the results folder")
    if checkpoint_every != 0:
        probe_writable(store.checkpoints_dir, "the checkpoint folder")
    if save_models:
        probe_writable(store.models_dir, "the --save-models folder")
    return len(store.clean_orphans())


@dataclass
class PendingGroups:
    """The part of a grid an executor other than the local loop needs (``bench_harness.cluster``):
    the next group of claimed runs, and the one way a finished run's record is stored."""

    next_group: Callable[[], list[RunConfig]]
    """The next group to train, its runs claimed and not complete; [] when none is left."""
    stored: Callable[[RunConfig, dict], None]
    """Store a run's record (atomically, via the store), release its claim and tell the display."""
    store: ResultsStore
    registries: Registries
    data_dir: Path | None
    provenance: dict[str, dict]
    save_models: bool
    use_cuda_graph: bool
    checkpoint_every: int | None


class Executor(Protocol):
    """Trains a grid's groups somewhere else than in this process (``--executor ray``)."""

    def default_concurrency(self, device_name: str) -> int:
        """Runs per group when ``--concurrency`` is not given (may refuse a device it cannot offer)."""

    def run(self, pending: PendingGroups) -> None:
        """Train every group ``pending.next_group`` hands out and store each record through ``pending.stored``."""


def run_grid(
    configs: list[RunConfig],
    registries: Registries,
    store: ResultsStore,
    data_dir: Path | None,
    force: bool = False,
    save_models: bool = False,
    on_run_start: Callable[[int, RunConfig], None] | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    on_run_end: Callable[[int, RunConfig, dict | None, str], None] | None = None,
    concurrency: int | None = None,
    use_cuda_graph: bool = True,
    checkpoint_every: int | None = None,
    executor: Executor | None = None,
) -> GridSummary:
    """Execute every planned run, skipping complete ones unless ``force``; each record is stored the
    moment its run ends.

    Before any training: the settings, the folders written into (:func:`preflight`) and every
    dataset the pending runs need are checked, so a mistake costs a second, not a trained run. A run
    is trained only under its claim (``ResultsStore.claim``): another ``bench run`` on the same
    folder trains the runs it has not claimed, and neither trains a run twice. ``on_run_end`` gets
    the record, or None and why the run was not trained here. With an ``executor`` (Ray), the same
    groups are trained by it instead of in this process; everything else here is the same (this
    process checks the data on its CPU, claims the runs and writes every record).
    """
    summary = GridSummary(failed=[])
    if not configs:
        return summary
    device = resolve_device(configs[0].device) if executor is None else torch.device("cpu")
    if concurrency is not None and not 1 <= concurrency <= MAX_CONCURRENCY:
        raise UserError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}, got {concurrency}.")
    if checkpoint_every is not None and checkpoint_every < 0:
        raise UserError(f"--checkpoint-every must be 0 (never) or a number of epochs, got {checkpoint_every}.")
    width = concurrency or (default_concurrency(device) if executor is None else executor.default_concurrency(configs[0].device))
    summary.cleaned = preflight(store, save_models, checkpoint_every)
    started = records.now()
    data = DataCache(registries, data_dir, device)
    provenance = {config.run_id(): records.plugin_provenance(registries, config) for config in configs}

    def skipped(index: int, config: RunConfig, why: str) -> None:
        if on_run_end:
            on_run_end(index, config, None, why)

    pending = []
    for index, config in enumerate(configs):
        if not force and store.is_complete(config, provenance[config.run_id()]):
            summary.skipped += 1
            skipped(index, config, "already complete")
            if store.checkpoint_path(config).exists():  # killed between writing the record and removing it
                claim = store.claim(config)
                if claim is not None:
                    store.remove_checkpoint(config)
                    claim.release()
        else:
            path = store.path_for(config)
            if path.is_dir():
                raise UserError(f"{path} is a folder where the run's record belongs; move it away and run the command again.")
            pending.append((index, config))
    for key in dict.fromkeys((config.dataset, config.val_size) for _, config in pending):
        data.get(*key)  # a missing or damaged dataset is found now, not after other runs trained

    queue = deque(pending)
    claims: dict[str, Claim] = {}
    positions: dict[str, int] = {}

    def stored(config: RunConfig, record: dict) -> None:
        try:
            path = store.write(config, record)
        except ValueError as exc:  # e.g. a non-finite number a plugin put in the record
            record = records.mark_failed(records.for_run(config, registries, data.device), exc)
            path = store.write(config, record)
        store.remove_checkpoint(config)
        claims.pop(config.run_id()).release()
        if record["status"] == "ok":
            summary.completed += 1
        else:
            summary.failed.append(f"{config.run_id()}: {record['error']}")
            if path != store.path_for(config):
                summary.kept_success.append(f"{config.run_id()} (this failure is in {path})")
        if record["resumed_from_epochs"]:
            summary.resumed += 1
        if on_run_end:
            on_run_end(positions[config.run_id()], config, record, "")

    def next_group() -> list[RunConfig]:
        while queue:
            group = []
            while queue and len(group) < width:
                index, config = queue[0]
                if group and not _shares_data_schedule(group[0], config):
                    break
                queue.popleft()
                claim = store.claim(config)
                if claim is None:
                    summary.elsewhere.append(f"{config.run_id()} ({store.holder(config)})")
                    skipped(index, config, f"being trained by {store.holder(config)}")
                    continue
                if store.is_complete(config, provenance[config.run_id()], finished_after=started if force else None):
                    claim.release()  # its previous owner finished it while we waited our turn
                    store.remove_checkpoint(config)
                    summary.skipped += 1
                    skipped(index, config, "already complete")
                    continue
                claims[config.run_id()] = claim
                positions[config.run_id()] = index
                if force:
                    store.remove_checkpoint(config)  # --force trains from scratch
                group.append(config)
            if group:
                return group
        return []

    try:
        if executor is not None:
            executor.run(PendingGroups(next_group, stored, store, registries, data_dir, provenance, save_models,
                                       use_cuda_graph, checkpoint_every))
            return summary
        while group := next_group():
            if on_run_start:
                on_run_start(positions[group[0].run_id()], group[0], len(group))
            execute_group(
                group, registries, data, on_epoch, store.models_dir if save_models else None, use_cuda_graph,
                store=store, checkpoint_every=checkpoint_every,
                on_record=lambda position, record, group=group: stored(group[position], record),
            )
    finally:
        for claim in claims.values():
            claim.release()
    return summary
