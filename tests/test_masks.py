"""Masks: exact counts per event, both scopes and granularities, and persistence under Adam."""

import pytest
import torch
from torch import nn

from bench_harness.masks import MaskSet, count_to_prune
from bench_harness.models import build_cnn, build_fcnn
from bench_harness.pruner import find_prunable_layers
from bench_harness.schedule import PruningSchedule


def fcnn():
    torch.manual_seed(0)
    return build_fcnn((1, 8, 8), 10, hidden=(20, 12))


def random_scores(layers, granularity, seed):
    generator = torch.Generator().manual_seed(seed)
    shape = (lambda layer: layer.weight.shape) if granularity == "connections" else (lambda layer: (layer.units,))
    return {layer.name: torch.rand(shape(layer), generator=generator) for layer in layers}


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_connection_sparsity_after_each_event_is_exact(scope):
    model = fcnn()
    layers = find_prunable_layers(model)
    masks = MaskSet(layers)
    alive_per_layer = {layer.name: layer.weight.numel() for layer in layers}
    for event in range(6):
        masks.prune(random_scores(layers, "connections", event), 0.3, scope, "connections")
        if scope == "layer":
            for name in alive_per_layer:
                alive_per_layer[name] -= count_to_prune(0.3, alive_per_layer[name])
            counts = {layer.name: int(masks.weight[layer.name].sum()) for layer in layers}
            assert counts == alive_per_layer
        else:
            total = sum(alive_per_layer.values())
            alive_per_layer = {"all": total - count_to_prune(0.3, total)}
            assert masks.alive_weights() == alive_per_layer["all"]
    assert masks.sparsity() == pytest.approx(1 - masks.alive_weights() / masks.prunable_weights())


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_neuron_pruning_counts_and_never_touches_output_units(scope):
    model = fcnn()
    layers = find_prunable_layers(model)
    masks = MaskSet(layers)
    hidden = {layer.name: layer.units for layer in layers if not layer.is_output}
    for event in range(4):
        masks.prune(random_scores(layers, "neurons", event), 0.25, scope, "neurons")
        alive = masks.alive_unit_counts()
        if scope == "layer":
            for name in hidden:
                hidden[name] -= count_to_prune(0.25, hidden[name])
            assert {name: alive[name] for name in hidden} == hidden
        else:
            total = sum(hidden.values())
            expected = total - count_to_prune(0.25, total)
            assert sum(alive[name] for name in hidden) == expected
            hidden = {name: alive[name] for name in hidden}
    output = layers[-1]
    assert masks.alive_unit_counts()[output.name] == output.units


def test_pruned_neuron_loses_incoming_bias_and_outgoing_weights():
    model = fcnn()
    layers = find_prunable_layers(model)
    masks = MaskSet(layers)
    scores = {layer.name: torch.arange(layer.units, dtype=torch.float32) for layer in layers}
    masks.prune(scores, 0.1, "layer", "neurons")  # unit 0 and 1 of the first hidden layer (20 units)
    first, second = layers[0], layers[1]
    dead = ~masks.alive_units[first.name]
    assert dead[:2].all() and not dead[2:].any()
    assert (masks.weight[first.name][dead] == 0).all()
    assert (masks.bias[first.name][dead] == 0).all()
    assert (masks.weight[second.name][:, dead] == 0).all()
    alive_rows = masks.alive_units[second.name]  # the second layer loses its own lowest unit too
    assert (masks.weight[second.name][alive_rows][:, ~dead] == 1).all()


def test_conv_channel_pruning_masks_the_flattened_columns_of_the_classifier():
    torch.manual_seed(0)
    model = build_cnn((3, 8, 8), 10)
    layers = find_prunable_layers(model)
    masks = MaskSet(layers)
    conv2, classifier = layers[1], layers[2]
    scores = {layer.name: torch.ones(layer.units) for layer in layers}
    scores[conv2.name][5] = -1.0
    masks.prune(scores, 1 / 64, "layer", "neurons")  # one of 64 channels of conv2, and one of 32 of conv1 (0.5 rounds up)
    assert not masks.alive_units[conv2.name][5]
    per_channel = classifier.weight.shape[1] // conv2.units  # 2x2 spatial positions after two pools
    assert (masks.weight[classifier.name][:, 5 * per_channel : 6 * per_channel] == 0).all()
    assert int((masks.weight[classifier.name] == 0).sum()) == 10 * per_channel
    (dead_conv1,) = (~masks.alive_units[layers[0].name]).nonzero().flatten().tolist()
    assert (masks.weight[conv2.name][:, dead_conv1] == 0).all()  # conv -> conv: the input channel goes


def test_counts_round_half_up_on_the_rate_as_written():
    assert count_to_prune(0.7, 45) == 32  # 31.5, although 0.7 * 45 is 31.4999... in floating point
    assert count_to_prune(0.1, 5) == 1 and count_to_prune(0.1, 4) == 0


def test_already_pruned_elements_are_never_chosen_again_even_against_infinite_scores():
    layers = find_prunable_layers(fcnn())
    masks = MaskSet(layers)
    never = {layer.name: torch.full_like(layer.weight, float("inf")) for layer in layers}
    for scope in ("layer", "global"):
        before = masks.alive_weights()
        removed = masks.prune(never, 0.3, scope, "connections")
        assert masks.alive_weights() == before - removed and removed > 0


def test_a_layer_always_keeps_one_unit():
    model = fcnn()
    layers = find_prunable_layers(model)
    masks = MaskSet(layers)
    for event in range(30):
        masks.prune(random_scores(layers, "neurons", event), 0.9, "global", "neurons")
    assert all(count >= 1 for count in masks.alive_unit_counts().values())


def adam_training_setup():
    """A small model with its prunable layers, masks, an Adam optimizer and one fixed batch."""
    model = fcnn()
    layers = find_prunable_layers(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    return model, layers, MaskSet(layers), optimizer, torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))


def masked_adam_step(model, optimizer, masks, inputs, labels):
    """One optimizer step with the harness's enforcement: gradients masked before, weights after."""
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(inputs), labels).backward()
    masks.apply_to_gradients()
    optimizer.step()
    masks.apply_to_weights()


def test_pruned_units_biases_and_their_adam_state_stay_zero():
    model, layers, masks, optimizer, inputs, labels = adam_training_setup()
    masks.prune(random_scores(layers, "neurons", 0), 0.5, "layer", "neurons")
    masks.apply_to_weights()
    for _ in range(10):
        masked_adam_step(model, optimizer, masks, inputs, labels)
    for layer in layers[:-1]:
        dead = ~masks.alive_units[layer.name]
        assert (layer.bias[dead] == 0).all() and (optimizer.state[layer.bias]["exp_avg"][dead] == 0).all()
        assert (layer.next.weight[:, dead.repeat_interleave(layer.next.weight.shape[1] // layer.units)] == 0).all()


def test_pruned_weights_stay_exactly_zero_through_adam_steps():
    model, layers, masks, optimizer, inputs, labels = adam_training_setup()

    def step():
        masked_adam_step(model, optimizer, masks, inputs, labels)

    for _ in range(5):  # build up Adam momentum first, so a missing mask would show
        step()
    masks.prune(random_scores(layers, "connections", 0), 0.5, "layer", "connections")
    masks.apply_to_weights()
    masks.apply_to_optimizer_state(optimizer)
    for _ in range(20):
        step()
        for layer in layers:
            pruned = masks.weight[layer.name] == 0
            assert (layer.weight[pruned] == 0).all()
            state = optimizer.state[layer.weight]
            assert (state["exp_avg"][pruned] == 0).all() and (state["exp_avg_sq"][pruned] == 0).all()


def test_scores_of_the_wrong_shape_or_with_nan_are_refused():
    layers = find_prunable_layers(fcnn())
    masks = MaskSet(layers)
    bad = random_scores(layers, "connections", 0)
    bad[layers[0].name] = torch.ones(3)
    with pytest.raises(ValueError, match="shape"):
        masks.prune(bad, 0.1, "layer", "connections")
    nan = random_scores(layers, "connections", 0)
    nan[layers[1].name][0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        masks.prune(nan, 0.1, "layer", "connections")


def test_seed_schedule_has_nine_events_and_leaves_38_7_percent():
    schedule = PruningSchedule.build(epochs=50, prune_every=5, rate=0.1)
    assert schedule.event_epochs == (5, 10, 15, 20, 25, 30, 35, 40, 45)
    assert schedule.expected_final_density() == pytest.approx(0.9**9)
    assert not schedule.prunes_after(50)


def test_target_sparsity_picks_the_rate_that_reaches_it():
    schedule = PruningSchedule.build(epochs=50, prune_every=5, rate=0.1, target_sparsity=0.95)
    assert 1 - schedule.expected_final_density() == pytest.approx(0.95)


def test_dense_reference_schedule_never_prunes():
    schedule = PruningSchedule.build(epochs=50, prune_every=5, rate=0.1, prunes=False)
    assert not any(schedule.prunes_after(epoch) for epoch in range(1, 51))
