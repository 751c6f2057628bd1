"""Allocation: how an event shares its removals between layers, for every --scope."""

import math

import pytest
import torch

from bench_harness.allocation import allocate, erk_densities, lamp_scores, mark_lowest, round_half_up


def _layers(seed=0):
    generator = torch.Generator().manual_seed(seed)
    shapes = {"a": (30, 40), "b": (12, 30), "c": (4, 12)}
    scores = {name: torch.rand(shape, generator=generator) for name, shape in shapes.items()}
    alive = {name: torch.ones(shape, dtype=torch.bool) for name, shape in shapes.items()}
    return scores, alive


def _apply(alive, drops):
    return {name: alive[name] & ~drops[name] for name in alive}


def test_rounding_is_half_up_on_the_value_as_written():
    assert round_half_up(0.7 * 45) == 32  # 31.5 as written, although 0.7 * 45 is 31.4999... in floating point
    assert round_half_up(0.5) == 1 and round_half_up(2.4999) == 2 and round_half_up(0.0) == 0


def test_layer_scope_keeps_the_same_fraction_of_every_layer_and_removes_its_lowest():
    scores, alive = _layers()
    drops = allocate("layer", scores, alive, 0.3)
    for name in scores:
        kept = alive[name] & ~drops[name]
        assert int(kept.sum()) == round_half_up(0.3 * alive[name].numel())
        assert scores[name][drops[name]].max() <= scores[name][kept].min()


def test_global_scope_keeps_the_exact_total_and_removes_the_lowest_across_layers():
    scores, alive = _layers()
    total = sum(mask.numel() for mask in alive.values())
    drops = allocate("global", scores, alive, 0.25)
    kept = _apply(alive, drops)
    assert sum(int(mask.sum()) for mask in kept.values()) == round_half_up(0.25 * total)
    highest_dropped = max(float(scores[n][drops[n]].max()) for n in scores if drops[n].any())
    lowest_kept = min(float(scores[n][kept[n]].min()) for n in scores)
    assert highest_dropped <= lowest_kept


def test_no_layer_is_ever_emptied_even_when_all_its_scores_are_lowest():
    scores, alive = _layers()
    scores["c"] = scores["c"] - 10.0  # every element of c ranks below every other element
    kept = _apply(alive, allocate("global", scores, alive, 0.01))
    assert int(kept["c"].sum()) == 1 and bool(kept["c"].view(-1)[scores["c"].view(-1).argmax()])
    total = sum(mask.numel() for mask in alive.values())
    assert sum(int(mask.sum()) for mask in kept.values()) == round_half_up(0.01 * total)
    kept = _apply(alive, allocate("layer", scores, alive, 0.0001))
    assert all(int(mask.sum()) == 1 for mask in kept.values())


def test_erk_densities_follow_the_rule_and_average_to_the_target():
    shapes = {"first": (300, 784), "second": (100, 300), "output": (10, 100)}
    densities = erk_densities(shapes, 0.1)
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    assert sum(densities[n] * sizes[n] for n in shapes) == pytest.approx(0.1 * sum(sizes.values()))
    # Proportional to sum(shape)/prod(shape) for layers below the cap: the small output layer is densest.
    ratio = densities["first"] / densities["second"]
    assert ratio == pytest.approx((1084 / sizes["first"]) / (400 / sizes["second"]))
    assert densities["output"] > densities["second"] > densities["first"]


def test_erk_keeps_layers_dense_that_the_rule_would_push_above_one():
    densities = erk_densities({"big": (300, 784), "tiny": (10, 100)}, 0.5)
    assert densities["tiny"] == 1.0
    assert densities["big"] == pytest.approx((0.5 * (235200 + 1000) - 1000) / 235200)


def test_erk_scope_keeps_each_layers_rounded_erk_count():
    scores, alive = _layers()
    densities = erk_densities({name: tuple(mask.shape) for name, mask in alive.items()}, 0.2)
    kept = _apply(alive, allocate("erk", scores, alive, 0.2))
    for name in scores:
        assert int(kept[name].sum()) == max(1, round_half_up(densities[name] * alive[name].numel()))


def test_lamp_normalises_by_the_mass_at_least_as_large():
    scores = torch.tensor([4.0, 1.0, 3.0, 2.0])
    alive = torch.tensor([True, True, True, False])
    lamp = lamp_scores(scores, alive)
    # alive sorted: 1, 3, 4 -> 1/8, 3/7, 4/4; the dead element is never a candidate
    torch.testing.assert_close(lamp, torch.tensor([1.0, 1 / 8, 3 / 7, math.inf]))


def test_lamp_scope_compares_layers_by_their_own_mass_and_refuses_negative_scores():
    scores = {"big": torch.full((10,), 100.0), "small": torch.tensor([1.0, 1.0, 1.0, 1.0])}
    scores["big"][0] = 1.0
    alive = {name: torch.ones_like(value, dtype=torch.bool) for name, value in scores.items()}
    drops = allocate("lamp", scores, alive, 13 / 14)
    # Global ranking would drop small's ones; LAMP ranks big's lone 1.0 lowest (1/901) instead.
    assert int(drops["big"].sum()) == 1 and bool(drops["big"][0]) and not drops["small"].any()
    with pytest.raises(ValueError, match="non-negative"):
        allocate("lamp", {"big": -scores["big"], "small": scores["small"]}, alive, 0.5)


@pytest.mark.parametrize("scope", ["layer", "global", "erk", "lamp"])
def test_already_pruned_elements_are_never_chosen_again(scope):
    scores, alive = _layers()
    alive = _apply(alive, allocate(scope, scores, alive, 0.5))
    never = {name: torch.full_like(value, math.inf) for name, value in scores.items()}
    drops = allocate(scope, never, alive, 0.3)
    assert all(not bool((drops[name] & ~alive[name]).any()) for name in scores)
    assert sum(int(d.sum()) for d in drops.values()) > 0


def test_ties_break_by_position_so_the_same_scores_always_choose_the_same():
    marks = mark_lowest(torch.zeros(6), torch.ones(6, dtype=torch.bool), 3)
    assert marks.tolist() == [True, True, True, False, False, False]


def _first_of_a_stable_sort(values, candidates, count):
    """The reference mark_lowest must agree with: the first ``count`` of a stable sort of the candidates."""
    marks = torch.zeros_like(candidates, dtype=torch.bool)
    positions = candidates.flatten().nonzero().flatten()
    marks.view(-1)[positions[torch.sort(values.flatten()[positions], stable=True).indices[:max(count, 0)]]] = True
    return marks


@pytest.mark.parametrize("kind", ["distinct", "few levels", "zeros and infinities", "signed zeros", "with NaN"])
def test_the_lowest_are_chosen_as_the_first_of_a_stable_sort_would_be(kind):
    generator = torch.Generator().manual_seed(7)
    for trial in range(40):
        size = int(torch.randint(1, 300, (1,), generator=generator))
        values = torch.rand(size, generator=generator)
        if kind == "few levels":  # many ties, which the threshold splits by position
            values = torch.randint(0, 4, (size,), generator=generator).float()
        elif kind == "zeros and infinities":
            values = torch.tensor([0.0, math.inf, -math.inf, 1.0])[torch.randint(0, 4, (size,), generator=generator)]
        elif kind == "signed zeros":
            values = torch.tensor([0.0, -0.0, 2.0])[torch.randint(0, 3, (size,), generator=generator)]
        elif kind == "with NaN":
            values[torch.rand(size, generator=generator) < 0.2] = math.nan
        candidates = torch.rand(size, generator=generator) < 0.7
        for count in (0, 1, size // 3, int(candidates.sum()) - 1, int(candidates.sum()), size + 5):
            expected = _first_of_a_stable_sort(values, candidates, count)
            assert torch.equal(mark_lowest(values, candidates, count), expected), (kind, trial, count)
            assert torch.equal(mark_lowest(values.view(-1, 1), candidates.view(-1, 1), count), expected.view(-1, 1))
