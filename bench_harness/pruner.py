"""The pruner contract: what a pruning criterion is allowed to do, and the views it gets.

A pruner only *scores*: for each prunable layer it returns one number per connection (a tensor shaped
like the weight) or per neuron (one per output unit); lower means "prune first". The harness owns
everything else (the schedule, the fraction, the scope, the masks and their enforcement), so every
criterion is compared on equal terms and a plugin stays a few dozen lines.

Between pruning events a pruner may watch every training step through :meth:`Pruner.observe`. That
method runs inside the training step, which on a GPU is captured and replayed as a CUDA graph, so it
must be pure tensor work on preallocated tensors: no ``.item()``, no Python branching on tensor values,
no new tensors kept across steps. :class:`RunningMean` is the building block for such statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

GRANULARITIES = ("connections", "neurons")
"""``connections``: individual weights. ``neurons``: units of FC layers, channels of conv layers."""

SCOPES = ("layer", "global", "erk", "lamp")
"""How an event shares its removals between layers (the allocation): ``layer``: every prunable layer
keeps the same fraction; ``global``: one ranking of the scores across layers; ``erk``: per-layer
densities from the Erdős–Rényi-kernel rule (Evci et al. 2020); ``lamp``: one ranking of
LAMP-normalised scores (Lee et al. 2021)."""

SCHEDULES = ("fixed", "cubic")
"""How the kept fraction falls from event to event: ``fixed``: the same fraction of the alive
elements per event; ``cubic``: Zhu & Gupta's (2017) curve, fast first and slow at the end."""


@dataclass(eq=False)
class PrunableLayer:
    """One ``nn.Linear`` or ``nn.Conv2d`` of the model, as the harness and the pruners see it."""

    name: str
    """The module's name in ``model.named_modules()``."""
    module: nn.Module
    index: int
    is_output: bool
    """The last prunable layer: its units (the classes) are never pruned; its connections may be."""
    next: "PrunableLayer | None" = field(default=None, repr=False)
    """The layer that reads this layer's units, or None for the output layer."""

    @property
    def weight(self) -> nn.Parameter:
        """The layer's weight parameter (out_units first)."""
        return self.module.weight

    @property
    def bias(self) -> nn.Parameter | None:
        """The layer's bias parameter, if it has one."""
        return self.module.bias

    @property
    def units(self) -> int:
        """Output features (Linear) or output channels (Conv2d)."""
        return self.module.weight.shape[0]

    def incoming_per_unit(self, per_weight: torch.Tensor) -> torch.Tensor:
        """Sum a weight-shaped tensor over each unit's incoming connections: shape ``(units,)``."""
        return per_weight.reshape(self.units, -1).sum(dim=1)

    def outgoing_per_unit(self, next_per_weight: torch.Tensor) -> torch.Tensor:
        """Sum a tensor shaped like the *next* layer's weight over the connections each unit feeds.

        A conv layer feeding a fully-connected layer through a flatten owns a contiguous block of the
        next layer's input columns (NCHW order), so the block is summed too.
        """
        if self.next is None:
            raise ValueError(f"Layer {self.name} is the output layer and feeds no other layer.")
        per_input = next_per_weight.transpose(0, 1).reshape(next_per_weight.shape[1], -1).sum(dim=1)
        return per_input.reshape(self.units, -1).sum(dim=1)


def find_prunable_layers(model: nn.Module) -> list[PrunableLayer]:
    """Every Linear and Conv2d of a feed-forward chain, in order, linked to the layer that reads it."""
    found = [(name, module) for name, module in model.named_modules() if isinstance(module, (nn.Linear, nn.Conv2d))]
    if not found:
        raise ValueError("The model has no nn.Linear or nn.Conv2d layer to prune.")
    layers = [PrunableLayer(name, module, index, index == len(found) - 1) for index, (name, module) in enumerate(found)]
    for layer, following in zip(layers, layers[1:]):
        fan_in = following.weight.shape[1]
        if fan_in % layer.units != 0:
            raise ValueError(
                f"Layer {following.name} reads {fan_in} inputs, which is not a whole number of the "
                f"{layer.units} units of {layer.name}: the model is not a simple chain, so neuron pruning cannot map it."
            )
        layer.next = following
    return layers


@dataclass
class PruningContext:
    """What a pruner is given when a run starts."""

    model: nn.Module
    layers: list[PrunableLayer]
    optimizer: torch.optim.Optimizer
    seed: int
    """The run's seed: a stochastic criterion must draw from it so a run can be repeated exactly."""
    device: torch.device
    granularity: str
    batch_size: int


@dataclass
class StepView:
    """One training step as :meth:`Pruner.observe` sees it, after backward and before the update.

    Gradients are on the layers' parameters (``layer.weight.grad``), already masked; the optimizer
    state is in ``context.optimizer.state``.
    """

    loss: torch.Tensor
    """The mean cross-entropy of the batch (a 0-d tensor; never call ``.item()`` on it here)."""
    batch_size: int
    activations: dict[str, torch.Tensor] | None = None
    """Each prunable layer's output for this batch, only for pruners with ``wants_activations``."""


class Pruner:
    """Base class of every pruning criterion; subclass it and register the class.

    Class attributes describe the pruner to the harness and to ``bench list``; an instance lives for
    one run.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    granularities: ClassVar[tuple[str, ...]] = GRANULARITIES
    capturable: ClassVar[bool] = True
    """True when :meth:`observe` is pure tensor work that a CUDA graph can capture."""
    prunes: ClassVar[bool] = True
    """False only for the dense reference, which the harness then never prunes."""
    wants_activations: ClassVar[bool] = False
    """True to receive each prunable layer's output in ``StepView.activations``."""

    def __init__(self, context: PruningContext) -> None:
        self.context = context

    @property
    def layers(self) -> list[PrunableLayer]:
        """The model's prunable layers, in order."""
        return self.context.layers

    def observe(self, step: StepView) -> None:
        """Accumulate statistics from one training step (optional; tensor work only)."""

    def score(self, layer: PrunableLayer, granularity: str) -> torch.Tensor:
        """Importance of each connection (weight-shaped) or neuron (shape ``(units,)``); lower goes first."""
        raise NotImplementedError(f"Pruner '{self.name}' does not implement score().")

    def after_prune(self) -> None:
        """Called after each pruning event, e.g. to restart statistics (reset tensors in place)."""


class RunningMean:
    """A per-element running mean of a statistic over the steps since the last reset.

    Kept as two preallocated tensors updated in place, so adding to it inside a CUDA-graph-captured
    training step is legal and costs one fused multiply-add per element.
    """

    def __init__(self, like: torch.Tensor) -> None:
        self.total = torch.zeros_like(like, dtype=torch.float32)
        self.count = torch.zeros((), dtype=torch.float32, device=like.device)

    def add_(self, value: torch.Tensor | float) -> None:
        """Add one step's value (same shape as ``like``, or a number)."""
        self.total.add_(value)
        self.count.add_(1.0)

    def mean(self) -> torch.Tensor:
        """The mean so far (zeros before any step)."""
        return self.total / self.count.clamp(min=1.0)

    def reset_(self) -> None:
        """Forget everything, in place."""
        self.total.zero_()
        self.count.zero_()


class RunningMeans:
    """Running means of several tensors updated together, one fused kernel per update.

    A pruner that keeps a statistic per layer would otherwise launch one small kernel per layer and
    per operation every step; at batch 64 on a GPU those launches, not the arithmetic, are the cost.
    The ``torch._foreach_*`` operations do the whole list at once and are capturable in a CUDA graph.
    """

    def __init__(self, likes: list[torch.Tensor]) -> None:
        self.totals = [torch.zeros_like(like, dtype=torch.float32) for like in likes]
        self.count = torch.zeros((), dtype=torch.float32, device=likes[0].device)

    def add_(self, values: list[torch.Tensor]) -> None:
        """Add one step's values (one per tensor, same shapes)."""
        torch._foreach_add_(self.totals, values)
        self.count.add_(1.0)

    def add_products_(self, first: list[torch.Tensor], second: list[torch.Tensor], scale: float = 1.0) -> None:
        """Add one step's ``scale * first * second`` elementwise, fused."""
        torch._foreach_addcmul_(self.totals, first, second, value=scale)
        self.count.add_(1.0)

    def mean(self, index: int) -> torch.Tensor:
        """The mean so far of tensor ``index`` (zeros before any step)."""
        return self.totals[index] / self.count.clamp(min=1.0)

    def reset_(self) -> None:
        """Forget everything, in place."""
        torch._foreach_zero_(self.totals)
        self.count.zero_()


def validate_pruner_class(pruner_class: Any) -> None:
    """Refuse a registered object that cannot work as a pruner, with a sentence the author can act on."""
    if not (isinstance(pruner_class, type) and issubclass(pruner_class, Pruner)):
        raise TypeError(f"register_pruners got {pruner_class!r}, not a subclass of bench_harness.pruner.Pruner")
    unknown = set(pruner_class.granularities) - set(GRANULARITIES)
    if unknown:
        raise TypeError(f"pruner '{pruner_class.name}' declares unknown granularities {sorted(unknown)}")


