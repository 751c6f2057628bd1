"""The pruning event: score, allocate, drop, compensate, regrow, enforce, and what it records."""

import pytest
import torch
from torch import nn

from bench_harness.allocation import round_half_up
from bench_harness.engine import Evaluation
from bench_harness.event import run_event
from bench_harness.pruner import Cut
from bench_harness.schedule import EventPlan, PruningSchedule

from helpers_pruning import FixedScores, Regrowing, cnn, random_scores, setup


def train_a_little(model, masks, optimizer, steps=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        inputs = torch.randn(32, 1, 8, 8, generator=generator)
        labels = torch.randint(0, 10, (32,), generator=generator)
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), labels).backward()
        masks.apply_to_gradients()
        optimizer.step()
        masks.apply_to_weights()


@pytest.mark.parametrize("scope", ["layer", "global", "erk", "lamp"])
def test_connection_counts_follow_the_schedule_exactly_at_every_event(scope):
    model, layers, masks, optimizer, pruner = setup()
    schedule = PruningSchedule.build(epochs=7, prune_every=1, rate=0.3)
    total = masks.prunable_weights()
    for event, epoch in enumerate(schedule.event_epochs):
        pruner.scores = random_scores(layers, "connections", event)
        entry = run_event(schedule.event_after(epoch), pruner, masks, optimizer, "connections", scope)
        density = schedule.densities[event]
        if scope == "layer":
            assert masks.alive_weight_counts() == {l.name: round_half_up(density * l.weight.numel()) for l in layers}
        elif scope in ("global", "lamp"):
            assert masks.alive_weights() == round_half_up(density * total)
        assert entry.alive_weights_after == masks.alive_weight_counts()
        assert sum(entry.dropped.values()) == sum(entry.alive_weights_before.values()) - masks.alive_weights()
    assert pruner.resets == len(schedule.event_epochs)


@pytest.mark.parametrize("scope", ["layer", "global", "lamp"])
def test_neuron_pruning_counts_and_never_touches_output_units(scope):
    model, layers, masks, optimizer, pruner = setup(granularity="neurons")
    hidden = [layer for layer in layers if not layer.is_output]
    for event, density in enumerate((0.75, 0.5, 0.3)):
        pruner.scores = random_scores(hidden, "neurons", event)
        run_event(EventPlan(event + 1, density), pruner, masks, optimizer, "neurons", scope)
        alive = masks.alive_unit_counts()
        if scope == "layer":
            assert all(alive[l.name] == round_half_up(density * l.units) for l in hidden)
        else:
            assert sum(alive[l.name] for l in hidden) == round_half_up(density * sum(l.units for l in hidden))
    assert masks.alive_unit_counts()[layers[-1].name] == layers[-1].units


def test_a_pruned_neuron_takes_its_incoming_weights_bias_and_outgoing_weights():
    model, layers, masks, optimizer, pruner = setup(granularity="neurons")
    pruner.scores = {layer.name: torch.arange(layer.units, dtype=torch.float32) for layer in layers[:-1]}
    run_event(EventPlan(1, 0.9), pruner, masks, optimizer, "neurons", "layer")  # units 0, 1 of 20 and 0 of 12
    first, second = layers[0], layers[1]
    dead = ~masks.alive_units[first.name]
    assert dead.nonzero().flatten().tolist() == [0, 1]
    assert (first.weight[dead] == 0).all() and (first.bias[dead] == 0).all()
    assert (second.weight[:, dead] == 0).all()
    alive_rows = masks.alive_units[second.name]
    assert (masks.weight[second.name][alive_rows][:, ~dead] == 1).all()


def test_a_conv_channel_takes_its_block_of_the_classifiers_flattened_columns():
    model, layers, masks, optimizer, pruner = setup(model=cnn(), granularity="neurons")
    conv1, conv2, classifier = layers
    pruner.scores = {conv1.name: torch.ones(conv1.units), conv2.name: torch.ones(conv2.units)}
    pruner.scores[conv2.name][5] = -1.0
    pruner.scores[conv1.name][3] = -1.0
    run_event(EventPlan(1, 94 / 96), pruner, masks, optimizer, "neurons", "global")  # two of 96 channels
    per_channel = classifier.weight.shape[1] // conv2.units
    assert (masks.weight[classifier.name][:, 5 * per_channel : 6 * per_channel] == 0).all()
    assert int((masks.weight[classifier.name] == 0).sum()) == 10 * per_channel
    assert (masks.weight[conv2.name][:, 3] == 0).all()  # conv -> conv: the input channel goes


def test_regrowth_drops_g_more_regrows_where_grow_scores_are_highest_and_keeps_the_count():
    model, layers, masks, optimizer, pruner = setup(pruner_class=Regrowing)
    train_a_little(model, masks, optimizer)
    pruner.scores = random_scores(layers, "connections", 1)
    run_event(EventPlan(1, 0.5), pruner, masks, optimizer, "connections", "layer")
    train_a_little(model, masks, optimizer, seed=1)
    alive_before = {l.name: masks.alive_connections(l.name) for l in layers}
    counts_before = masks.alive_weight_counts()
    pruner.scores = random_scores(layers, "connections", 2)
    pruner.grow = random_scores(layers, "connections", 3)
    entry = run_event(EventPlan(2, 0.4, regrow_fraction=0.25), pruner, masks, optimizer, "connections", "layer")
    for layer in layers:
        kept = round_half_up(0.4 * layer.weight.numel())
        g = round_half_up(0.25 * kept)
        assert entry.alive_weights_after[layer.name] == kept
        assert entry.regrown[layer.name] == g
        assert entry.dropped[layer.name] == counts_before[layer.name] - kept + g
        alive = masks.alive_connections(layer.name)
        regrown = alive & ~alive_before[layer.name]
        # Regrown where the grow score is highest among what was not alive after the drop.
        dead_after = ~alive | regrown
        threshold = pruner.grow[layer.name][regrown].min()
        assert (pruner.grow[layer.name][dead_after & ~alive] <= threshold).all()
        assert (layer.weight[regrown] == 0).all()
        for value in optimizer.state[layer.weight].values():
            if value.shape == layer.weight.shape:
                assert (value[regrown] == 0).all()


def test_a_regrow_only_event_swaps_without_changing_the_count():
    model, layers, masks, optimizer, pruner = setup(pruner_class=Regrowing)
    pruner.scores = random_scores(layers, "connections", 1)
    run_event(EventPlan(1, 0.5), pruner, masks, optimizer, "connections", "global")
    counts = masks.alive_weight_counts()
    pruner.grow = random_scores(layers, "connections", 2)
    entry = run_event(EventPlan(2, None, regrow_fraction=0.2), pruner, masks, optimizer, "connections", "global")
    assert masks.alive_weight_counts() == counts and entry.kind == "regrow"
    assert sum(entry.regrown.values()) > 0 and entry.dropped == entry.regrown


class Compensating(FixedScores):
    name = "fixed-compensate"

    def compensate(self, layer, cut: Cut):
        self.cuts[layer.name] = cut
        return torch.full_like(layer.weight, 0.5)


def test_compensation_changes_survivors_only_and_leaves_their_optimizer_state():
    model, layers, masks, optimizer, pruner = setup(pruner_class=Compensating)
    pruner.cuts = {}
    train_a_little(model, masks, optimizer)
    before = {l.name: l.weight.detach().clone() for l in layers}
    state_before = {l.name: optimizer.state[l.weight]["exp_avg"].clone() for l in layers}
    pruner.scores = random_scores(layers, "connections", 0)
    entry = run_event(EventPlan(1, 0.6), pruner, masks, optimizer, "connections", "layer")
    for layer in layers:
        alive = masks.alive_connections(layer.name)
        cut = pruner.cuts[layer.name]
        assert torch.equal(cut.alive, alive) and torch.equal(cut.weight_before, before[layer.name])
        assert int(cut.dropped.sum()) == entry.dropped[layer.name]
        torch.testing.assert_close(layer.weight[alive], before[layer.name][alive] + 0.5)
        assert (layer.weight[~alive] == 0).all()
        exp_avg = optimizer.state[layer.weight]["exp_avg"]
        assert torch.equal(exp_avg[alive], state_before[layer.name][alive]) and (exp_avg[~alive] == 0).all()


def test_the_entry_records_validation_before_the_cut_after_it_and_after_compensation():
    model, layers, masks, optimizer, pruner = setup(pruner_class=Compensating)
    pruner.cuts = {}
    pruner.scores = random_scores(layers, "connections", 0)
    seen = []

    def evaluate():
        seen.append(masks.alive_weights())
        return Evaluation(loss=float(len(seen)), accuracy=len(seen) / 10)

    entry = run_event(EventPlan(3, 0.5), pruner, masks, optimizer, "connections", "global", evaluate)
    assert seen[0] > seen[1] == seen[2]  # before the cut, then twice after it
    assert (entry.val_loss_before, entry.val_loss_after_cut, entry.val_loss_after_compensation) == (1.0, 2.0, 3.0)
    assert entry.val_accuracy_after_compensation == 0.3 and entry.epoch == 3 and entry.seconds >= 0
    plain_model, plain_layers, plain_masks, plain_optimizer, plain = setup()
    plain.scores = random_scores(plain_layers, "connections", 0)
    plain_entry = run_event(EventPlan(3, 0.5), plain, plain_masks, plain_optimizer, "connections", "global", lambda: Evaluation(1.0, 0.5))
    assert plain_entry.val_accuracy_after_cut == 0.5 and plain_entry.val_accuracy_after_compensation is None


def test_bad_answers_from_a_pruner_are_refused_with_its_name():
    model, layers, masks, optimizer, pruner = setup()
    pruner.scores = random_scores(layers, "connections", 0)
    pruner.scores[layers[0].name] = torch.ones(3)
    with pytest.raises(ValueError, match="'fixed'.*shape"):
        run_event(EventPlan(1, 0.5), pruner, masks, optimizer, "connections", "layer")
    pruner.scores = random_scores(layers, "connections", 0)
    pruner.scores[layers[1].name][0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        run_event(EventPlan(1, 0.5), pruner, masks, optimizer, "connections", "layer")
    pruner.scores = {l.name: torch.ones(l.weight.shape, dtype=torch.long) for l in layers}
    with pytest.raises(TypeError, match="floating"):
        run_event(EventPlan(1, 0.5), pruner, masks, optimizer, "connections", "layer")


def test_a_non_finite_compensation_is_refused():
    class Exploding(Compensating):
        def compensate(self, layer, cut):
            return torch.full_like(layer.weight, float("inf"))

    model, layers, masks, optimizer, pruner = setup(pruner_class=Exploding)
    pruner.scores = random_scores(layers, "connections", 0)
    with pytest.raises(ValueError, match="non-finite"):
        run_event(EventPlan(1, 0.5), pruner, masks, optimizer, "connections", "layer")
