"""The pruning schedule: when events happen and what fraction stays after each."""

import math

import pytest

from bench_harness.config import RunConfig
from bench_harness.schedule import PruningSchedule


def test_seed_schedule_has_nine_events_and_leaves_38_7_percent():
    schedule = PruningSchedule.build(epochs=50, prune_every=5, rate=0.1)
    assert schedule.event_epochs == (5, 10, 15, 20, 25, 30, 35, 40, 45)
    assert schedule.densities == pytest.approx([0.9**k for k in range(1, 10)])
    assert schedule.final_density == pytest.approx(0.9**9)
    assert schedule.event_after(50) is None and schedule.event_after(4) is None
    assert schedule.event_after(45).density == pytest.approx(0.9**9)


def test_target_sparsity_ends_exactly_at_the_target_with_both_shapes():
    for kind in ("fixed", "cubic"):
        schedule = PruningSchedule.build(epochs=50, prune_every=5, rate=0.1, target_sparsity=0.95, kind=kind)
        assert schedule.final_density == pytest.approx(0.05, abs=1e-15)
    fixed = PruningSchedule.build(epochs=50, prune_every=5, rate=0.1, target_sparsity=0.95)
    assert fixed.rate == pytest.approx(1 - 0.05 ** (1 / 9))


def test_cubic_follows_zhu_and_gupta_and_ends_where_fixed_ends_by_default():
    cubic = PruningSchedule.build(epochs=50, prune_every=5, rate=0.3, kind="cubic")
    final_sparsity = 1 - 0.7**9
    for k, density in enumerate(cubic.densities, start=1):
        assert density == pytest.approx(1 - final_sparsity * (1 - (1 - k / 9) ** 3))
    assert cubic.final_density == pytest.approx(0.7**9)
    cuts = [before - after for before, after in zip((1.0,) + cubic.densities, cubic.densities)]
    assert cuts == sorted(cuts, reverse=True)  # large cuts first, small ones last


def test_start_and_end_epochs_bound_the_events():
    schedule = PruningSchedule.build(epochs=50, prune_every=2, rate=0.1, start=10, end=30)
    assert schedule.event_epochs == tuple(range(10, 31, 2))


def test_regrowth_fraction_decays_with_rigls_cosine_and_swaps_between_events():
    schedule = PruningSchedule.build(epochs=50, prune_every=5, rate=0.1, regrow_fraction=0.3, regrow_every=1)
    assert schedule.event_after(5).regrow_fraction == pytest.approx(0.15 * (1 + math.cos(math.pi * 5 / 45)))
    assert schedule.event_after(45).regrow_fraction == pytest.approx(0.0)
    assert schedule.regrow_epochs == tuple(e for e in range(6, 45) if e % 5)
    swap = schedule.event_after(7)
    assert swap.kind == "regrow" and swap.density is None and swap.regrow_fraction > 0
    assert PruningSchedule.build(50, 5, 0.1, regrow_fraction=0.3).regrow_epochs == ()


def test_dense_reference_schedule_never_prunes():
    schedule = PruningSchedule.build(epochs=50, prune_every=5, rate=0.1, prunes=False)
    assert not any(schedule.event_after(epoch) for epoch in range(1, 51))


def test_a_run_config_gives_the_schedule_of_its_settings():
    config = RunConfig(schedule="cubic", target_sparsity=0.9, prune_start=2, prune_end=20, prune_every=3)
    schedule = PruningSchedule.for_run(config, regrows=False)
    assert schedule.kind == "cubic" and schedule.event_epochs == (2, 5, 8, 11, 14, 17, 20)
    assert schedule.final_density == pytest.approx(0.1) and schedule.regrow_fraction == 0.0
    assert PruningSchedule.for_run(config, regrows=True).regrow_fraction == config.regrow_fraction


def test_observed_epochs_are_those_whose_statistics_an_event_reads():
    schedule = PruningSchedule.build(50, 5, 0.1)  # the seed protocol: events after epochs 5, 10, ..., 45
    assert schedule.observed_epochs() == frozenset(range(1, 46))  # nothing after the last event
    assert schedule.observed_epochs(1) == frozenset(range(5, 46, 5))
    assert schedule.observed_epochs(2) == frozenset(e for e in range(4, 46) if e % 5 in (4, 0))
    assert schedule.observed_epochs(9) == schedule.observed_epochs()  # a window longer than the interval
    swaps = PruningSchedule.build(30, 10, 0.5, regrow_fraction=0.3, regrow_every=4)  # cuts after 10, 20; swaps after 12, 16
    assert swaps.observed_epochs(1) == {10, 12, 16, 20}
    assert swaps.observed_epochs(3) == {8, 9, 10, 11, 12, 14, 15, 16, 18, 19, 20}
    assert PruningSchedule.build(10, 5, 0.1, prunes=False).observed_epochs() == frozenset()
