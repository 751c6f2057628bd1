"""Real compaction of neuron-pruned ``nn.Sequential`` chains: dead units are removed, not zeroed.

A unit is an output feature of an ``nn.Linear`` or an output channel of an ``nn.Conv2d``. Removing
it deletes its row (filter) and bias entry in its own layer and its input columns in the next
prunable layer: one column per unit between Linear layers, one input channel between Conv2d
layers, and for Conv2d -> Flatten -> Linear the contiguous block of ``H*W`` columns the channel
occupies in NCHW flatten order.

Equivalence: the compact model computes what the masked original computes when dead units
contribute nothing to the next layer. That holds if their outgoing weights are zeroed, or if
their output is zero, i.e. their incoming weights AND bias are zeroed and the activation maps 0
to 0 (ReLU does). The harness's neuron pruning zeroes both, so either condition is met; a caller
that zeroes only incoming weights but keeps a non-zero bias would see different outputs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

PRUNABLE_TYPES = (nn.Linear, nn.Conv2d)
"""Layers that own units; every other layer is a pass-through that must not mix units."""

_ELEMENTWISE_TYPES = (
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout,
)
"""Layers that act on each value (or whole channel) alone, so they never change which unit is where."""

_SPATIAL_POOL_TYPES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)
"""2-D pooling keeps channels apart; allowed only on convolution outputs, before any Flatten."""


@dataclass
class _LayerCut:
    """Which output units (rows) and input columns/channels of one prunable layer survive.

    ``None`` means all of them; an index tensor lists the kept ones in increasing order.
    """

    layer: nn.Module
    keep_out: Tensor | None = None
    keep_in: Tensor | None = None


def _units(layer: nn.Module) -> int:
    """Output units of a prunable layer."""
    return layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features


def _check_alive(name: str, layer: nn.Module, alive: Tensor) -> Tensor:
    """Validate one layer's alive vector and return the kept units' indices on the layer's device."""
    alive = torch.as_tensor(alive)
    if alive.dim() != 1 or alive.numel() != _units(layer):
        raise ValueError(f"alive_units['{name}'] must be a vector of {_units(layer)} booleans, one per output unit, got shape {tuple(alive.shape)}.")
    keep = torch.nonzero(alive.to(torch.bool)).flatten()
    if keep.numel() == 0:
        raise ValueError(f"Every unit of layer '{name}' is dead, which would disconnect the network; keep at least one.")
    return keep.to(layer.weight.device)


def _columns_per_unit(names: tuple[str, str], layers: tuple[nn.Module, nn.Module], between: list[tuple[str, nn.Module]]) -> int:
    """How many input columns (or channels) of the consumer each unit of the producer owns.

    Raises ``ValueError`` when the layers in between could mix units or change their count, or when
    the consumer's input width does not match the producer's units.
    """
    (producer_name, consumer_name), (producer, consumer) = names, layers
    units = _units(producer)
    spatial = isinstance(producer, nn.Conv2d)
    if spatial and producer.groups != 1:
        raise ValueError(f"Layer '{producer_name}' is a grouped convolution; removing its channels would break its groups, so it cannot be compacted.")
    flattened = False
    for name, module in between:
        if isinstance(module, nn.Flatten):
            if flattened or module.start_dim != 1 or module.end_dim != -1:
                raise ValueError(f"Layer '{name}' flattens other than one nn.Flatten(start_dim=1), so the columns owned by each unit of '{producer_name}' are unknown.")
            flattened = True
        elif isinstance(module, _ELEMENTWISE_TYPES):
            continue
        elif isinstance(module, _SPATIAL_POOL_TYPES) and spatial and not flattened:
            continue
        else:
            raise ValueError(
                f"Layer '{name}' ({type(module).__name__}) sits between prunable layers '{producer_name}' and '{consumer_name}' "
                "and may mix or change units; compaction supports only activations, dropout, 2-D pooling and one Flatten there."
            )
    if isinstance(consumer, nn.Conv2d):
        if not spatial or flattened:
            raise ValueError(f"Layer '{consumer_name}' is a convolution fed by a flattened or fully-connected output; compaction needs a Conv2d -> Conv2d chain there.")
        if consumer.groups != 1:
            raise ValueError(f"Layer '{consumer_name}' is a grouped convolution; removing its input channels would break its groups.")
        if consumer.in_channels != units:
            raise ValueError(f"Layer '{consumer_name}' takes {consumer.in_channels} channels but '{producer_name}' makes {units}.")
        return 1
    if spatial and not flattened:
        raise ValueError(f"Layer '{consumer_name}' is a Linear fed by convolution '{producer_name}' without an nn.Flatten in between.")
    if consumer.in_features % units != 0 or (not spatial and consumer.in_features != units):
        raise ValueError(f"Layer '{consumer_name}' takes {consumer.in_features} features, which is not a whole block per unit of '{producer_name}' ({units} units).")
    return consumer.in_features // units


def _plan(model: nn.Module, alive_units: dict[str, Tensor]) -> dict[str, _LayerCut]:
    """Validate the chain and the masks, and say which rows and columns each prunable layer keeps."""
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"Compaction needs an nn.Sequential chain, got {type(model).__name__}.")
    children = list(model.named_children())
    positions = [i for i, (_, module) in enumerate(children) if isinstance(module, PRUNABLE_TYPES)]
    nested = [name for name, module in model.named_modules() if isinstance(module, PRUNABLE_TYPES) and "." in name]
    if nested:
        raise ValueError(f"Prunable layers {', '.join(nested)} are nested inside containers; compaction needs them as direct members of the nn.Sequential.")
    cuts = {children[i][0]: _LayerCut(children[i][1]) for i in positions}
    for name, cut in cuts.items():
        if "weight" not in dict(cut.layer.named_parameters(recurse=False)):
            raise ValueError(f"Layer '{name}' has a re-parametrised weight (e.g. torch.nn.utils.prune); remove the parametrisation before compacting.")

    unknown = sorted(set(alive_units) - set(cuts))
    if unknown:
        raise ValueError(f"alive_units names layers that are not prunable layers of this Sequential: {', '.join(unknown)}.")
    output_name = children[positions[-1]][0] if positions else None
    for name, alive in alive_units.items():
        keep = _check_alive(name, cuts[name].layer, alive)
        if keep.numel() == _units(cuts[name].layer):
            continue  # nothing to remove
        if name == output_name:
            raise ValueError(f"Layer '{name}' is the output layer; its units are the model's outputs and cannot be removed.")
        cuts[name].keep_out = keep

    for first, second in zip(positions, positions[1:]):
        producer_name, consumer_name = children[first][0], children[second][0]
        keep = cuts[producer_name].keep_out
        if keep is None:
            continue
        block = _columns_per_unit(
            (producer_name, consumer_name), (cuts[producer_name].layer, cuts[consumer_name].layer), children[first + 1 : second]
        )
        offsets = torch.arange(block, device=keep.device)
        columns = (keep[:, None] * block + offsets[None, :]).flatten()  # NCHW: channel c owns c*HW .. c*HW+HW-1
        cuts[consumer_name].keep_in = columns.to(cuts[consumer_name].layer.weight.device)
    return cuts


def _cut_layer(layer: nn.Module, cut: _LayerCut) -> None:
    """Replace the layer's weight and bias with their kept rows/columns and update its sizes."""
    weight = layer.weight.detach()
    bias = layer.bias.detach() if layer.bias is not None else None
    if cut.keep_out is not None:
        weight = weight.index_select(0, cut.keep_out)
        bias = bias.index_select(0, cut.keep_out) if bias is not None else None
    if cut.keep_in is not None:
        weight = weight.index_select(1, cut.keep_in)
    layer.weight = nn.Parameter(weight.contiguous(), requires_grad=layer.weight.requires_grad)
    if bias is not None:
        layer.bias = nn.Parameter(bias.contiguous(), requires_grad=layer.bias.requires_grad)
    if isinstance(layer, nn.Conv2d):
        layer.out_channels, layer.in_channels = weight.shape[0], weight.shape[1]
    else:
        layer.out_features, layer.in_features = weight.shape[0], weight.shape[1]


def compact_model(model: nn.Sequential, alive_units: dict[str, Tensor]) -> nn.Sequential:
    """A new, physically smaller copy of ``model`` without the dead units.

    ``alive_units`` maps a prunable layer's module name to a boolean vector over its output units
    (a missing layer keeps all units; the output layer cannot lose any). The copy has the same
    dtype, device and module types, and computes the same outputs as the masked original under the
    assumption stated in the module docstring. ``model`` itself is not modified.

    Raises ``ValueError`` with a sentence naming the problem when the model is not a compactable
    chain or a layer would lose every unit.
    """
    cuts = _plan(model, alive_units)
    compact = copy.deepcopy(model)
    with torch.no_grad():
        for name, cut in cuts.items():
            if cut.keep_out is not None or cut.keep_in is not None:
                _cut_layer(compact._modules[name], cut)
    return compact


def compact_param_count(model: nn.Sequential, alive_units: dict[str, Tensor]) -> int:
    """The parameter count ``compact_model(model, alive_units)`` would have, computed from the masks alone.

    Validates exactly as :func:`compact_model` does, so it raises where that would.
    """
    cuts = _plan(model, alive_units)
    total = sum(parameter.numel() for parameter in model.parameters())
    for cut in cuts.values():
        weight, bias = cut.layer.weight, cut.layer.bias
        rows = cut.keep_out.numel() if cut.keep_out is not None else weight.shape[0]
        columns = cut.keep_in.numel() if cut.keep_in is not None else weight.shape[1]
        per_entry = weight[0, 0].numel()  # kh * kw for a convolution, 1 for a Linear
        compact_size = rows * columns * per_entry + (rows if bias is not None else 0)
        total += compact_size - weight.numel() - (bias.numel() if bias is not None else 0)
    return total
