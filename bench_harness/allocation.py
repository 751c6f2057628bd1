"""Allocation: how one pruning event's removals are shared between layers (``--scope``).

Given each layer's scores and alive elements and the fraction of elements that must stay alive, an
allocation returns, per layer, the alive elements to remove. Four rules, each crossed with every
criterion:

* ``layer``: every layer keeps ``round(density * its size)`` elements (its own lowest scores go);
* ``erk``: every layer keeps ``round(density_l * its size)``, with ``density_l`` from the
  Erdős–Rényi-kernel rule (Evci et al. 2020): proportional to ``sum(shape) / prod(shape)`` of the
  weight, scaled so the whole model keeps ``density``, layers that would exceed 1 kept dense;
* ``global``: one ranking across layers; the model keeps ``round(density * size)`` elements;
* ``lamp``: the global ranking of LAMP-normalised scores (Lee et al. 2021): within a layer, an
  element's score divided by the sum of the scores at least as large, so each layer's best element
  scores 1 and layers are compared by how much of their own mass a removal takes. Scores must not be
  negative (LAMP's magnitude score is ``w²``, which is what ``magnitude`` returns).

No layer is ever emptied: each keeps at least one element (its highest-scored connection, or for
neuron pruning its highest-scored unit with its connections); under ``global`` and ``lamp`` that
element is set aside before ranking, so the total count stays exact.
"""

from __future__ import annotations

import math

import torch

ALLOCATIONS = ("layer", "global", "erk", "lamp")


def round_half_up(value: float) -> int:
    """Round to the nearest whole number, halves up, counting a value within a billionth of a half
    as the half it stands for (0.7 x 45 is 31.499999999999996 in floating point and gives 32)."""
    return int(math.floor(value + 0.5 + 1e-9 * max(1.0, abs(value))))


def erk_densities(shapes: dict[str, tuple[int, ...]], density: float) -> dict[str, float]:
    """Per-layer densities of the Erdős–Rényi-kernel rule whose size-weighted mean is ``density``.

    ``density_l = eps * sum(shape_l) / prod(shape_l)`` capped at 1; ``eps`` is solved so that the
    layers together keep ``density`` of their weights; a layer at the cap is dense and the rest share
    what is left (RigL's procedure).
    """
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: sum(shape) / sizes[name] for name, shape in shapes.items()}
    budget = density * sum(sizes.values())
    dense: set[str] = set()
    while True:
        sparse = [name for name in shapes if name not in dense]
        if not sparse:
            return {name: 1.0 for name in shapes}
        eps = (budget - sum(sizes[name] for name in dense)) / sum(raw[name] * sizes[name] for name in sparse)
        capped = {name for name in sparse if eps * raw[name] > 1.0}
        if not capped:
            return {name: (1.0 if name in dense else eps * raw[name]) for name in shapes}
        dense |= capped


def lamp_scores(scores: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """LAMP normalisation of one layer's alive scores (dead elements get +inf: never candidates).

    With the alive scores sorted ascending, ``s_i / sum_{j >= i} s_j``; ties keep their order.
    """
    values = scores.flatten()[alive.flatten()]
    if bool((values < 0).any()):
        raise ValueError("--scope lamp needs non-negative scores; this pruner returned negative ones.")
    order = torch.sort(values, stable=True).indices
    ranked = values[order]
    tail_sums = ranked.flip(0).cumsum(0).flip(0)
    normalised = torch.empty_like(values)
    normalised[order] = ranked / tail_sums.clamp(min=torch.finfo(ranked.dtype).tiny)
    result = torch.full_like(scores.flatten(), math.inf)
    result[alive.flatten()] = normalised
    return result.view_as(scores)


def mark_lowest(values: torch.Tensor, candidates: torch.Tensor, count: int) -> torch.Tensor:
    """Boolean mask of the ``count`` lowest-valued candidates (ties broken by position).

    The same choice as taking the first ``count`` of a stable sort, found by selection instead: the
    ``count``-th smallest value is the threshold, every candidate below it is marked, and of those
    equal to it the first ones by position. On a CPU that is several times faster than the sort.
    """
    marks = torch.zeros_like(candidates, dtype=torch.bool)
    if count <= 0:
        return marks
    positions = candidates.flatten().nonzero().flatten()
    chosen = values.flatten()[positions]
    if count >= chosen.numel():
        marks.view(-1)[positions] = True
        return marks
    if bool(torch.isnan(chosen).any()):  # NaN has no place among the values: the sort's order, NaN last
        order = torch.sort(chosen, stable=True).indices[:count]
        marks.view(-1)[positions[order]] = True
        return marks
    threshold = torch.kthvalue(chosen, count).values
    below = chosen < threshold
    ties = (chosen == threshold).nonzero().flatten()[: count - int(below.sum())]
    marks.view(-1)[positions[below]] = True
    marks.view(-1)[positions[ties]] = True
    return marks


def mark_highest(values: torch.Tensor, candidates: torch.Tensor, count: int) -> torch.Tensor:
    """Boolean mask of the ``count`` highest-valued candidates (ties broken by position)."""
    return mark_lowest(-values, candidates, count)


def allocate(
    scope: str, scores: dict[str, torch.Tensor], alive: dict[str, torch.Tensor], density: float
) -> dict[str, torch.Tensor]:
    """Per layer, the alive elements to remove so that ``density`` of all elements stays alive.

    ``scores`` and ``alive`` map each layer to tensors of one shape (weights, or units); ``alive`` is
    boolean. Lower scores go first.
    """
    names = list(scores)
    if scope in ("layer", "erk"):
        sizes = {name: alive[name].numel() for name in names}
        if scope == "layer":
            densities = {name: density for name in names}
        else:
            densities = erk_densities({name: tuple(alive[name].shape) for name in names}, density)
        drops = {}
        for name in names:
            keep = max(1, round_half_up(densities[name] * sizes[name]))
            drops[name] = mark_lowest(scores[name], alive[name], int(alive[name].sum()) - keep)
        return drops
    if scope in ("global", "lamp"):
        ranked = {name: lamp_scores(scores[name], alive[name]) for name in names} if scope == "lamp" else scores
        protected = {name: mark_highest(ranked[name], alive[name], 1) for name in names}
        total = sum(alive[name].numel() for name in names)
        count = sum(int(alive[name].sum()) for name in names) - round_half_up(density * total)
        flat_values = torch.cat([ranked[name].flatten().float() for name in names])
        flat_candidates = torch.cat([(alive[name] & ~protected[name]).flatten() for name in names])
        marks = mark_lowest(flat_values, flat_candidates, count)
        drops, offset = {}, 0
        for name in names:
            size = alive[name].numel()
            drops[name] = marks[offset : offset + size].view_as(alive[name])
            offset += size
        return drops
    raise ValueError(f"Unknown scope '{scope}'.")
