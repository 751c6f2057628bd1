"""Statistics a pruner accumulates during training, built to live inside a captured training step.

Every accumulator here keeps preallocated tensors and updates them in place with a fixed sequence
of kernels, so adding to it inside a CUDA-graph-captured step is legal: no host synchronisation,
no branching on values, no tensor allocated per step that outlives it. Resetting is in place too,
so a graph captured once keeps reading the same storage after every pruning event.

``RunningMean`` and ``RunningMeans`` average any per-element quantity over the steps since the last
reset. ``InputSecondMoments`` and ``InputGram`` average functions of each prunable layer's *input*
(the tensors in ``StepView.inputs`` for a pruner with ``wants_inputs = True``): the per-feature
second moment E[x²] that Wanda-style criteria need, and the full input Gram matrix E[x xᵀ] that
OBS-style criteria and compensation need.

``flat_gradients`` lays the prunable parameters' gradients end to end in one buffer, the layout in
which a ``RunningMeans`` keeps its totals, so the engine and the accumulators share one definition
of it (``_views``); ``holds_gradients`` tells the engine whether the buffer still holds them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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

    The totals are views into one flat buffer (``flat``), the tensors laid end to end in the order
    given. An update may therefore also come as one flat tensor in that layout, such as
    ``StepView.gradients`` for accumulators built on ``layer_parameters(layers)``: one plain kernel
    over contiguous memory, cheaper on a CPU than the per-tensor loop.
    """

    def __init__(self, likes: list[torch.Tensor]) -> None:
        device = likes[0].device
        self.flat = torch.zeros(sum(like.numel() for like in likes), dtype=torch.float32, device=device)
        self.count = torch.zeros((), dtype=torch.float32, device=device)
        # Views of ``flat``: derived, so a checkpoint leaves them out (private attributes of an
        # accumulator are not pruner state) and restoring ``flat`` in place restores them too.
        self._totals = list(_views(self.flat, likes))

    @property
    def totals(self) -> list[torch.Tensor]:
        """The running sums, one per tensor given, shaped like it (views into ``flat``)."""
        return self._totals

    def _flat_or_list(self, values: list[torch.Tensor] | torch.Tensor) -> bool:
        """True for one flat tensor in this accumulator's layout, False for a list; else ``ValueError``."""
        if isinstance(values, (list, tuple)):
            return False
        if values.dim() != 1 or values.numel() != self.flat.numel():
            raise ValueError(
                f"A flat update must hold {self.flat.numel()} elements in one dimension (the tensors end to end), "
                f"got shape {tuple(values.shape)}."
            )
        return True

    def add_(self, values: list[torch.Tensor] | torch.Tensor) -> None:
        """Add one step's values: one per tensor (same shapes), or one flat tensor in this layout."""
        if self._flat_or_list(values):
            self.flat.add_(values)
        else:
            torch._foreach_add_(self.totals, values)
        self.count.add_(1.0)

    def add_products_(self, first: list[torch.Tensor] | torch.Tensor, second: list[torch.Tensor] | torch.Tensor,
                      scale: float = 1.0) -> None:
        """Add one step's ``scale * first * second`` elementwise, fused (lists, or flat tensors)."""
        if self._flat_or_list(first) and self._flat_or_list(second):
            self.flat.addcmul_(first, second, value=scale)
        elif torch.is_tensor(first) or torch.is_tensor(second):
            raise ValueError("add_products_ takes two lists or two flat tensors, not one of each.")
        else:
            torch._foreach_addcmul_(self.totals, first, second, value=scale)
        self.count.add_(1.0)

    def mean(self, index: int) -> torch.Tensor:
        """The mean so far of tensor ``index`` (zeros before any step)."""
        return self.totals[index] / self.count.clamp(min=1.0)

    def reset_(self) -> None:
        """Forget everything, in place."""
        self.flat.zero_()
        self.count.zero_()


def holds_gradients(flat: torch.Tensor, params: list[torch.Tensor]) -> bool:
    """Whether every parameter's ``.grad`` is still its stretch of ``flat`` (as
    :func:`flat_gradients` made it), by address only: no device work."""
    return all(
        param.grad is not None and param.grad.data_ptr() == view.data_ptr() and param.grad.shape == view.shape and param.grad.is_contiguous()
        for param, view in zip(params, _views(flat, params))
    )


def _views(flat: torch.Tensor, likes: list[torch.Tensor]):
    """Views of consecutive stretches of ``flat`` shaped like ``likes``."""
    offset = 0
    for like in likes:
        yield flat[offset:offset + like.numel()].view(like.shape)
        offset += like.numel()


def flat_gradients(params: list[torch.Tensor]) -> torch.Tensor | None:
    """Give ``params`` zeroed ``.grad`` tensors that are views into one flat buffer, and return it.

    Backward then accumulates every gradient into that buffer in place, so something that reads
    all of them at once (a :class:`RunningMeans` built on the same parameters) can do it in one
    kernel. None, and nothing changed, when one buffer cannot stand in for their own gradients: the
    parameters do not share one floating dtype and device; one is frozen (backward writes no
    gradient for it, and one given here would make the optimizer step it); one is not a contiguous
    leaf tensor (a channels-last weight's gradient must have its strides, which a stretch of a flat
    buffer does not; a computed weight's ``.grad`` would go to a temporary); or one appears twice
    (a shared weight: its second stretch would never be written).
    """
    if not params or len({(param.dtype, param.device) for param in params}) != 1 or not params[0].is_floating_point():
        return None
    if len({id(param) for param in params}) != len(params):
        return None
    if not all(param.requires_grad and param.is_leaf and param.is_contiguous() for param in params):
        return None
    flat = torch.zeros(sum(param.numel() for param in params), dtype=params[0].dtype, device=params[0].device)
    for param, view in zip(params, _views(flat, params)):
        param.grad = view
    return flat


def input_features(module: nn.Module) -> int:
    """How many input features a layer's weight columns address: ``in_features`` of a Linear,
    ``in_channels`` of a Conv2d (the per-channel view; see :class:`InputSecondMoments`)."""
    return module.in_channels if isinstance(module, nn.Conv2d) else module.in_features


def patch_matrix(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """A layer's input as rows of the vectors its weight rows are multiplied with.

    Linear: the input itself, ``(batch, in_features)``. Conv2d: every receptive-field patch,
    ``(batch * positions, in_channels * kh * kw)``, in the order of ``weight.flatten(1)``'s columns.
    """
    if not isinstance(module, nn.Conv2d):
        return inputs.reshape(-1, inputs.shape[-1])
    if isinstance(module.padding, str):
        raise ValueError(f"Conv2d with padding='{module.padding}' is not supported here; give the padding as numbers.")
    patches = F.unfold(inputs, module.kernel_size, dilation=module.dilation, padding=module.padding, stride=module.stride)
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


class InputSecondMoments:
    """E[x²] of every input feature of each given layer, averaged over samples and steps.

    For a Linear layer, one value per input feature; for a Conv2d, one per input channel (averaged
    over the spatial positions too). :meth:`mean` returns it shaped to broadcast against the layer's
    weight, so ``weight.abs() * moments.mean(layer).sqrt()`` is Wanda's score.
    """

    def __init__(self, layers: list) -> None:
        self.layers = list(layers)
        self.position = {layer.name: index for index, layer in enumerate(self.layers)}
        device = self.layers[0].weight.device
        self.stats = RunningMeans([torch.zeros(input_features(layer.module), device=device) for layer in self.layers])

    def add_(self, inputs: dict[str, torch.Tensor]) -> None:
        """Add one step's inputs (``StepView.inputs``)."""
        values = []
        for layer in self.layers:
            x = inputs[layer.name].float()
            dims = (0, 2, 3) if x.dim() == 4 else tuple(range(x.dim() - 1))
            values.append(x.square().mean(dim=dims))
        self.stats.add_(values)

    def mean(self, layer) -> torch.Tensor:
        """E[x²] per input feature of ``layer``, shaped ``(1, in)`` or ``(1, in_channels, 1, 1)``."""
        moments = self.stats.mean(self.position[layer.name])
        return moments.view(1, -1, 1, 1) if layer.weight.dim() == 4 else moments.view(1, -1)

    def reset_(self) -> None:
        """Forget everything, in place."""
        self.stats.reset_()


class InputGram:
    """The input Gram matrix E[x xᵀ] of each given layer, averaged over samples and steps.

    ``x`` is what one weight row multiplies: the input vector of a Linear layer, or one receptive-field
    patch of a Conv2d (``in_channels * kh * kw`` values, in ``weight.flatten(1)`` column order). For a
    layer computing ``y = W x``, ``(w - w')ᵀ E[x xᵀ] (w - w')`` is the mean squared change of one output
    when its weight row changes from ``w`` to ``w'``: the quantity layer-wise OBS minimises. Memory is
    ``d²`` floats per layer for ``d`` inputs (784² for LeNet's first layer).
    """

    def __init__(self, layers: list) -> None:
        self.layers = list(layers)
        self.position = {layer.name: index for index, layer in enumerate(self.layers)}
        self.totals = []
        for layer in self.layers:
            width = layer.weight[0].numel()
            self.totals.append(torch.zeros(width, width, device=layer.weight.device))
        self.count = torch.zeros((), device=self.layers[0].weight.device)

    @torch.no_grad()
    def add_(self, inputs: dict[str, torch.Tensor]) -> None:
        """Add one step's inputs (``StepView.inputs``): one matrix product per layer."""
        for layer, total in zip(self.layers, self.totals):
            rows = patch_matrix(layer.module, inputs[layer.name].float())
            total.addmm_(rows.T, rows, alpha=1.0 / rows.shape[0])
        self.count.add_(1.0)

    def mean(self, layer) -> torch.Tensor:
        """E[x xᵀ] of ``layer``, ``(d, d)`` (zeros before any step)."""
        return self.totals[self.position[layer.name]] / self.count.clamp(min=1.0)

    def reset_(self) -> None:
        """Forget everything, in place."""
        torch._foreach_zero_(self.totals)
        self.count.zero_()
