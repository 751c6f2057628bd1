"""Masks: which connections and neurons are pruned, how a pruning event picks them, and enforcement.

The harness owns the masks; pruners never touch them. Masks are float tensors shaped like the
parameters they cover and are only ever updated in place, so a CUDA graph that multiplies by them
keeps seeing the current ones without being re-captured.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

from bench_harness.pruner import PrunableLayer


def count_to_prune(fraction: float, alive: int) -> int:
    """How many of ``alive`` elements one event removes: ``fraction`` of them, rounded half up."""
    # The rate as written (0.7, not 0.69999...), so 0.7 x 45 = 31.5 rounds to 32 as the README says.
    exact = Fraction(repr(float(fraction))) * alive
    return min(alive, int(math.floor(exact + Fraction(1, 2))))


class MaskSet:
    """The pruning state of one model: per-layer weight masks, bias masks and alive units."""

    def __init__(self, layers: list[PrunableLayer]) -> None:
        self.layers = layers
        self.weight = {layer.name: torch.ones_like(layer.weight) for layer in layers}
        self.bias = {layer.name: torch.ones_like(layer.bias) for layer in layers if layer.bias is not None}
        self.alive_units = {layer.name: torch.ones(layer.units, dtype=torch.bool, device=layer.weight.device) for layer in layers}
        # The same masks as parallel lists, so enforcement is one fused kernel for all parameters.
        self._params = [layer.weight for layer in layers] + [layer.bias for layer in layers if layer.name in self.bias]
        self._masks = [self.weight[layer.name] for layer in layers] + [self.bias[layer.name] for layer in layers if layer.name in self.bias]

    # -- enforcement (called every step; in place, no host synchronisation) -------------------------

    @torch.no_grad()
    def apply_to_weights(self) -> None:
        """Zero every pruned weight and bias (after each optimizer step)."""
        torch._foreach_mul_(self._params, self._masks)

    @torch.no_grad()
    def apply_to_gradients(self) -> None:
        """Zero the gradients of pruned parameters (before the optimizer step).

        Masking the gradient as well as the weight keeps Adam's moments of a pruned weight at zero,
        so they carry no stale signal into criteria that read the optimizer state.
        """
        pairs = [(param.grad, mask) for param, mask in zip(self._params, self._masks) if param.grad is not None]
        if pairs:
            grads, masks = zip(*pairs)
            torch._foreach_mul_(list(grads), list(masks))

    @torch.no_grad()
    def apply_to_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        """Zero the optimizer's per-element state (e.g. Adam's moments) of pruned parameters."""
        for layer in self.layers:
            pairs = [(layer.weight, self.weight[layer.name])]
            if layer.name in self.bias:
                pairs.append((layer.bias, self.bias[layer.name]))
            for param, mask in pairs:
                for value in optimizer.state.get(param, {}).values():
                    if torch.is_tensor(value) and value.shape == param.shape:
                        value.mul_(mask)

    # -- counting -----------------------------------------------------------------------------------

    def prunable_weights(self) -> int:
        """All weights of prunable layers (biases are not counted, as in the pruning literature)."""
        return sum(mask.numel() for mask in self.weight.values())

    def alive_weights(self) -> int:
        """Weights not pruned."""
        return int(sum(int(mask.count_nonzero()) for mask in self.weight.values()))

    def sparsity(self) -> float:
        """Pruned prunable weights / all prunable weights."""
        return 1.0 - self.alive_weights() / self.prunable_weights()

    def alive_unit_counts(self) -> dict[str, int]:
        """Alive units per layer."""
        return {name: int(alive.sum()) for name, alive in self.alive_units.items()}

    # -- pruning events -----------------------------------------------------------------------------

    @torch.no_grad()
    def prune(self, scores: dict[str, torch.Tensor], fraction: float, scope: str, granularity: str) -> int:
        """Remove ``fraction`` of the still-alive elements with the lowest scores; returns how many."""
        if granularity == "connections":
            return self._prune_connections(scores, fraction, scope)
        if granularity == "neurons":
            return self._prune_neurons(scores, fraction, scope)
        raise ValueError(f"Unknown granularity '{granularity}'.")

    def _prune_connections(self, scores: dict[str, torch.Tensor], fraction: float, scope: str) -> int:
        alive = {layer.name: self.weight[layer.name].bool() for layer in self.layers}
        chosen = _select_lowest(self.layers, scores, alive, fraction, scope)
        for name, remove in chosen.items():
            self.weight[name].masked_fill_(remove, 0.0)
        return int(sum(int(remove.sum()) for remove in chosen.values()))

    def _prune_neurons(self, scores: dict[str, torch.Tensor], fraction: float, scope: str) -> int:
        hidden = [layer for layer in self.layers if not layer.is_output]
        chosen = _select_lowest(hidden, scores, self.alive_units, fraction, scope)
        removed = 0
        for layer in hidden:
            remove = chosen[layer.name]
            # A layer with no unit left would cut the network in two; keep its best unit.
            if bool((self.alive_units[layer.name] & ~remove).sum() == 0):
                keep = torch.where(self.alive_units[layer.name], scores[layer.name].float(), float("-inf")).argmax()
                remove[keep] = False
            self.alive_units[layer.name] &= ~remove
            removed += int(remove.sum())
        self._mask_dead_units()
        return removed

    def _mask_dead_units(self) -> None:
        """Zero a dead unit's incoming weights and bias, and its outgoing weights in the next layer."""
        for layer in self.layers:
            dead = ~self.alive_units[layer.name]
            self.weight[layer.name][dead] = 0.0
            if layer.name in self.bias:
                self.bias[layer.name][dead] = 0.0
            if layer.next is not None:
                following = self.weight[layer.next.name]
                per_unit_inputs = following.shape[1] // layer.units
                dead_inputs = dead.repeat_interleave(per_unit_inputs)
                following[:, dead_inputs] = 0.0


def _select_lowest(
    layers: list[PrunableLayer],
    scores: dict[str, torch.Tensor],
    alive: dict[str, torch.Tensor],
    fraction: float,
    scope: str,
) -> dict[str, torch.Tensor]:
    """Boolean masks of the alive elements to remove: the lowest-scored, per layer or across layers."""
    ranked = {}
    for layer in layers:
        score = scores[layer.name].detach().float()
        if score.shape != alive[layer.name].shape:
            raise ValueError(
                f"Scores for layer {layer.name} have shape {tuple(score.shape)}, expected {tuple(alive[layer.name].shape)}."
            )
        if bool(torch.isnan(score).any()):
            raise ValueError(f"Scores for layer {layer.name} contain NaN.")
        ranked[layer.name] = score

    chosen = {layer.name: torch.zeros_like(alive[layer.name]) for layer in layers}
    if scope == "layer":
        for layer in layers:
            count = count_to_prune(fraction, int(alive[layer.name].sum()))
            _mark_lowest(ranked[layer.name].flatten(), alive[layer.name].flatten(), count, chosen[layer.name].view(-1))
    elif scope == "global":
        flat = torch.cat([ranked[layer.name].flatten() for layer in layers])
        flat_alive = torch.cat([alive[layer.name].flatten() for layer in layers])
        count = count_to_prune(fraction, int(flat_alive.sum()))
        marks = torch.zeros_like(flat, dtype=torch.bool)
        _mark_lowest(flat, flat_alive, count, marks)
        offset = 0
        for layer in layers:
            size = ranked[layer.name].numel()
            chosen[layer.name].view(-1).copy_(marks[offset : offset + size])
            offset += size
    else:
        raise ValueError(f"Unknown scope '{scope}'.")
    return chosen


def _mark_lowest(values: torch.Tensor, alive: torch.Tensor, count: int, marks: torch.Tensor) -> None:
    """Mark the ``count`` lowest-valued alive positions; already-pruned ones are never candidates,
    whatever their score (a pruner may score a weight +inf to mean "never prune")."""
    if count <= 0:
        return
    candidates = alive.nonzero().flatten()
    # A stable sort makes ties break by position, so the same scores always prune the same elements.
    order = torch.sort(values[candidates], stable=True).indices[:count]
    marks[candidates[order]] = True
