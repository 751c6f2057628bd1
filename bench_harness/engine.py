"""The training engine: one run's training loop, evaluation and pruning events.

Data lives on the run's device as uint8 tensors and is normalised on the fly; batches are drawn by
index from a per-run seeded permutation, so no DataLoader, worker process or host-to-device copy
sits in the loop. The step (forward, loss, backward, gradient masking, the pruner's observation,
optimizer step, weight masking) touches only preallocated tensors and never synchronises with the
host, which is what lets the GPU path capture it as a CUDA graph.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from bench_harness.masks import MaskSet
from bench_harness.pruner import PrunableLayer, Pruner, StepView
from bench_harness.schedule import PruningSchedule

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


@dataclass
class EpochReport:
    """What one epoch produced, for the run's history and the progress bar."""

    epoch: int
    train_loss: float
    val_accuracy: float | None
    sparsity: float
    pruned: int = 0
    train_seconds: float = 0.0
    prune_seconds: float = 0.0


@dataclass
class TrainingOutcome:
    """The trained run: its history and the times the engine measured."""

    history: list[EpochReport] = field(default_factory=list)
    train_seconds: float = 0.0
    prune_seconds: float = 0.0


def synchronise(device: torch.device) -> None:
    """Wait for queued device work, so wall-clock times cover it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trainer:
    """Trains one model under one pruner and schedule on resident data."""

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
    ) -> None:
        self.model = model
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
        self.activations: dict[str, torch.Tensor] | None = None
        if pruner.wants_activations:
            self.activations = {}
            for layer in layers:
                layer.module.register_forward_hook(self._keep_activation(layer.name))

    def _keep_activation(self, name: str) -> Callable:
        def hook(module, inputs, output):
            self.activations[name] = output
        return hook

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One optimisation step on a batch already on the device; returns the loss tensor (no sync)."""
        self.optimizer.zero_grad(set_to_none=False)
        loss = F.cross_entropy(self.model(self.normaliser(images)), labels)
        loss.backward()
        self.masks.apply_to_gradients()
        if self.pruner.prunes:
            self.pruner.observe(StepView(loss.detach(), labels.shape[0], self.activations))
        self.optimizer.step()
        self.masks.apply_to_weights()
        return loss.detach()

    def train_epoch(self, data: ResidentSplit) -> tuple[float, float]:
        """One pass over the training split; returns (mean batch loss, seconds)."""
        self.model.train()
        synchronise(self.device)
        started = time.perf_counter()
        order = torch.randperm(len(data), generator=self.shuffle_generator, device=self.device)
        loss_sum = torch.zeros((), device=self.device)
        batches = 0
        for start in range(0, len(data), self.batch_size):
            index = order[start : start + self.batch_size]
            loss_sum += self.step(data.images[index], data.labels[index])
            batches += 1
        mean_loss = float(loss_sum) / batches  # the epoch's single host synchronisation
        return mean_loss, time.perf_counter() - started

    @torch.no_grad()
    def evaluate(self, data: ResidentSplit) -> float | None:
        """Accuracy (fraction) on a resident split; None for an empty split."""
        if len(data) == 0:
            return None
        self.model.eval()
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for start in range(0, len(data), EVAL_BATCH_SIZE):
            images = data.images[start : start + EVAL_BATCH_SIZE]
            labels = data.labels[start : start + EVAL_BATCH_SIZE]
            correct += (self.model(self.normaliser(images)).argmax(dim=1) == labels).sum()
        return int(correct) / len(data)

    def prune_now(self) -> int:
        """One pruning event: ask the pruner for scores, update the masks, enforce them everywhere."""
        scores = {layer.name: self.pruner.score(layer, self.granularity) for layer in self.layers}
        removed = self.masks.prune(scores, self.schedule.rate, self.scope, self.granularity)
        self.masks.apply_to_weights()
        self.masks.apply_to_optimizer_state(self.optimizer)
        self.pruner.after_prune()
        return removed

    def fit(self, train: ResidentSplit, val: ResidentSplit, on_epoch: Callable[[EpochReport], None] | None = None) -> TrainingOutcome:
        """Train for every epoch of the schedule, pruning after the scheduled epochs."""
        outcome = TrainingOutcome()
        for epoch in range(1, self.schedule.epochs + 1):
            train_loss, seconds = self.train_epoch(train)
            report = EpochReport(epoch, train_loss, None, 0.0, train_seconds=seconds)
            if self.schedule.prunes_after(epoch):
                synchronise(self.device)
                started = time.perf_counter()
                report.pruned = self.prune_now()
                synchronise(self.device)
                report.prune_seconds = time.perf_counter() - started
            report.val_accuracy = self.evaluate(val)
            report.sparsity = self.masks.sparsity()
            outcome.history.append(report)
            outcome.train_seconds += report.train_seconds
            outcome.prune_seconds += report.prune_seconds
            if on_epoch is not None:
                on_epoch(report)
        return outcome
