"""Speed benchmark: a textbook PyTorch training loop against the harness's training engine.

Both loops run side by side in this one process, on one device, on the same synthetic data, with the
same models, seeds, batch size and optimizer, so their seconds per epoch and accuracies compare
directly. This script is where the harness's performance claims are measured; the unit tests only
check behaviour.

The pixels are synthetic (class-dependent patterns plus noise) with exactly the shapes and sizes of
MNIST and CIFAR-10, so no download is needed and the figures depend only on the hardware and code.

    python benchmarks/speed.py --help
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from bench_harness.cli import PROTOCOL_SEEDS
from bench_harness.config import RunConfig, resolve_val_size
from bench_harness.data import DatasetSpec, ImageSplits
from bench_harness.engine import ResidentSplit, fit_together, synchronise
from bench_harness.hookspecs import hookimpl
from bench_harness.plugins import registered_plugin, registries
from bench_harness.pruner import layer_parameters
from bench_harness.runner import DataCache, default_concurrency, plan_runs, prepare_run, resolve_device, run_grid
from bench_harness.schedule import PruningSchedule
from bench_harness.store import ResultsStore

from benchmark_env import default_output, describe_environment, model_list, progress, publish, table

PROTOCOL = RunConfig()
"""The seed protocol's settings (batch 64, Adam lr 1e-3, 50 epochs, pruning every 5th epoch)."""

PROTOCOL_EVENTS = len(PruningSchedule.build(PROTOCOL.epochs, PROTOCOL.prune_every, PROTOCOL.prune_rate).event_epochs)
"""Pruning events per run of the seed protocol (9)."""

BUILTIN_PRUNERS = ("none",) + tuple(name for name in registries().pruners.names() if name != "none")
"""Every registered pruner, as ``bench run --all`` runs them; ``none`` (the dense baseline) first.
The default of ``--pruners``."""

OVERHEAD_TARGET_PERCENT = 5.0
"""The project's target: pruning bookkeeping should cost under 5% of a run's training time."""

TEXTBOOK_EVAL_BATCH_SIZE = 1000
"""The test loader's batch size in the textbook loop (a common choice in tutorials)."""

STEPS_BEFORE_EVENT = 20
"""Observed training steps before each timed pruning event, so the pruner's statistics are real ones
(see ``steps_before_event``; a pruner that observes nothing trains this many steps)."""

DATA_SEED = 1234
"""Seed of the synthetic pixels: fixed, so every run of this script sees the same images."""

NUM_CLASSES = 10

MAX_BLEND = 0.55
"""Largest share of another class's pattern blended into an image (above 0.5 the image looks like the other class)."""

NOISE_STD = 0.45
"""Standard deviation of the Gaussian pixel noise, on the [0, 1] scale."""

@dataclass(frozen=True)
class Workload:
    """One model of the seed protocol and the real dataset whose shape its synthetic data copies."""

    model: str
    dataset: str
    """The temporary dataset name this script registers for it."""
    looks_like: str
    input_shape: tuple[int, int, int]
    train_images: int
    test_images: int


WORKLOADS = {
    "fcnn": Workload("fcnn", "speed-synthetic-mnist", "MNIST", (1, 28, 28), 60_000, 10_000),
    "cnn": Workload("cnn", "speed-synthetic-cifar10", "CIFAR-10", (3, 32, 32), 50_000, 10_000),
}


# --- synthetic data ------------------------------------------------------------------------------


def class_patterns(shape: tuple[int, int, int], margin_pixels: int, generator: torch.Generator) -> torch.Tensor:
    """One smooth random pattern per class in [0, 1], ``margin_pixels`` larger on each side for shifting."""
    channels, height, width = shape
    coarse = torch.rand(NUM_CLASSES, channels, 6, 6, generator=generator)
    size = (height + 2 * margin_pixels, width + 2 * margin_pixels)
    patterns = F.interpolate(coarse, size=size, mode="bicubic", align_corners=False)
    low = patterns.amin(dim=(1, 2, 3), keepdim=True)
    high = patterns.amax(dim=(1, 2, 3), keepdim=True)
    return (patterns - low) / (high - low)


def draw_images(count: int, patterns: torch.Tensor, margin_pixels: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` uint8 images: a class's pattern blended with another class's, shifted, scaled, noised.

    Blending in up to ``MAX_BLEND`` of a random other class makes some images genuinely ambiguous, so
    accuracy levels off short of 100% (around 90%) instead of saturating, and the two loops'
    accuracies can differ visibly; the shifts and the noise make the models work for it.
    """
    channels, padded_height, padded_width = patterns.shape[1:]
    height, width = padded_height - 2 * margin_pixels, padded_width - 2 * margin_pixels
    images = torch.empty((count, channels, height, width), dtype=torch.uint8)
    labels = torch.randint(0, NUM_CLASSES, (count,), generator=generator)
    chunk = 5000  # bounds the float32 working copy (CIFAR-sized: 60 MB per chunk instead of 600 MB)
    for start in range(0, count, chunk):
        part = labels[start : start + chunk]
        n = part.shape[0]
        other = torch.randint(0, NUM_CLASSES, (n,), generator=generator)
        blend = MAX_BLEND * torch.rand((n, 1, 1, 1), generator=generator)
        mixed = (1.0 - blend) * patterns[part] + blend * patterns[other]
        rows = torch.randint(0, 2 * margin_pixels + 1, (n, 1), generator=generator) + torch.arange(height)
        cols = torch.randint(0, 2 * margin_pixels + 1, (n, 1), generator=generator) + torch.arange(width)
        shifted = mixed[torch.arange(n)[:, None, None, None], torch.arange(channels)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]
        gain = 0.5 + torch.rand((n, 1, 1, 1), generator=generator)
        noisy = shifted * gain + NOISE_STD * torch.randn(shifted.shape, generator=generator)
        images[start : start + n] = (noisy.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return images, labels


def synthetic_splits(shape: tuple[int, int, int], train_images: int, test_images: int) -> ImageSplits:
    """Synthetic train and test splits of the given image shape (labels 0..9), always the same ones."""
    generator = torch.Generator().manual_seed(DATA_SEED)
    margin_pixels = 3
    patterns = class_patterns(shape, margin_pixels, generator)
    train = draw_images(train_images, patterns, margin_pixels, generator)
    test = draw_images(test_images, patterns, margin_pixels, generator)
    return ImageSplits.from_tensors(*train, *test)


class SyntheticDatasets:
    """A dataset plugin registered for the duration of the benchmark, so the harness's own code
    paths (DataCache, prepare_run, run_grid) load the synthetic data exactly as they load MNIST."""

    def __init__(self, sizes: dict[str, tuple[int, int]]) -> None:
        self.sizes = sizes
        self._generated: dict[str, ImageSplits] = {}

    def spec(self, workload: Workload) -> DatasetSpec:
        """The DatasetSpec of one workload's synthetic data."""
        train_images, test_images = self.sizes[workload.model]
        description = f"Synthetic pixels shaped like {workload.looks_like}: {train_images:,} train / {test_images:,} test"
        return DatasetSpec(workload.dataset, description, workload.model, workload.input_shape, NUM_CLASSES, lambda request: self.load(workload))

    def load(self, workload: Workload) -> ImageSplits:
        """Generate a workload's data once per process (every DataCache then shares it)."""
        if workload.model not in self._generated:
            self._generated[workload.model] = synthetic_splits(workload.input_shape, *self.sizes[workload.model])
        return self._generated[workload.model]

    @hookimpl
    def register_datasets(self, register: Callable) -> None:
        """Register one synthetic dataset per workload."""
        for model in self.sizes:
            register(self.spec(WORKLOADS[model]))


@contextmanager
def synthetic_datasets(sizes: dict[str, tuple[int, int]]) -> Iterator[SyntheticDatasets]:
    """Register the synthetic datasets as a plugin for the duration of the block."""
    with registered_plugin(SyntheticDatasets(sizes), "speed-benchmark-synthetic") as plugin:
        yield plugin


# --- timing and memory -----------------------------------------------------------------------------


def timed(device: torch.device, action: Callable[[], object]) -> tuple[object, float]:
    """(result, wall-clock seconds) of ``action``, with the device's queued work included."""
    synchronise(device)
    started = time.perf_counter()
    result = action()
    synchronise(device)
    return result, time.perf_counter() - started


class MemoryMeter:
    """Peak GPU memory of one configuration, over what was already allocated when it started.

    Measured with ``torch.cuda.max_memory_allocated`` after a reset; the starting allocation (the
    resident dataset, runs still alive) is subtracted so each configuration shows its own memory,
    and the absolute peak is kept as well. Both are None on the CPU.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb: float | None = None
        self.peak_total_mb: float | None = None
        self._start_bytes = 0

    def __enter__(self) -> "MemoryMeter":
        gc.collect()  # objects of the previous measurement must not count here
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start_bytes = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            self.peak_mb = (peak - self._start_bytes) / 2**20
            self.peak_total_mb = peak / 2**20

    def figures(self) -> dict:
        """The two peaks, for a result dict."""
        return {"peak_memory_mb": self.peak_mb, "peak_memory_total_mb": self.peak_total_mb}


def resident_megabytes(*splits: ResidentSplit) -> float:
    """Bytes held by resident splits (images and labels), in MB."""
    return sum(split.images.nbytes + split.labels.nbytes for split in splits) / 2**20


def mean_or_none(values: list[float]) -> float | None:
    """The mean of a list, or None for an empty one."""
    return statistics.fmean(values) if values else None


# --- the textbook loop -----------------------------------------------------------------------------


class TensorImages(Dataset):
    """A map-style dataset over uint8 image tensors with a per-sample transform, as torchvision's
    MNIST and CIFAR10 classes are used in tutorials."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[index]), int(self.labels[index])


def textbook_transform(mean: tuple[float, ...], std: tuple[float, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 -> float in [0, 1] -> normalised, one sample at a time (torchvision transforms)."""
    return transforms.Compose([transforms.ConvertImageDtype(torch.float32), transforms.Normalize(mean, std)])


def textbook_loader(images: torch.Tensor, labels: torch.Tensor, transform, batch_size: int, shuffle: bool, seed: int, workers: int, device: torch.device) -> DataLoader:
    """A plain DataLoader over one split; pinned memory on CUDA, as tutorials recommend."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        TensorImages(images, labels, transform), batch_size=batch_size, shuffle=shuffle, num_workers=workers,
        pin_memory=device.type == "cuda", generator=generator,
    )


def textbook_train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader, device: torch.device) -> None:
    """One eager epoch: copy the batch, zero_grad, forward, cross-entropy, backward, step."""
    model.train()
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def textbook_accuracy(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Test accuracy (fraction) over a loader; the count stays on the device until the end."""
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    for images, labels in loader:
        outputs = model(images.to(device, non_blocking=True))
        correct += (outputs.argmax(dim=1) == labels.to(device, non_blocking=True)).sum()
    return int(correct) / len(loader.dataset)


def measure_textbook(workload: Workload, cache: DataCache, device: torch.device, args: argparse.Namespace) -> dict:
    """Train the textbook loop for a warm-up epoch plus ``--epochs`` timed ones, evaluating after each."""
    _, _, _, splits = cache.get(workload.dataset, 0)
    transform = textbook_transform(splits.mean, splits.std)
    train = textbook_loader(splits.train_images, splits.train_labels, transform, PROTOCOL.batch_size, True, args.seed, args.workers, device)
    test = textbook_loader(splits.test_images, splits.test_labels, transform, TEXTBOOK_EVAL_BATCH_SIZE, False, args.seed, args.workers, device)
    epoch_seconds, eval_seconds, accuracy = [], [], None
    with MemoryMeter(device) as memory:
        torch.manual_seed(args.seed)  # the same initial weights as the engine's run with this seed
        model = registries().models.get(workload.model).build(workload.input_shape, NUM_CLASSES).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=PROTOCOL.lr)
        for epoch in range(args.epochs + 1):
            _, seconds = timed(device, lambda: textbook_train_epoch(model, optimizer, train, device))
            accuracy, evaluation = timed(device, lambda: textbook_accuracy(model, test, device))
            if epoch > 0:  # epoch 0 is the warm-up: worker start-up, allocator, kernel selection
                epoch_seconds.append(seconds)
                eval_seconds.append(evaluation)
    return {
        "epoch_seconds": mean_or_none(epoch_seconds), "epoch_seconds_each": epoch_seconds,
        "eval_seconds": mean_or_none(eval_seconds), "test_accuracy": accuracy,
        "train_images": len(train.dataset), "test_images": len(test.dataset), "workers": args.workers, **memory.figures(),
    }


# --- the harness engine ----------------------------------------------------------------------------


def run_config(workload: Workload, pruner: str, seed: int, epochs: int, args: argparse.Namespace) -> RunConfig:
    """A run of the seed protocol on the synthetic data, training on every training image.

    ``val_size=0`` keeps the whole training split for training, so both loops see the same images
    per epoch; the grid measurement (``--measure-grid``) uses the runner's default validation split.
    """
    return RunConfig(pruner=pruner, dataset=workload.dataset, model=workload.model, seed=seed, epochs=epochs, val_size=0, device=args.device)


def train_steps(trainer, data: ResidentSplit, steps: int) -> None:
    """A partial epoch of ``steps`` batches (graph replays where the trainer has a graph)."""
    trainer.begin_epoch(data)
    for _ in range(min(steps, trainer.steps_per_epoch(data))):
        trainer.advance()
    trainer.end_epoch()


def steps_before_event(pruner_class, steps: int) -> int:
    """How many steps from an epoch's start the event timing trains: enough for ``STEPS_BEFORE_EVENT``
    of them to be observed (a pruner observing a window at the epoch's end trains up to it)."""
    observed = pruner_class.observed_steps(steps)
    if not pruner_class.observes() or len(observed) == 0:
        return min(STEPS_BEFORE_EVENT, steps)
    return observed[min(STEPS_BEFORE_EVENT, len(observed)) - 1] + 1


def time_pruning_events(trainer, data: ResidentSplit, device: torch.device, count: int) -> list[float]:
    """Seconds of ``count`` pruning events, each after a few observed training steps.

    The steps matter: criteria that restart their statistics after an event would otherwise score
    an all-zero tensor, whose sort is several times faster than a real event's.
    """
    seconds = []
    protocol = PruningSchedule.for_run(PROTOCOL, regrows=trainer.pruner.regrows())
    plans = [protocol.event_after(epoch) for epoch in protocol.event_epochs]  # the seed protocol's events, in order
    steps = steps_before_event(type(trainer.pruner), trainer.steps_per_epoch(data))
    for index in range(count):
        train_steps(trainer, data, steps)
        plan = plans[index % len(plans)]
        seconds.append(timed(device, lambda: trainer.prune(plan))[1])
    return seconds


def build_trainer(workload: Workload, cache: DataCache, device: torch.device, pruner: str, seed: int, args: argparse.Namespace,
                  observe_every_epoch: bool = False):
    """A Trainer exactly as ``bench run`` builds it (prepare_run), with the CUDA graph on a GPU.

    ``observe_every_epoch``: a pruner that observes does so in every epoch trained here, whatever its
    ``observe_epochs`` and the events of this short schedule; what observation costs per epoch is
    what is measured, and how many epochs of a real run pay it is counted apart."""
    config = run_config(workload, pruner, seed, args.epochs + 1, args)
    trainer = prepare_run(config, registries(), cache, use_cuda_graph=device.type == "cuda").trainer
    if observe_every_epoch and trainer.pruner.observes():
        trainer.observed_epochs = frozenset(range(1, config.epochs + 1))
    return trainer


def measure_engine(workload: Workload, cache: DataCache, device: torch.device, args: argparse.Namespace) -> dict:
    """Train the dense run with the harness's Trainer: a warm-up epoch (on a GPU it includes the graph
    capture), then ``--epochs`` timed ones, each followed by a timed evaluation on the test split."""
    train, _, test, _ = cache.get(workload.dataset, 0)
    epoch_seconds, eval_seconds, accuracy = [], [], None
    with MemoryMeter(device) as memory:
        trainer = build_trainer(workload, cache, device, "none", args.seed, args)
        for epoch in range(args.epochs + 1):
            _, seconds = timed(device, lambda: trainer.train_epoch(train))
            result, evaluation = timed(device, lambda: trainer.evaluate(test))
            accuracy = result.accuracy
            if epoch > 0:
                epoch_seconds.append(seconds)
                eval_seconds.append(evaluation)
    return {
        "engine": trainer.engine, "graph_error": trainer.graph_error,
        "epoch_seconds": mean_or_none(epoch_seconds), "epoch_seconds_each": epoch_seconds,
        "eval_seconds": mean_or_none(eval_seconds), "test_accuracy": accuracy,
        "train_images": len(train), "test_images": len(test), **memory.figures(),
    }


def measure_concurrency(workload: Workload, cache: DataCache, device: torch.device, runs: int, args: argparse.Namespace) -> dict:
    """``runs`` dense runs (seeds 0..runs-1) trained together by fit_together, as ``bench run`` does."""
    train, val, _, _ = cache.get(workload.dataset, 0)
    with MemoryMeter(device) as memory:
        trainers = [build_trainer(workload, cache, device, "none", seed, args) for seed in range(runs)]
        outcomes = fit_together(trainers, train, val)
    errors = [f"{type(outcome.error).__name__}: {outcome.error}" for outcome in outcomes if outcome.error is not None]
    # Every run's history holds the whole group's wall-clock per epoch; the first epoch is the warm-up.
    group_seconds = [report.train_seconds for report in outcomes[0].history[1:]]
    group_epoch = mean_or_none(group_seconds)
    return {
        "runs": runs, "group_epoch_seconds": group_epoch, "group_epoch_seconds_each": group_seconds,
        "per_run_epoch_seconds": None if group_epoch is None else group_epoch / runs,
        "engines": [trainer.engine for trainer in trainers], "graph_errors": [trainer.graph_error for trainer in trainers],
        "errors": errors, **memory.figures(),
    }


class ObserveTimer:
    """Wall-clock spent inside a pruner's ``observe`` (installed in its place on the instance).

    A direct measure of the observation, free of the noise of a difference between two epochs'
    times; only on the CPU, where every step is eager and a call to ``observe`` is its work (a
    replayed CUDA graph runs the observation without calling the method)."""

    def __init__(self, pruner) -> None:
        self.seconds = 0.0
        self._observe = pruner.observe
        pruner.observe = self

    def __call__(self, step) -> None:
        start = time.perf_counter()
        self._observe(step)
        self.seconds += time.perf_counter() - start


def measure_pruners(workload: Workload, cache: DataCache, device: torch.device, args: argparse.Namespace) -> dict[str, dict]:
    """Every built-in pruner's epoch and event times, against a dense run timed in the same rounds.

    All five runs are built and warmed up first; then each timed round trains one epoch of each, in
    alternating order, so a slow spell of the machine (another job, clock changes) hits the dense
    baseline and the pruner alike instead of masquerading as pruning overhead. On the CPU the time
    inside ``observe`` is also taken directly (:class:`ObserveTimer`).
    """
    train, _, _, _ = cache.get(workload.dataset, 0)
    trainers, memory, timers = {}, {}, {}
    for pruner in args.pruners:
        with MemoryMeter(device) as meter:
            trainers[pruner] = build_trainer(workload, cache, device, pruner, args.seed, args, observe_every_epoch=True)
            if device.type == "cpu" and trainers[pruner].pruner.observes():
                timers[pruner] = ObserveTimer(trainers[pruner].pruner)
            trainers[pruner].train_epoch(train)  # warm-up (graph capture on a GPU)
        memory[pruner] = meter.figures()
    seconds = {pruner: [] for pruner in args.pruners}
    observing = {pruner: [] for pruner in timers}
    for round_index in range(args.epochs):
        order = args.pruners if round_index % 2 == 0 else args.pruners[::-1]
        for pruner in order:
            before = timers[pruner].seconds if pruner in timers else 0.0
            seconds[pruner].append(timed(device, lambda: trainers[pruner].train_epoch(train))[1])
            if pruner in timers:
                observing[pruner].append(timers[pruner].seconds - before)
    rows = {}
    for pruner, trainer in trainers.items():
        events = time_pruning_events(trainer, train, device, args.prune_events) if trainer.pruner.prunes else []
        rows[pruner] = {
            "pruner": pruner, "engine": trainer.engine, "graph_error": trainer.graph_error,
            "epoch_seconds": mean_or_none(seconds[pruner]), "epoch_seconds_each": seconds[pruner],
            # Paired with the dense epoch of the same round; the median resists one disturbed round.
            "observe_extra_epoch_seconds": statistics.median(a - b for a, b in zip(seconds[pruner], seconds["none"])),
            # Measured inside observe (CPU only; 0 for a pruner that does not observe, None on a GPU).
            "observe_call_epoch_seconds": statistics.median(observing[pruner]) if pruner in timers else (0.0 if device.type == "cpu" else None),
            # The median, because the first event in a process also pays one-off costs (lazy kernel loads).
            "event_seconds": statistics.median(events) if events else None, "event_seconds_each": events,
            "observed_epochs": protocol_observed_epochs(trainer.pruner),
            "train_images": len(train), **memory[pruner],
        }
    return rows


def measure_moment_floor(workload: Workload, cache: DataCache, device: torch.device, baseline: dict, protocol_train_images: int,
                         args: argparse.Namespace, repeats: int = 200) -> dict:
    """The least two running moments of every prunable parameter can cost per observed step, from
    this device's measured speed on the simplest element-wise kernel.

    Each observed step must read the gradients and read and write two totals: five passes over the
    prunable parameters, however fused. ``total.add_(gradients)`` (three passes) over a tensor of
    that size is timed ``repeats`` times; its bytes per second give the floor of the five, and
    ``floor_percent`` puts that floor in the default 45 observed epochs of a seed-protocol run."""
    trainer = build_trainer(workload, cache, device, "none", args.seed, args)
    elements = sum(param.numel() for _, param in layer_parameters(trainer.layers))
    trainer.close()
    gradients, total = torch.randn(elements, device=device), torch.zeros(elements, device=device)
    for _ in range(10):
        total.add_(gradients)  # warm-up
    _, seconds = timed(device, lambda: [total.add_(gradients) for _ in range(repeats)])
    bytes_per_second = 3 * 4 * elements * repeats / seconds
    step_seconds = 5 * 4 * elements / bytes_per_second
    steps = math.ceil(protocol_train_images / PROTOCOL.batch_size)
    protocol_epoch = baseline["epoch_seconds"] * protocol_train_images / baseline["train_images"]
    observed = len(PruningSchedule.for_run(PROTOCOL).observed_epochs())
    return {
        "elements": elements, "add_seconds": seconds / repeats, "bytes_per_second": bytes_per_second,
        "floor_step_seconds": step_seconds, "observed_epochs": observed,
        "floor_percent": 100.0 * observed * steps * step_seconds / (PROTOCOL.epochs * protocol_epoch),
    }


def protocol_observed_epochs(pruner) -> int:
    """How many epochs of a seed-protocol run call the pruner's ``observe`` (45 of 50 by default:
    none after the last event; fewer for a pruner with ``observe_epochs``; none if it has no observe)."""
    if not pruner.observes():
        return 0
    return len(PruningSchedule.for_run(PROTOCOL, regrows=pruner.regrows()).observed_epochs(pruner.observe_epochs))


def pruning_overhead(baseline: dict, measured: dict, protocol_train_images: int, floor: dict | None = None) -> dict:
    """A pruner's cost over the dense baseline, as a share of a seed-protocol run's training time.

    overhead% = (50 x masking + E x (extra - masking) + 9 x event seconds) / (50 x dense epoch seconds)

    The extra seconds per epoch (measured with observation on) are the gradient masking every epoch
    of a pruned run pays, which is ``magnitude``'s extra (``floor``), and the observation, paid only
    in the E epochs that observe (``observed_epochs``). Without ``floor`` the whole extra counts for
    all 50 epochs, an upper bound. Per-epoch figures are scaled (per image) to the protocol's epoch
    of ``protocol_train_images``: an event costs the same whatever the epoch size, so a run on fewer
    images would overstate it. The extra per epoch is a difference of two timings and can come out
    slightly negative (noise).
    """
    images = baseline["train_images"]
    scale = protocol_train_images / images
    protocol_epoch = baseline["epoch_seconds"] * scale
    protocol_extra = measured["observe_extra_epoch_seconds"] * scale
    masking = protocol_extra if floor is None else min(protocol_extra, floor["observe_extra_epoch_seconds"] * scale)
    observed = PROTOCOL.epochs if floor is None else measured["observed_epochs"]
    event = measured["event_seconds"] or 0.0
    spent = PROTOCOL.epochs * masking + observed * (protocol_extra - masking) + PROTOCOL_EVENTS * event
    percent = 100.0 * spent / (PROTOCOL.epochs * protocol_epoch)
    return {
        **measured, "observe_extra_seconds_per_image": measured["observe_extra_epoch_seconds"] / images,
        "protocol_train_images": protocol_train_images, "protocol_none_epoch_seconds": protocol_epoch,
        "overhead_percent": percent, "within_target": percent < OVERHEAD_TARGET_PERCENT,
    }


def add_own_overheads(overheads: dict[str, dict]) -> None:
    """Each pruner's own share: its overhead less magnitude's, where magnitude was measured.

    The dense reference skips mask enforcement, so every pruned run pays for masking its gradients
    at each step; ``magnitude`` observes nothing, so its overhead is that masking
    (plus noise). What a criterion costs on top of it, its observation and its events, is the
    difference. Without ``magnitude`` in the measurement the share is left out (None).
    """
    floor = overheads.get("magnitude")
    for pruner, row in overheads.items():
        row["own_overhead_percent"] = None if floor is None else row["overhead_percent"] - floor["overhead_percent"]
        row["own_direct_percent"] = None if floor is None else own_direct_percent(row, floor)


def own_direct_percent(row: dict, floor: dict) -> float | None:
    """The pruner's own cost from direct timings, as a share of a seed-protocol run's training time:

    (E x seconds inside observe per epoch + 9 x (event seconds - magnitude's)) / (50 x dense epoch)

    The observation is timed inside the calls (:class:`ObserveTimer`), so it carries none of the
    scatter of a difference between two epochs' times; what it leaves out is any slowdown the
    observation causes in the rest of the step (caches it evicts). None without a direct timing."""
    observe = row.get("observe_call_epoch_seconds")
    if observe is None:
        return None
    scale = row["protocol_train_images"] / row["train_images"]
    events = PROTOCOL_EVENTS * max(0.0, (row["event_seconds"] or 0.0) - (floor["event_seconds"] or 0.0))
    spent = row["observed_epochs"] * observe * scale + events
    return 100.0 * spent / (PROTOCOL.epochs * row["protocol_none_epoch_seconds"])


# --- projection of the seed grid ------------------------------------------------------------------


@dataclass(frozen=True)
class GridShape:
    """A grid of runs of one model: how many runs, epochs and images each run has."""

    pruners: int
    seeds: int
    epochs: int
    events: int
    train_images: int
    """Images trained on per epoch (the training split minus the validation images)."""
    val_images: int
    test_images: int

    @property
    def runs(self) -> int:
        """Runs of this model in the grid."""
        return self.pruners * self.seeds


def grid_shape(full_train_images: int, test_images: int, epochs: int, seeds: int, pruners: int) -> GridShape:
    """The grid ``bench run --all`` plans for one dataset: validation split and events as the runner makes them."""
    val_images = resolve_val_size(PROTOCOL.val_size, full_train_images)
    events = len(PruningSchedule.build(epochs, PROTOCOL.prune_every, PROTOCOL.prune_rate).event_epochs)
    return GridShape(pruners, seeds, epochs, events, full_train_images - val_images, val_images, test_images)


def evaluation_seconds(shape: GridShape, eval_seconds_per_image: float) -> float:
    """Validation after every epoch plus one test pass per run, as the runner does."""
    return shape.runs * (shape.epochs * shape.val_images + shape.test_images) * eval_seconds_per_image


def project_textbook(shape: GridShape, textbook: dict) -> dict:
    """The grid with the textbook loop, one run after another: training and evaluation only."""
    train = shape.runs * shape.epochs * shape.train_images * textbook["epoch_seconds"] / textbook["train_images"]
    evaluation = evaluation_seconds(shape, textbook["eval_seconds"] / textbook["test_images"])
    return {"train_seconds": train, "eval_seconds": evaluation, "total_seconds": train + evaluation}


def project_engine(shape: GridShape, engine: dict, group: dict, overheads: dict[str, dict]) -> dict:
    """The grid with the engine: groups of concurrent runs, evaluation, and each pruner's overhead."""
    groups = math.ceil(shape.runs / group["runs"])
    train = groups * shape.epochs * shape.train_images * group["group_epoch_seconds"] / engine["train_images"]
    evaluation = evaluation_seconds(shape, engine["eval_seconds"] / engine["test_images"])
    # A negative observation cost is timing noise, not a pruner that speeds training up: count it as zero.
    # The extra is counted in every epoch, an upper bound (a run observes only up to its last event).
    pruning = shape.seeds * sum(
        shape.epochs * shape.train_images * max(0.0, row["observe_extra_seconds_per_image"]) + shape.events * (row["event_seconds"] or 0.0)
        for row in overheads.values()
    )
    return {"train_seconds": train, "eval_seconds": evaluation, "pruning_seconds": pruning, "total_seconds": train + evaluation + pruning}


def project(shape: GridShape, figures: dict) -> dict:
    """Both loops' projected wall time for one model's part of a grid."""
    return {
        "grid": {**shape.__dict__, "runs": shape.runs, "epochs_total": shape.runs * shape.epochs},
        "textbook": project_textbook(shape, figures["textbook"]),
        "engine": project_engine(shape, figures["engine"], figures["concurrency"], figures["pruning"]),
    }


def measure_grid(workload: Workload, args: argparse.Namespace, concurrency: int) -> dict:
    """Run one model's part of the grid through the CLI's code path (plan_runs + run_grid), timed.

    The records split the wall time: training (each group's wall-clock once), pruning events, and the
    rest (validation, the final test pass, the per-run inference measurements, setup).
    """
    found = registries()
    base = RunConfig(epochs=args.grid_epochs, device=args.device)
    configs = plan_runs(base, list(args.pruners), [workload.dataset], args.grid_seeds, found)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="speed-grid-") as folder:
        summary, seconds = timed(device, lambda: run_grid(configs, found, ResultsStore(folder), None, force=True, concurrency=concurrency))
        metrics = [record["metrics"] for record in ResultsStore(folder).records() if record.get("status") == "ok"]
    # Every run of a group records the group's training wall-clock, so each counts 1/concurrent_runs of it.
    train = sum(m["train_seconds"] / m["concurrent_runs"] for m in metrics)
    prune = sum(m["prune_seconds"] for m in metrics)
    # Captures run one after another on the host, so their times add up (zero without a GPU).
    capture = sum(m["capture_seconds"] for m in metrics)
    return {
        "runs": len(configs), "pruners": len(args.pruners), "seeds": args.grid_seeds, "epochs": args.grid_epochs,
        "events": len(PruningSchedule.build(args.grid_epochs, PROTOCOL.prune_every, PROTOCOL.prune_rate).event_epochs),
        "train_images": metrics[0]["train_images"] if metrics else None, "val_images": metrics[0]["val_images"] if metrics else None,
        "completed": summary.completed, "failed": summary.failed, "seconds": seconds,
        "train_seconds": train, "prune_seconds": prune, "capture_seconds": capture, "other_seconds": seconds - train - prune - capture,
        "inference_seconds": sum(m["inference_seconds"] for m in metrics),
        "engines": sorted({m["engine"] for m in metrics}), "test_accuracy_mean": mean_or_none([m["test_accuracy"] for m in metrics]),
    }


# --- where an epoch's time goes ------------------------------------------------------------------


PROFILE_ROWS = 25
"""Operators listed per profile, the most expensive first."""


def profile_epochs(workload: Workload, cache: DataCache, device: torch.device, pruners: list[str], args: argparse.Namespace) -> dict[str, dict]:
    """One engine epoch per pruner under torch.profiler, its top operators written to ``--profile DIR``.

    When a target is missed, the figures say by how much and these tables say where the time goes:
    on a GPU, whether the device is busy (its kernels' self time against the epoch's wall-clock) or
    waits for the host, and which operators dominate. A fresh run per pruner, warmed up first, so
    the graph capture stays out of the profile.
    """
    from torch.profiler import ProfilerActivity, profile

    train, _, _, _ = cache.get(workload.dataset, 0)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    args.profile.mkdir(parents=True, exist_ok=True)
    profiles = {}
    for pruner in pruners:
        trainer = build_trainer(workload, cache, device, pruner, args.seed, args, observe_every_epoch=True)
        trainer.train_epoch(train)
        with profile(activities=activities) as profiler:
            _, seconds = timed(device, lambda: trainer.train_epoch(train))
        path = args.profile / f"profile-{workload.model}-{pruner}.txt"
        header = (
            f"One engine epoch of {workload.model}, pruner {pruner}, {len(train):,} images, engine {trainer.engine}: "
            f"{seconds:.3f} s wall-clock under the profiler (which slows it).\n"
        )
        path.write_text(header + profiler.key_averages().table(sort_by=sort_by, row_limit=PROFILE_ROWS) + "\n")
        profiles[pruner] = {"file": str(path), "epoch_seconds_profiled": seconds, "engine": trainer.engine, "sorted_by": sort_by}
        trainer.release_graph()
    return profiles


# --- one model, end to end ------------------------------------------------------------------------


def benchmark_workload(workload: Workload, device: torch.device, concurrency: int, args: argparse.Namespace) -> dict:
    """Every measurement of one model; the data stays resident only while this model is measured."""
    if args.grid_only:
        progress(f"{workload.model}: grid of {len(args.pruners)} pruners x {args.grid_seeds} seeds x {args.grid_epochs} epochs")
        return {"grid": {"measured": measure_grid(workload, args, concurrency)}}
    cache = DataCache(registries(), None, device)
    train, _, test, _ = cache.get(workload.dataset, 0)
    progress(f"{workload.model}: textbook loop")
    textbook = measure_textbook(workload, cache, device, args)
    progress(f"{workload.model}: engine, pruner none")
    engine = measure_engine(workload, cache, device, args)
    progress(f"{workload.model}: {concurrency} concurrent runs")
    group = measure_concurrency(workload, cache, device, concurrency, args)
    progress(f"{workload.model}: pruners {', '.join(args.pruners)}, round-robin")
    seed_grid = grid_shape(workload.train_images, workload.test_images, PROTOCOL.epochs, PROTOCOL_SEEDS, len(args.pruners))
    measured = measure_pruners(workload, cache, device, args)
    floor = measured.get("magnitude")
    overheads = {pruner: pruning_overhead(measured["none"], row, seed_grid.train_images, floor) for pruner, row in measured.items() if pruner != "none"}
    add_own_overheads(overheads)
    figures = {
        "resident_data_mb": resident_megabytes(train, test), "textbook": textbook, "engine": engine,
        "speedup": textbook["epoch_seconds"] / engine["epoch_seconds"], "concurrency": group,
        "pruning_baseline": measured["none"], "pruning": overheads,
        "moment_floor": measure_moment_floor(workload, cache, device, measured["none"], seed_grid.train_images, args),
    }
    figures["projection_seed_grid"] = project(seed_grid, figures)
    if args.profile is not None:
        # The dense epoch (the speed-up and the grid) and every pruner over its overhead target.
        missed = [pruner for pruner, row in overheads.items() if not row["within_target"]]
        progress(f"{workload.model}: profiling one epoch of {', '.join(['none', *missed])}")
        try:
            figures["profiles"] = profile_epochs(workload, cache, device, ["none", *missed], args)
        except Exception as error:  # noqa: BLE001 - the profile explains figures; it must not cost them
            figures["profiles"] = {"error": f"{type(error).__name__}: {error}"}
    if args.measure_grid:
        progress(f"{workload.model}: grid of {len(args.pruners)} pruners x {args.grid_seeds} seeds x {args.grid_epochs} epochs")
        shape = grid_shape(textbook["train_images"], textbook["test_images"], args.grid_epochs, args.grid_seeds, len(args.pruners))
        figures["grid"] = {"measured": measure_grid(workload, args, concurrency), "projected": project(shape, figures)}
    return figures


# --- environment, output -------------------------------------------------------------------------


def seconds_text(seconds: float | None) -> str:
    """Seconds with three decimals, or a dash."""
    return "-" if seconds is None else f"{seconds:.3f}"


def percent_text(fraction: float | None) -> str:
    """A fraction as a percentage, or a dash."""
    return "-" if fraction is None else f"{100 * fraction:.2f}%"


def memory_text(megabytes: float | None) -> str:
    """MB with one decimal, or 'n/a' on the CPU."""
    return "n/a" if megabytes is None else f"{megabytes:.1f}"


def duration_text(seconds: float) -> str:
    """A long duration in the unit that reads best."""
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def loop_table(results: dict) -> str:
    """Textbook against engine, per model."""
    rows = []
    for model, figures in results.items():
        textbook, engine = figures["textbook"], figures["engine"]
        rows.append([
            model, f"{engine['train_images']:,}", seconds_text(textbook["epoch_seconds"]), seconds_text(engine["epoch_seconds"]),
            f"{figures['speedup']:.1f}x", engine["engine"], percent_text(textbook["test_accuracy"]), percent_text(engine["test_accuracy"]),
            memory_text(textbook["peak_memory_mb"]), memory_text(engine["peak_memory_mb"]),
        ])
    return table(rows, ["model", "train images", "textbook s/epoch", "engine s/epoch", "speed-up", "engine mode", "textbook acc", "engine acc", "textbook peak MB", "engine peak MB"])


def concurrency_table(results: dict) -> str:
    """K runs trained together."""
    rows = []
    for model, figures in results.items():
        group, single = figures["concurrency"], figures["engine"]["epoch_seconds"]
        gain = single * group["runs"] / group["group_epoch_seconds"]
        rows.append([
            model, group["runs"], seconds_text(group["group_epoch_seconds"]), seconds_text(group["per_run_epoch_seconds"]),
            f"{gain:.2f}x", ", ".join(sorted(set(group["engines"]))), memory_text(group["peak_memory_mb"]),
        ])
    return table(rows, ["model", "runs", "group s/epoch", "per run s/epoch", "vs one at a time", "engine mode", "peak MB"])


def pruning_table(results: dict) -> str:
    """Each pruner's cost against the dense baseline."""
    rows = []
    for model, figures in results.items():
        baseline = figures["pruning_baseline"]
        rows.append([model, "none", baseline["engine"], seconds_text(baseline["epoch_seconds"]), "(baseline)", "-", "-", "-", "", "-", "-", "-", memory_text(baseline["peak_memory_mb"])])
        for pruner, row in figures["pruning"].items():
            rows.append([
                model, pruner, row["engine"], seconds_text(row["epoch_seconds"]), f"{row['observe_extra_epoch_seconds']:+.3f}",
                str(row.get("observed_epochs", "-")),
                seconds_text(row["event_seconds"]), f"{row['overhead_percent']:.2f}%", "yes" if row["within_target"] else "NO",
                "-" if row.get("own_overhead_percent") is None else f"{row['own_overhead_percent']:+.2f}%",
                "-" if row.get("observe_call_epoch_seconds") is None else f"{row['observe_call_epoch_seconds']:.3f}",
                "-" if row.get("own_direct_percent") is None else f"{row['own_direct_percent']:.2f}%",
                memory_text(row["peak_memory_mb"]),
            ])
    return table(rows, [
        "model", "pruner", "engine mode", "s/epoch", "observe extra s/epoch", "observed epochs", "event s", "overhead", f"< {OVERHEAD_TARGET_PERCENT:g}%",
        "own (over magnitude)", "in observe s/epoch", "own, direct", "peak MB",
    ])


def moment_floor_text(model: str, floor: dict) -> str:
    """One line: what two running moments of every prunable parameter cost at the least."""
    return (
        f"{model}: two running moments of its {floor['elements']:,} prunable parameters move at least 5 x 4 bytes each per observed step; "
        f"at the {floor['bytes_per_second'] / 1e9:.1f} GB/s of one add_ here ({floor['add_seconds'] * 1e6:.0f} us), "
        f"{floor['floor_step_seconds'] * 1e3:.3f} ms a step, {floor['floor_percent']:.1f}% of a seed-protocol run observing {floor['observed_epochs']} epochs"
    )


def projection_rows(label: str, projection: dict, model: str) -> list[list]:
    """One table row per loop for one model's projection."""
    grid = projection["grid"]
    return [
        [model, label, loop, f"{grid['runs']} x {grid['epochs']}", duration_text(figures["train_seconds"]), duration_text(figures["eval_seconds"]), duration_text(figures["total_seconds"])]
        for loop, figures in (("textbook", projection["textbook"]), ("engine", projection["engine"]))
    ]


def projection_table(results: dict) -> str:
    """Projected (and, with --measure-grid, measured) wall time of the grids."""
    rows = []
    for model, figures in results.items():
        rows += projection_rows("seed grid, full size", figures["projection_seed_grid"], model)
        if "grid" in figures:
            rows += projection_rows("measured grid", figures["grid"]["projected"], model)
            measured = figures["grid"]["measured"]
            rows.append([
                model, "measured grid", "engine, measured", f"{measured['runs']} runs", duration_text(measured["train_seconds"]),
                duration_text(measured["seconds"] - measured["train_seconds"]), duration_text(measured["seconds"]),
            ])
    return table(rows, ["model", "grid", "loop", "runs x epochs", "train", "eval (measured: all else)", "total"])


def totals_text(results: dict, key: str) -> str:
    """Both loops' projected totals summed over the models."""
    textbook = sum(figures[key]["textbook"]["total_seconds"] for figures in results.values())
    engine = sum(figures[key]["engine"]["total_seconds"] for figures in results.values())
    return f"textbook {duration_text(textbook)}, engine {duration_text(engine)}"


def resident_text(results: dict) -> str:
    """Each model's resident dataset size, for the memory note."""
    return ", ".join(f"{model} data {figures['resident_data_mb']:.1f} MB" for model, figures in results.items())


def report(payload: dict) -> str:
    """The whole human-readable report."""
    env, results = payload["environment"], payload["results"]
    device = env["gpu_name"] or f"CPU: {env['cpu_cores']} cores, {env['cpu_name']}, torch threads {env['torch_threads']}"
    lines = [
        f"bench-harness speed benchmark, {env['date']}",
        f"device: {device}; torch {env['torch']}, CUDA {env['cuda_version'] or '-'}",
        f"command: {env['command']}",
        "DATA: synthetic pixels (class patterns + noise) with MNIST's and CIFAR-10's shapes; not the real datasets.",
        f"Seconds per epoch are means over {payload['settings']['epochs']} timed epoch(s) after one warm-up epoch; "
        "accuracies are on the synthetic test split after all epochs.",
        "Peak MB: GPU memory each configuration allocated at its peak on top of the resident data "
        f"({resident_text(results)}); n/a on the CPU.",
        "",
        "Textbook loop (DataLoader + per-sample transforms, eager) vs harness engine (pruner none)",
        loop_table(results), "",
        "Concurrent runs (fit_together)", concurrency_table(results), "",
        f"Pruning overhead vs none, as a share of a seed-protocol run ({PROTOCOL.epochs} epochs, {PROTOCOL_EVENTS} events; "
        "the masking, magnitude's extra, paid every epoch, the rest of the extra only in the epochs that observe; "
        "epoch seconds scaled per image to the protocol's 55,000 / 45,000 training images; "
        "own: the overhead less magnitude's, the masking every pruned run pays and the dense reference skips)",
        pruning_table(results), "",
        *[moment_floor_text(model, figures["moment_floor"]) for model, figures in results.items() if "moment_floor" in figures], "",
        "Wall time of the grid (textbook: one run after another, training + evaluation; engine: concurrent groups + evaluation + pruning)",
        projection_table(results),
        *(["(measured grid, 'all else': validation, test passes, the runner's per-run inference measurements, setup)"] if payload["settings"]["measure_grid"] else []),
        f"seed grid total ({len(payload['settings']['pruners'])} pruners x {PROTOCOL_SEEDS} seeds x {PROTOCOL.epochs} epochs per dataset): {totals_text(results, 'projection_seed_grid')}",
    ]
    for model, figures in results.items():
        problems = [figures["engine"]["graph_error"], *figures["concurrency"]["graph_errors"], *figures["concurrency"]["errors"]]
        problems += [row["graph_error"] for row in (figures["pruning_baseline"], *figures["pruning"].values())]
        problems += figures.get("grid", {}).get("measured", {}).get("failed", [])
        if env["gpu_name"]:
            # On a GPU every configuration should replay a captured graph; eager there is a regression.
            modes = [figures["engine"]["engine"], *figures["concurrency"]["engines"], figures["pruning_baseline"]["engine"]]
            modes += [row["engine"] for row in figures["pruning"].values()]
            problems += [f"a run trained in '{mode}' mode on the GPU, not 'cuda-graph'" for mode in modes if mode != "cuda-graph"]
        for problem in sorted({p for p in problems if p}):
            lines.append(f"PROBLEM ({model}): {problem}")
    return "\n".join(lines)


def grid_report(payload: dict) -> str:
    """The report of ``--grid-only``: the measured grid alone."""
    env, settings = payload["environment"], payload["settings"]
    rows = []
    for model, figures in payload["results"].items():
        measured = figures["grid"]["measured"]
        rows.append([
            model, f"{measured['completed']} of {measured['runs']}", ", ".join(measured["engines"]), duration_text(measured["train_seconds"]),
            duration_text(measured["prune_seconds"]), duration_text(measured["capture_seconds"]), duration_text(measured["other_seconds"]),
            duration_text(measured["seconds"]), percent_text(measured["test_accuracy_mean"]),
        ])
    lines = [
        f"bench-harness measured grid, {env['date']}; device: {env['gpu_name'] or 'CPU ' + env['cpu_name']}; command: {env['command']}",
        f"{len(settings['pruners'])} pruners x {settings['grid_seeds']} seeds x {settings['grid_epochs']} epochs per model, "
        "through plan_runs + run_grid on synthetic pixels ('other': validation, test passes, per-run inference measurements, setup)",
        table(rows, ["model", "runs ok", "engine", "train", "pruning", "capture", "other", "total", "mean test acc"]),
    ]
    for model, figures in payload["results"].items():
        lines += [f"PROBLEM ({model}): {failure}" for failure in figures["grid"]["measured"]["failed"]]
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; see --help."""
    parser = argparse.ArgumentParser(
        description="Compare a textbook PyTorch training loop with bench-harness's engine on one device. "
        "The data is synthetic: MNIST- and CIFAR-10-shaped uint8 pixels (class patterns plus noise).",
    )
    parser.add_argument("--models", default="fcnn,cnn", help="comma-separated: fcnn (MNIST-shaped data), cnn (CIFAR-10-shaped) [default: fcnn,cnn]")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda [default: auto]")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per loop, after one warm-up epoch [default: 2]")
    parser.add_argument("--train-images", type=int, default=None, help="training images per dataset [default: 60,000 / 50,000, the real sizes]")
    parser.add_argument("--test-images", type=int, default=None, help="test images per dataset [default: 10,000, scaled down with --train-images]")
    parser.add_argument("--workers", type=int, default=None, help="textbook DataLoader workers [default: 4 on CUDA, 0 on the CPU]")
    parser.add_argument("--concurrency", type=int, default=None, help="runs trained together [default: the runner's, 5 on a GPU, 1 on the CPU]")
    parser.add_argument("--prune-events", type=int, default=3, help="pruning events timed per pruner; the median is used [default: 3]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the models and shuffles [default: 0]")
    parser.add_argument(
        "--pruners", default=",".join(BUILTIN_PRUNERS),
        help="comma-separated registered pruners whose overhead is measured and which the grid trains, or 'all' (every registered one, "
        "as bench run --all); none, the baseline, is always included [default: every registered pruner]",
    )
    parser.add_argument("--measure-grid", action="store_true", help="also run the grid through run_grid (--pruners x --grid-seeds x --grid-epochs per model) and time it")
    parser.add_argument("--grid-only", action="store_true", help="measure the grid (as --measure-grid) and nothing else")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR", help="profile one engine epoch (dense, and each pruner over its overhead target) into DIR")
    parser.add_argument("--grid-epochs", type=int, default=PROTOCOL.epochs, help=f"epochs per run of the measured grid [default: {PROTOCOL.epochs}]")
    parser.add_argument("--grid-seeds", type=int, default=PROTOCOL_SEEDS, help=f"seeds of the measured grid [default: {PROTOCOL_SEEDS}]")
    parser.add_argument("--output", type=Path, default=None, help="JSON file for every figure [default: benchmarks/results/speed-<device>-<date>.json]")
    args = parser.parse_args(argv)
    args.models = model_list(parser, args.models, WORKLOADS)
    found = registries().pruners
    registered = found.names()
    pruners = [name.strip() for name in args.pruners.split(",") if name.strip()]
    if pruners == ["all"]:  # what bench run --all plans at the protocol's granularity
        pruners = [name for name in registered if PROTOCOL.granularity in found.get(name).granularities]
    if any(name not in registered for name in pruners):
        parser.error(f"--pruners takes registered pruners ({', '.join(registered)}), got {pruners}")
    args.pruners = ("none", *dict.fromkeys(name for name in pruners if name != "none"))
    args.measure_grid = args.measure_grid or args.grid_only
    for option in ("epochs", "train_images", "test_images", "concurrency", "grid_epochs", "grid_seeds"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1, got {value}")
    if args.prune_events < 1:
        parser.error("--prune-events must be at least 1")
    if args.measure_grid and not PruningSchedule.build(args.grid_epochs, PROTOCOL.prune_every, PROTOCOL.prune_rate).event_epochs:
        # The runner refuses a pruning run without a single event, so say so before anything trains.
        parser.error(f"--grid-epochs must be above {PROTOCOL.prune_every}, so that each pruning run has at least one event")
    return args


def dataset_sizes(args: argparse.Namespace) -> dict[str, tuple[int, int]]:
    """(train, test) images per model; --train-images keeps each dataset's train:test ratio."""
    sizes = {}
    for model in args.models:
        workload = WORKLOADS[model]
        train = args.train_images or workload.train_images
        test = args.test_images or max(1, round(train * workload.test_images / workload.train_images))
        sizes[model] = (train, test)
    return sizes


def main(argv: list[str] | None = None) -> int:
    """Run every measurement, print the report and write the JSON file."""
    args = parse_args(argv)
    device = resolve_device(args.device)
    environment = describe_environment(device)  # read before measuring: the commit measured, not the one at the end
    if args.workers is None:
        args.workers = 4 if device.type == "cuda" else 0
    concurrency = args.concurrency or default_concurrency(device)
    output = args.output or default_output("speed", device)
    results = {}
    with synthetic_datasets(dataset_sizes(args)):
        for model in args.models:
            results[model] = benchmark_workload(WORKLOADS[model], device, concurrency, args)
            gc.collect()
    payload = {
        "benchmark": "bench-harness speed: textbook loop vs engine",
        "data": "synthetic uint8 pixels (class patterns, random shifts and gain, Gaussian noise) with MNIST's and CIFAR-10's shapes",
        "environment": environment,
        "settings": {
            "epochs": args.epochs, "warmup_epochs": 1, "batch_size": PROTOCOL.batch_size, "lr": PROTOCOL.lr, "optimizer": "Adam",
            "workers": args.workers, "concurrency": concurrency, "prune_events": args.prune_events, "seed": args.seed,
            "overhead_target_percent": OVERHEAD_TARGET_PERCENT,
            "sizes": dataset_sizes(args), "pruners": list(args.pruners), "measure_grid": args.measure_grid, "grid_only": args.grid_only,
            "grid_epochs": args.grid_epochs, "grid_seeds": args.grid_seeds,
            "overhead_formula": (
                f"({PROTOCOL.epochs} x masking + observed_epochs x (observe_extra_epoch_seconds - masking) + {PROTOCOL_EVENTS} x event_seconds) "
                f"/ ({PROTOCOL.epochs} x none_epoch_seconds) x 100, masking = magnitude's observe_extra_epoch_seconds when measured "
                f"(else masking = observe_extra_epoch_seconds: every epoch pays it all), "
                "per-epoch seconds scaled per image to the protocol's training split (55,000 / 45,000 images)"
            ),
        },
        "results": results,
    }
    print(grid_report(payload) if args.grid_only else report(payload))
    publish(payload, output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
