"""FLOPs of one forward pass of ONE sample, counted per prunable layer (``nn.Linear``, ``nn.Conv2d``).

Conventions (used everywhere in the harness):

* A "FLOP" here is one multiply-add (MAC): one weight used once. Bias additions, activations,
  pooling and normalisation are not counted; they are negligible next to the products and do not
  change when weights are pruned, so leaving them out keeps dense/effective ratios honest.
* Linear: ``in_features * out_features`` per output position (one position after a Flatten).
* Conv2d: ``out_h * out_w * out_channels * (in_channels / groups) * kh * kw``.
* Effective FLOPs skip zeroed weights: a Linear costs its number of non-zero weights per position;
  a Conv2d its number of non-zero weights times ``out_h * out_w``.

Output sizes come from one forward pass of a dummy sample with forward hooks, so any chain works
without knowing its shapes in advance.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bench_harness.measure.latency import evaluation_mode, model_device

PRUNABLE_TYPES = (nn.Linear, nn.Conv2d)
"""Layer types whose weights are counted (the same ones the harness prunes)."""


def _kind(module: nn.Module) -> str:
    """``"linear"`` or ``"conv2d"``: the per_layer entry's ``kind``."""
    return "conv2d" if isinstance(module, nn.Conv2d) else "linear"


def _positions_per_weight_use(module: nn.Module, output: Tensor) -> int:
    """How many times each weight is used for one sample: output positions per output unit.

    For a Linear on a flat input that is 1; for a Conv2d it is ``out_h * out_w``. Computed from the
    real output so that a Linear applied to a (sequence, features) input is counted correctly too.
    """
    units = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
    return output.numel() // units  # the dummy batch has one sample


def _nonzero_weights(name: str, module: nn.Module, weight_masks: dict[str, Tensor] | None) -> int:
    """Non-zero entries of the layer's mask when one is given for it, else of its weight."""
    if weight_masks is not None and name in weight_masks:
        mask = weight_masks[name]
        if tuple(mask.shape) != tuple(module.weight.shape):
            raise ValueError(f"The mask for layer '{name}' has shape {tuple(mask.shape)} but its weight has shape {tuple(module.weight.shape)}.")
        return int(torch.count_nonzero(mask))
    return int(torch.count_nonzero(module.weight.detach()))


def count_flops(
    model: nn.Module,
    input_shape: tuple[int, ...],
    weight_masks: dict[str, Tensor] | None = None,
) -> dict:
    """Dense and effective multiply-adds of one forward pass of one sample of ``input_shape``.

    ``weight_masks`` maps a prunable layer's module name to a mask of its weight's shape (non-zero =
    kept); layers without a mask use their weight's own zeros, as do all layers when it is ``None``.
    A layer called several times in one pass is listed once per call.

    Returns ``{"flops_dense", "flops_effective", "per_layer": [{"name", "kind", "flops_dense",
    "flops_effective"}]}`` with layers in call order. See the module docstring for conventions.
    """
    names = {module: name for name, module in model.named_modules() if isinstance(module, PRUNABLE_TYPES)}
    if weight_masks is not None:
        unknown = sorted(set(weight_masks) - set(names.values()))
        if unknown:
            raise ValueError(f"weight_masks names layers that are not prunable layers of this model: {', '.join(unknown)}.")

    calls: list[tuple[str, nn.Module, int]] = []  # (name, layer, positions) in call order

    def record(module: nn.Module, _inputs: tuple, output: Tensor) -> None:
        calls.append((names[module], module, _positions_per_weight_use(module, output)))

    device = model_device(model)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.get_default_dtype())
    handles = [module.register_forward_hook(record) for module in names]
    try:
        # Eval mode so a dummy pass never updates BatchNorm statistics or draws dropout masks.
        with evaluation_mode(model), torch.inference_mode():
            model(torch.zeros((1, *input_shape), dtype=dtype, device=device))
    finally:
        for handle in handles:
            handle.remove()

    per_layer = []
    for name, module, positions in calls:
        per_layer.append(
            {
                "name": name,
                "kind": _kind(module),
                "flops_dense": module.weight.numel() * positions,
                "flops_effective": _nonzero_weights(name, module, weight_masks) * positions,
            }
        )
    return {
        "flops_dense": sum(layer["flops_dense"] for layer in per_layer),
        "flops_effective": sum(layer["flops_effective"] for layer in per_layer),
        "per_layer": per_layer,
    }
