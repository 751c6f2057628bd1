"""The pruning event: the one place where a model loses (and may regain) connections or neurons.

An event runs six steps, always in this order:

1. **score**: the pruner scores every element of every layer it may prune (lower goes first);
2. **allocate**: the allocation (``--scope``) turns the schedule's kept fraction into, per layer, the
   alive elements to remove (``bench_harness.allocation``); a pruner that regrows has ``g`` more of
   its lowest-scored survivors removed per layer;
3. **drop**: the masks lose the chosen elements and the weights are zeroed;
4. **compensate** (pruners that implement it): each layer's surviving weights change by what the
   pruner returns, applied to survivors only; their optimizer state is left as it is;
5. **regrow** (pruners that implement ``grow_scores``, connections only): per layer, the ``g``
   non-alive connections with the highest grow scores come back, at zero, with zeroed optimizer
   state, so each layer ends with exactly the allocation's count;
6. **enforce**: pruned weights and their optimizer state are zeroed, and the pruner's
   ``after_prune`` runs (to restart its statistics).

Everything is updated in place, so a captured CUDA graph of the training step keeps working. The
event returns an :class:`EventEntry` for the run record: counts per layer before and after, what was
dropped and regrown, the seconds the event's own work took, and the validation loss and accuracy
just before the cut, just after it, and after compensation, so the damage of every cut and what
compensation repaired can be read from every run.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from bench_harness.allocation import allocate, mark_highest, mark_lowest, round_half_up
from bench_harness.device import synchronise
from bench_harness.errors import PluginTypeFault, PluginValueFault
from bench_harness.masks import MaskSet
from bench_harness.pruner import Cut, PrunableLayer, Pruner
from bench_harness.schedule import EventPlan
from bench_harness.watch import WeightWatch


@dataclass(frozen=True)
class Evaluation:
    """Mean cross-entropy and accuracy (a fraction) of the model on one split (``Trainer.evaluate``)."""

    loss: float
    accuracy: float


@dataclass
class EventEntry:
    """What one event did, as the run record stores it (``record["events"]``)."""

    epoch: int
    kind: str
    """``prune`` (a scheduled cut, possibly with regrowth) or ``regrow`` (a swap between cuts)."""
    target_density: float | None
    """The schedule's kept fraction after the event (None for a regrow-only event)."""
    granularity: str
    alive_weights_before: dict[str, int]
    alive_weights_after: dict[str, int]
    alive_units_before: dict[str, int]
    alive_units_after: dict[str, int]
    dropped: dict[str, int]
    """Elements removed per layer: connections, or units for neuron pruning (regrowth's extra included)."""
    regrown: dict[str, int]
    """Connections regrown per layer."""
    seconds: float = 0.0
    """The event's own work (scoring, allocation, masks, compensation, regrowth); the diagnostic
    evaluations below are not included."""
    val_loss_before: float | None = None
    val_accuracy_before: float | None = None
    val_loss_after_cut: float | None = None
    val_accuracy_after_cut: float | None = None
    val_loss_after_compensation: float | None = None
    """None when the pruner does not compensate."""
    val_accuracy_after_compensation: float | None = None

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)

    @property
    def removed(self) -> int:
        """Net elements removed (dropped minus regrown)."""
        return sum(self.dropped.values()) - sum(self.regrown.values())


class _Stopwatch:
    """Adds up the seconds of the event's own work, leaving out the diagnostic evaluations."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0
        self._started: float | None = None

    def start(self) -> None:
        synchronise(self.device)
        self._started = time.perf_counter()

    def stop(self) -> None:
        synchronise(self.device)
        self.seconds += time.perf_counter() - self._started


def domain(layers: list[PrunableLayer], granularity: str) -> list[PrunableLayer]:
    """The layers whose elements an event may remove: all for connections; all but the output
    layer for neurons (its units are the classes)."""
    return list(layers) if granularity == "connections" else [layer for layer in layers if not layer.is_output]


def _checked(pruner: Pruner, what: str, layer: PrunableLayer, values: object, shape: torch.Size) -> torch.Tensor:
    """A pruner's per-element answer, validated: a floating tensor of the right shape without NaN."""
    if not torch.is_tensor(values):
        raise PluginTypeFault(f"Pruner '{pruner.name}' returned {type(values).__name__} from {what} for layer {layer.name}, not a tensor.")
    if tuple(values.shape) != tuple(shape):
        raise PluginValueFault(
            f"Pruner '{pruner.name}' returned {what} of shape {tuple(values.shape)} for layer {layer.name}, expected {tuple(shape)}."
        )
    if not values.is_floating_point():
        raise PluginTypeFault(f"Pruner '{pruner.name}' returned {what} of dtype {values.dtype} for layer {layer.name}; use a floating dtype.")
    values = values.detach().float().to(layer.weight.device)
    if bool(torch.isnan(values).any()):
        raise PluginValueFault(f"Pruner '{pruner.name}' returned {what} with NaN for layer {layer.name}.")
    return values


def run_event(
    plan: EventPlan,
    pruner: Pruner,
    masks: MaskSet,
    optimizer: torch.optim.Optimizer,
    granularity: str,
    scope: str,
    evaluate: Callable[[], Evaluation | None] | None = None,
    watch: WeightWatch | None = None,
) -> EventEntry:
    """Run one pruning event (score, allocate, drop, compensate, regrow, enforce) and describe it.

    With a ``watch``, every call into the pruner is checked for changing the weights itself.
    """
    guard = watch.guard if watch is not None else lambda method: contextlib.nullcontext()
    layers = domain(masks.layers, granularity)
    device = masks.layers[0].weight.device
    connections = granularity == "connections"
    regrows = plan.regrow_fraction > 0 and connections and pruner.regrows()
    entry = EventEntry(
        plan.epoch, plan.kind, plan.density, granularity, masks.alive_weight_counts(), {}, masks.alive_unit_counts(), {}, {}, {},
    )
    _record(entry, "before", evaluate)
    clock = _Stopwatch(device)
    clock.start()

    with torch.no_grad():
        # 1. score
        alive = {
            layer.name: masks.alive_connections(layer.name) if connections else masks.alive_units[layer.name].clone()
            for layer in layers
        }
        with guard("score"):
            answers = {layer.name: pruner.score(layer, granularity) for layer in layers}
        scores = {layer.name: _checked(pruner, "scores", layer, answers[layer.name], alive[layer.name].shape) for layer in layers}
        # 2. allocate (plus regrowth's extra drops, so the count after regrowth is the allocation's)
        if plan.density is None:
            drops = {name: torch.zeros_like(mask) for name, mask in alive.items()}
        else:
            drops = allocate(scope, scores, alive, plan.density)
        swaps = {}
        if regrows:
            for name in drops:
                kept = alive[name] & ~drops[name]
                swaps[name] = round_half_up(plan.regrow_fraction * int(kept.sum()))
                drops[name] |= mark_lowest(scores[name], kept, swaps[name])
        # 3. drop
        weights_alive_before = {layer.name: masks.alive_connections(layer.name) for layer in masks.layers}
        compensates = pruner.compensates()
        weights_before = {layer.name: layer.weight.detach().clone() for layer in masks.layers} if compensates else {}
        for name, chosen in drops.items():
            if connections:
                masks.drop_connections(name, chosen)
            else:
                masks.drop_units(name, chosen)
        masks.apply_to_weights()
        entry.dropped = {name: int(chosen.sum()) for name, chosen in drops.items()}
        entry.regrown = {name: 0 for name in drops}
    clock.stop()
    _record(entry, "after_cut", evaluate)

    # 4. compensate
    if compensates:
        clock.start()
        with torch.no_grad():
            for layer in masks.layers:
                alive_now = masks.alive_connections(layer.name)
                cut = Cut(weights_alive_before[layer.name] & ~alive_now, alive_now, weights_before[layer.name])
                with guard("compensate"):
                    delta = pruner.compensate(layer, cut)
                if delta is not None:
                    delta = _checked(pruner, "a compensation", layer, delta, layer.weight.shape)
                    if not bool(torch.isfinite(delta).all()):
                        raise PluginValueFault(f"Pruner '{pruner.name}' returned a non-finite compensation for layer {layer.name}.")
                    layer.weight.add_(delta * masks.weight[layer.name])
        clock.stop()
        _record(entry, "after_compensation", evaluate)

    clock.start()
    with torch.no_grad():
        # 5. regrow
        if regrows:
            for layer in layers:
                with guard("grow_scores"):
                    answer = pruner.grow_scores(layer)
                grow = _checked(pruner, "grow scores", layer, answer, layer.weight.shape)
                chosen = mark_highest(grow, ~masks.alive_connections(layer.name), swaps[layer.name])
                masks.grow_connections(layer.name, chosen)
                layer.weight.masked_fill_(chosen, 0.0)
                masks.zero_optimizer_state_at(optimizer, layer, chosen)
                entry.regrown[layer.name] = int(chosen.sum())
        # 6. enforce
        masks.apply_to_weights()
        masks.apply_to_optimizer_state(optimizer)
    with guard("after_prune"):
        pruner.after_prune()
    clock.stop()
    entry.seconds = clock.seconds
    entry.alive_weights_after = masks.alive_weight_counts()
    entry.alive_units_after = masks.alive_unit_counts()
    return entry


def _record(entry: EventEntry, moment: str, evaluate: Callable[[], Evaluation | None] | None) -> None:
    """Store the validation loss and accuracy at one moment of the event (nothing without a split)."""
    result = evaluate() if evaluate is not None else None
    if result is not None:
        setattr(entry, f"val_loss_{moment}", result.loss)
        setattr(entry, f"val_accuracy_{moment}", result.accuracy)
