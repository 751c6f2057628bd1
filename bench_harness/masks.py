"""Masks: which connections and neurons are pruned, and their enforcement.

The harness owns the masks; pruners never touch them. Masks are float tensors shaped like the
parameters they cover and are only ever updated in place, so a CUDA graph that multiplies by them
keeps seeing the current ones without being re-captured. What to remove is decided by the pruning
event (``bench_harness.event``); this module only keeps the state and enforces it.
"""

from __future__ import annotations

import torch

from bench_harness.pruner import PrunableLayer


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

    # -- enforcement (in place, no host synchronisation) ---------------------------------------------

    @torch.no_grad()
    def apply_to_weights(self) -> None:
        """Zero every pruned weight and bias (at each event and at the end of each epoch)."""
        torch._foreach_mul_(self._params, self._masks)

    @torch.no_grad()
    def apply_to_gradients(self) -> None:
        """Zero the gradients of pruned parameters (before every optimizer step).

        This is what keeps a pruned weight at zero between events: with a zero gradient and the
        Adam moments zeroed at the event (:meth:`apply_to_optimizer_state`), Adam moves it by
        exactly zero, so the weights need no masking after each step. It also keeps those moments
        free of stale signal for criteria that read the optimizer state.
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

    def alive_weight_counts(self) -> dict[str, int]:
        """Alive weights per layer."""
        return {name: int(mask.count_nonzero()) for name, mask in self.weight.items()}

    def alive_connections(self, name: str) -> torch.Tensor:
        """Boolean, weight-shaped: the layer's alive connections."""
        return self.weight[name].bool()

    # -- checkpoints --------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Copies of every mask and of the alive units, for a checkpoint."""
        return {part: {name: tensor.clone() for name, tensor in getattr(self, part).items()} for part in ("weight", "bias", "alive_units")}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s copies in place (a captured graph multiplies by these tensors)."""
        for part in ("weight", "bias", "alive_units"):
            mine, saved = getattr(self, part), state[part]
            if set(mine) != set(saved):
                raise ValueError(f"The checkpoint's {part} masks cover layers {sorted(saved)}, not {sorted(mine)}.")
            for name, tensor in mine.items():
                tensor.copy_(saved[name])

    # -- state changes (made by the pruning event, in place) ----------------------------------------

    @torch.no_grad()
    def drop_connections(self, name: str, positions: torch.Tensor) -> None:
        """Mark the given connections of a layer pruned (boolean, weight-shaped)."""
        self.weight[name].masked_fill_(positions, 0.0)

    @torch.no_grad()
    def grow_connections(self, name: str, positions: torch.Tensor) -> None:
        """Mark the given connections of a layer alive again (boolean, weight-shaped)."""
        self.weight[name].masked_fill_(positions, 1.0)

    @torch.no_grad()
    def drop_units(self, name: str, units: torch.Tensor) -> None:
        """Mark the given units of a layer dead, with their incoming weights, bias and outgoing weights."""
        self.alive_units[name] &= ~units
        self._mask_dead_units()

    def _mask_dead_units(self) -> None:
        """Zero a dead unit's incoming weights and bias, and its outgoing weights in the next layer."""
        for layer in self.layers:
            dead = ~self.alive_units[layer.name]
            self.weight[layer.name][dead] = 0.0
            if layer.name in self.bias:
                self.bias[layer.name][dead] = 0.0
            if layer.next is not None:
                self.weight[layer.next.name][:, layer.outgoing_columns(dead)] = 0.0

    @torch.no_grad()
    def zero_optimizer_state_at(self, optimizer: torch.optim.Optimizer, layer: PrunableLayer, positions: torch.Tensor) -> None:
        """Zero the optimizer's per-element state of the given weights (a regrown weight starts afresh)."""
        for value in optimizer.state.get(layer.weight, {}).values():
            if torch.is_tensor(value) and value.shape == layer.weight.shape:
                value.masked_fill_(positions, 0.0)
