"""The training engine: one run's training loop, evaluation and pruning events.

Data lives on the run's device as uint8 tensors and is normalised on the fly; batches are drawn by
index from a per-run seeded permutation, so no DataLoader, worker process or host-to-device copy
sits in the loop. The step (forward, loss, backward, gradient masking, the pruner's observation,
optimizer step) touches only preallocated tensors and never synchronises with the host, which is
what lets the GPU path capture it as a CUDA graph.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench_harness.augment import AugmentationDraw, RandomCropFlip
from bench_harness.device import is_device_failure, synchronise  # noqa: F401 - re-exported for callers
from bench_harness.errors import CONTAINED, STOPS_THE_GRID, DeviceFailure
from bench_harness.event import Evaluation, EventEntry, run_event
from bench_harness.masks import MaskSet
from bench_harness.pruner import PrunableLayer, Pruner, StepView, layer_parameters
from bench_harness.schedule import EventPlan, PruningSchedule
from bench_harness.statistics import flat_gradients, holds_gradients
from bench_harness.watch import WeightWatch

EVAL_BATCH_SIZE = 4096
"""Evaluation has no gradients, so it uses large batches: fewer launches, same numbers."""


@dataclass
class ResidentSplit:
    """One split of a dataset kept on the device: uint8 images and int64 labels."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]


class Normaliser:
    """Turns uint8 images into normalised float32 on the device: (x/255 - mean) / std."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> None:
        channels = len(mean)
        self.scale = (1.0 / (255.0 * torch.tensor(std, dtype=torch.float32, device=device))).view(1, channels, 1, 1)
        self.shift = (torch.tensor(mean, dtype=torch.float32, device=device) / torch.tensor(std, dtype=torch.float32, device=device)).view(1, channels, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() * self.scale - self.shift


def make_optimizer(model: nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """The protocol's Adam, set up for the device the run trains on.

    On a GPU, Adam keeps its step count and bias correction on the device (capturable), as a CUDA
    graph requires; every GPU run uses it, captured or not, because the non-capturable path rounds
    the bias correction differently (host floats), and eager runs (``--no-cuda-graphs``, a
    non-capturable pruner, a failed capture) must compute what captured ones compute. On the CPU,
    the fused implementation: one kernel for all parameters, about 40% faster per step of LeNet on
    one thread than the per-tensor loop.
    """
    if device.type == "cuda":
        return torch.optim.Adam(model.parameters(), lr=lr, capturable=True)
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


@dataclass
class EpochReport:
    """What one epoch produced, for the run's history and the progress bar."""

    epoch: int
    train_loss: float
    val_accuracy: float | None
    sparsity: float
    pruned: int = 0
    """Net elements the epoch's event removed (connections, or units for neuron pruning)."""
    train_seconds: float = 0.0
    prune_seconds: float = 0.0
    val_loss: float | None = None
    event: EventEntry | None = None
    """The pruning event after this epoch, if there was one."""

    def to_dict(self) -> dict:
        """Plain data (for a checkpoint)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EpochReport":
        """The inverse of :meth:`to_dict`."""
        event = data.get("event")
        return cls(**{**data, "event": EventEntry(**event) if event is not None else None})


@dataclass
class TrainingOutcome:
    """The trained run: its history and the times the engine measured."""

    history: list[EpochReport] = field(default_factory=list)
    train_seconds: float = 0.0
    prune_seconds: float = 0.0
    error: BaseException | None = None
    """Why the run stopped early, if it did."""

    def state_dict(self) -> dict:
        """The history and time totals so far (for a checkpoint)."""
        return {"history": [report.to_dict() for report in self.history], "train_seconds": self.train_seconds,
                "prune_seconds": self.prune_seconds}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint's history and time totals."""
        self.history = [EpochReport.from_dict(report) for report in state["history"]]
        self.train_seconds = float(state["train_seconds"])
        self.prune_seconds = float(state["prune_seconds"])


class LayerTaps:
    """Forward hooks that keep each prunable layer's input and/or output of the current step.

    What a pruner with ``wants_inputs`` or ``wants_activations`` receives in its step view. The
    tensors are detached (a reference to the graph-building tensors would keep the step's autograd
    graph alive until the next step). Evaluation pauses the taps, and :meth:`remove` takes the
    hooks off the model when training ends.
    """

    def __init__(self, layers: list[PrunableLayer], inputs: bool, outputs: bool) -> None:
        self.inputs: dict[str, torch.Tensor] | None = {} if inputs else None
        self.outputs: dict[str, torch.Tensor] | None = {} if outputs else None
        self._active = True
        self._handles = [layer.module.register_forward_hook(self._hook(layer.name)) for layer in layers] if inputs or outputs else []

    def _hook(self, name: str) -> Callable:
        def hook(module, args, output):
            if not self._active:
                return
            if self.inputs is not None:
                self.inputs[name] = args[0].detach()
            if self.outputs is not None:
                self.outputs[name] = output.detach()
        return hook

    @contextlib.contextmanager
    def paused(self):
        """Leave the kept tensors alone during the block (evaluation passes)."""
        self._active = False
        try:
            yield
        finally:
            self._active = True

    def remove(self) -> None:
        """Take the hooks off the model and forget the kept tensors."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for kept in (self.inputs, self.outputs):
            if kept is not None:
                kept.clear()


class Trainer:
    """Trains one model under one pruner and schedule on resident data.

    An epoch is ``begin_epoch``, one ``advance`` per batch, ``end_epoch``; ``fit`` strings them
    together for one run, and :func:`fit_together` interleaves several runs step by step so they
    share one GPU while each stays exactly what it would be alone.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        layers: list[PrunableLayer],
        masks: MaskSet,
        pruner: Pruner,
        schedule: PruningSchedule,
        normaliser: Normaliser,
        batch_size: int,
        seed: int,
        device: torch.device,
        granularity: str,
        scope: str,
        use_cuda_graph: bool = False,
        augmenter: RandomCropFlip | None = None,
        watch: WeightWatch | None = None,
    ) -> None:
        self.model = model
        self.watch = watch if watch is not None else WeightWatch(model)
        self.outcome = TrainingOutcome()
        """This run's history and time totals so far (what :func:`fit_together` returns)."""
        self.epochs_done = 0
        """Epochs finished, their event and validation included (more than 0 after a restore)."""
        self.augmenter = augmenter
        self._draw: AugmentationDraw | None = None
        self.optimizer = optimizer
        self.layers = layers
        self.masks = masks
        self.pruner = pruner
        self.schedule = schedule
        self.normaliser = normaliser
        self.batch_size = batch_size
        self.device = device
        self.granularity = granularity
        self.scope = scope
        # The shuffle has its own generator, seeded per run, so data order never depends on how many
        # random numbers model initialisation or a pruner happened to draw.
        self.shuffle_generator = torch.Generator(device=device).manual_seed(seed)
        self.taps = LayerTaps(layers, inputs=pruner.wants_inputs, outputs=pruner.wants_activations)
        # A pruner that does not implement observe never observes: its step is captured once.
        self.observed_epochs = schedule.observed_epochs(pruner.observe_epochs) if pruner.observes() else frozenset()
        """The 1-based epochs in which the pruner's ``observe`` runs (the statistics an event reads)."""
        self.observing = False
        """Whether the current epoch's steps call ``observe``."""
        # Each run works on its own CUDA stream (captured and replayed on that same stream, which is
        # the combination that replays reliably), so several runs can overlap on one GPU.
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        if self.stream is not None:
            # Everything made so far (model, masks, data) was queued on the current stream.
            self.stream.wait_stream(torch.cuda.current_stream(device))
        # Made on the run's stream, where every step uses it.
        with self.stream_context():
            self._gradient_params = [param for _, param in layer_parameters(layers)]
            self.gradients = flat_gradients(self._gradient_params)
        """The prunable layers' gradients as one flat buffer (their ``.grad`` are views of it; see
        ``StepView.gradients``), or None where they cannot share one, once a CUDA-graph capture has
        given them its own memory, or once something replaced them (checked at each epoch's start)."""
        self.graph: StepGraph | None = None
        self.wants_graph = use_cuda_graph and device.type == "cuda" and pruner.capturable
        self.graph_error: str | None = None
        self.capture_seconds = 0.0
        """Wall-clock spent capturing the step graph (kept out of the epochs' training seconds)."""
        self.epoch_capture_seconds = 0.0
        """The part of ``capture_seconds`` spent in the current epoch."""
        self._data: ResidentSplit | None = None
        self._observed_steps = range(0)
        self._first_observed = 0
        """The epoch's first step that observes (0 when none does): the weight watch checks it, and a
        step graph is captured only after it has run eagerly."""
        self._order: torch.Tensor | None = None
        self._loss_sum = torch.zeros((), device=device)
        self._steps_done = 0
        self._epoch_started = 0.0

    @property
    def engine(self) -> str:
        """How the run trains: ``cuda-graph`` once a step graph has been captured, else ``eager``."""
        return "cuda-graph" if self.graph is not None else "eager"

    def stream_context(self):
        """Run the block on this run's stream (a no-op on the CPU)."""
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def update(self, images: torch.Tensor, labels: torch.Tensor, observe: bool = False, watched: bool = False) -> torch.Tensor:
        """Forward, backward, masking, observation and optimizer step on a device batch; returns the loss.

        Gradients are expected zeroed (or absent) on entry: the caller owns that, because a captured
        graph and an eager step zero them differently. ``observe``: whether this step calls the
        pruner's ``observe`` (see :meth:`observes_step`; only ever true for a pruner that prunes).
        ``watched`` (eager steps only: the check synchronises) checks that ``observe`` leaves the
        weights and gradients alone.
        """
        loss = F.cross_entropy(self.model(self.normaliser(images)), labels)
        loss.backward()
        # The dense reference never prunes, so its masks stay all ones: nothing to enforce.
        # A pruner that wants dense gradients observes them where backward left them, before the
        # masking (no copy: one pass over the weights fewer per step); any other sees them masked.
        dense_first = observe and self.pruner.wants_dense_gradients
        if dense_first:
            self._observe(loss, labels.shape[0], watched)
        if self.pruner.prunes:
            self.masks.apply_to_gradients()
        if observe and not dense_first:
            self._observe(loss, labels.shape[0], watched)
        self.optimizer.step()
        # No weight masking here: a pruned weight is zero, and so are its gradient (masked above) and
        # its Adam moments (zeroed at the event), so Adam's step leaves it exactly zero. ``end_epoch``
        # enforces the masks once more anyway, before anything is evaluated.
        return loss.detach()

    def observes_step(self, index: int) -> bool:
        """Whether step ``index`` (0-based, within the current epoch) calls the pruner's ``observe``:
        in an observed epoch, the steps ``Pruner.observed_steps`` names (``observe_every``,
        ``observe_window``)."""
        return self.observing and index in self._observed_steps

    def _observe(self, loss: torch.Tensor, batch_size: int, watched: bool) -> None:
        """The pruner's observation of this step (checked by the weight watch when ``watched``)."""
        dense = {layer.name: layer.weight.grad for layer in self.layers} if self.pruner.wants_dense_gradients else None
        view = StepView(loss.detach(), batch_size, self.taps.outputs, self.taps.inputs, dense, self.gradients)
        with self.watch.guard("observe", gradients=True) if watched else contextlib.nullcontext():
            self.pruner.observe(view)

    def step(self, images: torch.Tensor, labels: torch.Tensor, observe: bool = False, watched: bool = False) -> torch.Tensor:
        """One eager optimisation step on a batch already on the device (no host synchronisation
        unless ``watched``)."""
        self.optimizer.zero_grad(set_to_none=False)
        return self.update(images, labels, observe, watched)

    def steps_per_epoch(self, data: ResidentSplit) -> int:
        """Batches per epoch; the last may be smaller (nothing is dropped, as with a DataLoader)."""
        return -(-len(data) // self.batch_size)

    def begin_epoch(self, data: ResidentSplit) -> None:
        """Start an epoch: training mode, a fresh seeded permutation, counters at zero."""
        with self.stream_context():
            self.model.train()
            synchronise(self.device)
            self._epoch_started = time.perf_counter()
            self._data = data
            self._order = torch.randperm(len(data), generator=self.shuffle_generator, device=self.device)
            self._draw = self.augmenter.draw(len(data)) if self.augmenter is not None else None
            self._loss_sum.zero_()
            self._steps_done = 0
            self.epoch_capture_seconds = 0.0
            if self.gradients is not None and not holds_gradients(self.gradients, self._gradient_params):
                # Plugin code between epochs set or replaced a .grad (model.zero_grad() sets them to
                # None): the buffer no longer holds the gradients, so observe reads the .grad tensors.
                self.gradients = None
            observing = self.epochs_done + 1 in self.observed_epochs
            if self.graph is not None and (self.graph.data is not data or observing != self.observing):
                # A graph reads the split it was captured on and holds the step with or without the
                # observation; a new split, or observation switched on or off, needs a new capture.
                self.graph = None
            self.observing = observing
            self._observed_steps = self.pruner.observed_steps(self.steps_per_epoch(data))
            self._first_observed = self._observed_steps[0] if observing and self._observed_steps else 0
            if self.graph is not None:
                self.graph.load_epoch(self._order, self._draw)

    def advance(self) -> None:
        """Train on the next batch of the epoch: a graph replay where possible, else an eager step."""
        with self.stream_context():
            data, index = self._data, self._steps_done
            full_batches = len(data) // self.batch_size
            observe = self.observes_step(index)
            if self.graph is not None and index < full_batches:
                self.graph.replay(observe)
            else:
                start, stop = index * self.batch_size, (index + 1) * self.batch_size
                batch = self._order[start:stop]
                images = data.images[batch]
                if self.augmenter is not None:
                    images = self.augmenter(images, self._draw.slice(start, stop))
                # The weight watch checks (when eager) the epoch's first and last steps, and its first
                # observed step, which a window at the epoch's end puts after the first.
                watched = index in (0, self._first_observed, self.steps_per_epoch(data) - 1)
                self._loss_sum += self.step(images, data.labels[batch], observe, watched)
                # Capture only once observe has run eagerly (watched, and its lazy set-up done outside
                # a capture): with a window, the warm-up steps do not observe.
                if (self.wants_graph and self.graph is None and index + 1 >= StepGraph.WARMUP_STEPS and index + 1 < full_batches
                        and index >= self._first_observed):
                    self._capture(data, index + 1)
            self._steps_done += 1

    def release_graph(self) -> None:
        """Free the step graph now, after the device is idle.

        Destroying a graph releases memory (cuBLAS workspaces among it) tied to its capture stream,
        and CUDA streams are reused by later runs; a graph freed late, by the garbage collector in the
        middle of another run, could release memory that run's graph relies on.
        """
        synchronise(self.device)
        self.graph = None

    def _capture(self, data: ResidentSplit, next_step: int) -> None:
        # Capturing synchronises the device and empties allocator caches: a one-off cost per run,
        # timed on its own so it does not pass for training time. The device is drained first, so
        # the steps already queued count as training, not as capture.
        synchronise(self.device)
        started = time.perf_counter()
        try:
            self.graph = StepGraph(self, data, self._order, self._draw, next_step, self._loss_sum)
        except Exception as exc:  # noqa: BLE001 - an uncapturable step still trains, eagerly
            self.graph, self.wants_graph = None, False
            # A capture error (an operation a graph cannot hold) leaves the device usable; a sticky
            # error from earlier work merely surfaced here, and must stop the grid as it would anywhere.
            synchronise(self.device)
            self.graph_error = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"CUDA graph capture failed, training eagerly instead: {self.graph_error}")
        finally:
            elapsed = time.perf_counter() - started
            self.capture_seconds += elapsed
            self.epoch_capture_seconds += elapsed

    def end_epoch(self) -> tuple[float, float]:
        """Finish the epoch: (mean batch loss, training seconds without graph capture).

        The epoch's single host synchronisation.
        """
        with self.stream_context():
            # A no-op when every pruner keeps its promise (see ``update``); it keeps what is evaluated
            # and checkpointed exactly as sparse as the masks say even if one does not.
            self.masks.apply_to_weights()
            mean_loss = float(self._loss_sum) / self._steps_done
            if not math.isfinite(mean_loss):
                raise FloatingPointError(f"Training diverged: the mean training loss of the epoch is {mean_loss}.")
            synchronise(self.device)
            return mean_loss, time.perf_counter() - self._epoch_started - self.epoch_capture_seconds

    def train_epoch(self, data: ResidentSplit) -> tuple[float, float]:
        """One pass over the training split; returns (mean batch loss, seconds)."""
        self.begin_epoch(data)
        for _ in range(self.steps_per_epoch(data)):
            self.advance()
        return self.end_epoch()

    @torch.no_grad()
    def evaluate(self, data: ResidentSplit) -> Evaluation | None:
        """Mean cross-entropy and accuracy on a resident split; None for an empty split."""
        if len(data) == 0:
            return None
        with self.stream_context():
            self.model.eval()
            with self.taps.paused():
                loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
                correct = torch.zeros((), dtype=torch.long, device=self.device)
                for start in range(0, len(data), EVAL_BATCH_SIZE):
                    images = data.images[start : start + EVAL_BATCH_SIZE]
                    labels = data.labels[start : start + EVAL_BATCH_SIZE]
                    logits = self.model(self.normaliser(images))
                    loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
                    correct += (logits.argmax(dim=1) == labels).sum()
            return Evaluation(float(loss_sum) / len(data), int(correct) / len(data))

    def prune(self, plan: EventPlan, val: ResidentSplit | None = None) -> EventEntry:
        """Run one pruning event (``bench_harness.event``), validating around the cut on ``val``."""
        with self.stream_context():
            evaluate = (lambda: self.evaluate(val)) if val is not None else None
            return run_event(plan, self.pruner, self.masks, self.optimizer, self.granularity, self.scope, evaluate, self.watch)

    def finish_epoch(self, epoch: int, train_loss: float, seconds: float, val: ResidentSplit) -> EpochReport:
        """After an epoch's training: run the scheduled event, if any, validate, and report."""
        report = EpochReport(epoch, train_loss, None, 0.0, train_seconds=seconds)
        plan = self.schedule.event_after(epoch) if self.pruner.prunes else None
        if plan is not None:
            report.event = self.prune(plan, val)
            report.pruned = report.event.removed
            report.prune_seconds = report.event.seconds
        evaluation = self.evaluate(val)
        if evaluation is not None:
            report.val_loss, report.val_accuracy = evaluation.loss, evaluation.accuracy
        report.sparsity = self.masks.sparsity()
        return report

    def close(self) -> None:
        """Training is over: remove the layer hooks, so the trained model is a plain model again
        (it pickles, and measurement runs no pruner code)."""
        self.taps.remove()

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue bit for bit after :attr:`epochs_done` epochs.

        The model's and optimizer's entries are the live tensors (as their own ``state_dict``
        methods give them): serialise the result at once, between epochs.
        """
        return {
            "epochs_done": self.epochs_done,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "masks": self.masks.state_dict(),
            "pruner": self.pruner.state_dict(),
            "shuffle_generator": self.shuffle_generator.get_state(),
            "augment_generator": self.augmenter.generator.get_state() if self.augmenter is not None else None,
            "capture_seconds": self.capture_seconds,
            "watch": self.watch.state_dict(),
            "outcome": self.outcome.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`'s result; call it before the first step.

        The model, masks and the pruner's statistics are restored in place (``copy_``), as a captured
        CUDA graph requires; the optimizer's state is rebuilt by ``Optimizer.load_state_dict``, which
        is safe because no graph exists before the first step (the capture comes after the first
        eager steps of the resumed run).
        """
        if self.graph is not None or self._steps_done:
            raise RuntimeError("A trainer can only be restored before it has trained.")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.masks.load_state_dict(state["masks"])
        with self.watch.guard("load_state_dict"):
            self.pruner.load_state_dict(state["pruner"])
        self.shuffle_generator.set_state(state["shuffle_generator"].to("cpu", torch.uint8))
        if (state["augment_generator"] is None) != (self.augmenter is None):
            raise ValueError("The checkpoint and the run disagree on augmentation.")
        if self.augmenter is not None:
            self.augmenter.generator.set_state(state["augment_generator"].to("cpu", torch.uint8))
        self.capture_seconds = float(state["capture_seconds"])
        watch_state = state["watch"]
        self.watch.load_state_dict(watch_state)
        self.outcome.load_state_dict(state["outcome"])
        self.epochs_done = int(state["epochs_done"])

    def fit(self, train: ResidentSplit, val: ResidentSplit, on_epoch: Callable[[EpochReport], None] | None = None) -> TrainingOutcome:
        """Train for every epoch of the schedule, pruning after the scheduled epochs; raises on failure."""
        outcome = fit_together([self], train, val, [on_epoch])[0]
        if outcome.error is not None:
            raise outcome.error
        return outcome


def fit_together(
    trainers: list[Trainer],
    train: ResidentSplit,
    val: ResidentSplit,
    on_epoch: list[Callable[[EpochReport], None] | None] | None = None,
    after_epoch: Callable[[int], None] | None = None,
    on_done: Callable[[int], None] | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
) -> list[TrainingOutcome]:
    """Train several runs at once, interleaved step by step, each on its own stream.

    Runs share nothing but the read-only data: each has its own model, optimizer, masks, pruner,
    shuffle generator and stream, so each computes exactly what it would alone. On a GPU the
    interleaving keeps several small graphs in flight at once; on the CPU it is simply sequential
    work in a different order. With several runs, each run's ``train_seconds`` is the wall-clock of
    the whole group's epoch, since the runs share the device for all of it. A trainer restored from
    a checkpoint joins at the epoch after its :attr:`Trainer.epochs_done`.

    ``after_epoch(index)`` follows each of a run's epochs (the runner checkpoints there);
    ``on_done(index)`` is called the moment a run ends, with its trainer closed: at once when it
    fails, after the group's last epoch when it finishes; ``on_epoch_end(epoch)`` once the whole
    group is through an epoch (its runs' reports, checkpoints and endings are all out). A run that raises anything (``sys.exit``
    included) is dropped from the group with its error in ``outcome.error``; the others go on. A
    device failure, a results folder that cannot be written and Ctrl-C end the whole call.
    """
    callbacks = on_epoch or [None] * len(trainers)
    active = list(range(len(trainers)))
    last_epoch = trainers[0].schedule.epochs if trainers else 0

    def done(index: int) -> None:
        active.remove(index)
        trainers[index].close()
        if on_done is not None:
            on_done(index)

    def guarded(index: int, action: Callable[[], object]) -> object:
        try:
            return action()
        except STOPS_THE_GRID:
            raise
        except CONTAINED as exc:  # one failing run must not stop its neighbours
            if is_device_failure(exc):
                raise DeviceFailure(str(exc)) from exc
            trainers[index].outcome.error = exc
            done(index)
            return None

    try:
        for index in list(active):
            if trainers[index].epochs_done >= last_epoch:
                done(index)  # restored from a checkpoint of its last epoch: nothing left to train
        first_epoch = min((trainers[index].epochs_done for index in active), default=last_epoch) + 1
        steps = trainers[0].steps_per_epoch(train) if trainers else 0
        for epoch in range(first_epoch, last_epoch + 1):
            training = [index for index in active if trainers[index].epochs_done < epoch]
            started = time.perf_counter()
            for index in training:
                guarded(index, lambda: trainers[index].begin_epoch(train))
            for _ in range(steps):
                for index in [index for index in training if index in active]:
                    guarded(index, trainers[index].advance)
            losses = {index: guarded(index, trainers[index].end_epoch) for index in training if index in active}
            # Captures happen one after another on the host; none of them is training.
            group_seconds = time.perf_counter() - started - sum(trainers[index].epoch_capture_seconds for index in training)
            for index in [index for index in training if index in active]:
                trainer = trainers[index]
                report = guarded(index, lambda: trainer.finish_epoch(epoch, losses[index][0], group_seconds, val))
                if report is None:
                    continue
                outcome = trainer.outcome
                outcome.history.append(report)
                outcome.train_seconds += report.train_seconds
                outcome.prune_seconds += report.prune_seconds
                trainer.epochs_done = epoch
                if callbacks[index] is not None:
                    callbacks[index](report)
                if after_epoch is not None and epoch < last_epoch:
                    guarded(index, lambda: after_epoch(index))
            for index in [index for index in training if index in active and trainers[index].epochs_done >= last_epoch]:
                done(index)
            if on_epoch_end is not None:
                on_epoch_end(epoch)
            if not active:
                break
    finally:
        for trainer in trainers:
            trainer.close()
    return [trainer.outcome for trainer in trainers]


class StepGraph:
    """The training step of one run, captured as a CUDA graph and replayed for every full batch.

    The graph reads the batch's indices from a static ``[steps, batch]`` buffer at a device-side
    cursor that it advances itself, so a replay needs no host work at all. Masks, optimizer state and
    the pruner's statistics are updated in place between replays, so pruning never forces a
    re-capture; switching the observation on or off (``Trainer.observing``) does. A pruner that
    observes only some steps of an epoch (``Pruner.observe_every``, ``Pruner.observe_window``) gets
    two graphs of the step, with and without ``observe``, sharing the batch buffers, the cursor and
    the gradients; each replay picks one. A graph holds raw pointers: this object and its trainer
    keep every tensor it touches referenced for as long as it may be replayed.
    """

    WARMUP_STEPS = 3
    """Eager steps before capture (real training steps: they initialise Adam's state and cuBLAS)."""

    def __init__(
        self, trainer: Trainer, data: ResidentSplit, order: torch.Tensor, draw: AugmentationDraw | None, next_step: int, loss_sum: torch.Tensor
    ) -> None:
        # No reference back to the trainer: a graph must be freed the moment its run is done with it
        # (see Trainer.release_graph), not whenever the cycle collector gets round to it.
        self.data = data
        self.batch_size = trainer.batch_size
        self.full_batches = len(data) // self.batch_size
        shape, device = (self.full_batches, self.batch_size), trainer.device
        self.order = torch.empty(shape, dtype=torch.long, device=device)
        self.draw = None if draw is None else AugmentationDraw(
            torch.empty(shape, dtype=torch.long, device=device), torch.empty(shape, dtype=torch.long, device=device),
            torch.empty(shape, dtype=torch.bool, device=device),
        )
        self.cursor = torch.zeros((), dtype=torch.long, device=device)
        self.loss_sum = loss_sum
        self.load_epoch(order, draw, start_step=next_step)
        # One graph per observation flag the epoch's steps need (two when only some steps observe).
        flags = {trainer.observes_step(index) for index in range(self.full_batches)}
        self.graphs: dict[bool, torch.cuda.CUDAGraph] = {}
        # Gradients must be born inside the first capture, from its private memory pool. A second
        # graph zeroes and reuses them rather than making its own, so whichever graph ran last,
        # ``.grad`` holds that step's gradients (eager steps and events read the same tensors).
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.gradients = None
        for number, observe in enumerate(sorted(flags, reverse=True)):
            self.graphs[observe] = self._record(trainer, functools.partial(self._step, trainer, observe=observe, zero_grads=number > 0))
        # Capture records without executing: the first replay performs step `next_step` for real.

    def _step(self, trainer: Trainer, observe: bool, zero_grads: bool = False) -> None:
        """The captured work: the batch at the cursor, one full training step, the cursor moved on.

        ``zero_grads``: zero the existing gradients first (a graph captured after another one, whose
        backward then adds into the first graph's gradients instead of allocating its own)."""
        if zero_grads:
            trainer.optimizer.zero_grad(set_to_none=False)
        row = self.cursor.view(1)
        index = self.order.index_select(0, row).view(-1)
        images = self.data.images.index_select(0, index)
        if self.draw is not None:
            images = trainer.augmenter(images, AugmentationDraw(*(t.index_select(0, row).view(-1) for t in self._draw_tensors())))
        loss = trainer.update(images, self.data.labels.index_select(0, index), observe)
        self.loss_sum.add_(loss)
        self.cursor.add_(1)

    @staticmethod
    def _record(trainer: Trainer, step: Callable[[], None]) -> torch.cuda.CUDAGraph:
        """Capture ``step`` once on the run's stream (where it will be replayed)."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=trainer.stream):
            step()
        return graph

    def _draw_tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return (self.draw.shift_rows, self.draw.shift_columns, self.draw.flip)

    def load_epoch(self, order: torch.Tensor, draw: AugmentationDraw | None = None, start_step: int = 0) -> None:
        """Point the graph at an epoch's permutation and augmentation (full batches only) and a starting step."""
        used = self.full_batches * self.batch_size
        self.order.copy_(order[:used].view(self.full_batches, self.batch_size))
        if self.draw is not None:
            for static, fresh in zip(self._draw_tensors(), (draw.shift_rows, draw.shift_columns, draw.flip)):
                static.copy_(fresh[:used].view(self.full_batches, self.batch_size))
        self.cursor.fill_(start_step)

    def replay(self, observe: bool = False) -> None:
        """One training step, with or without the pruner's observation."""
        self.graphs[observe].replay()
