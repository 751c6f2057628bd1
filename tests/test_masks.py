"""Masks: state changes, and pruned weights, biases and optimizer state staying zero under Adam."""

import torch
from torch import nn

from bench_harness.masks import MaskSet
from bench_harness.pruner import find_prunable_layers

from helpers_pruning import fcnn, random_scores


def drop_lowest_half(masks, layers, granularity, seed):
    """Mark the lower-scored half of every layer's elements pruned (units of hidden layers only)."""
    for layer, scores in random_scores(layers, granularity, seed).items():
        chosen = scores < scores.median()
        if granularity == "connections":
            masks.drop_connections(layer, chosen)
        elif layer != layers[-1].name:
            masks.drop_units(layer, chosen)


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
    drop_lowest_half(masks, layers, "neurons", 0)
    masks.apply_to_weights()
    for _ in range(10):
        masked_adam_step(model, optimizer, masks, inputs, labels)
    for layer in layers[:-1]:
        dead = ~masks.alive_units[layer.name]
        assert (layer.bias[dead] == 0).all() and (optimizer.state[layer.bias]["exp_avg"][dead] == 0).all()
        assert (layer.next.weight[:, layer.outgoing_columns(dead)] == 0).all()


def test_pruned_weights_stay_exactly_zero_through_adam_steps():
    model, layers, masks, optimizer, inputs, labels = adam_training_setup()

    def step():
        masked_adam_step(model, optimizer, masks, inputs, labels)

    for _ in range(5):  # build up Adam momentum first, so a missing mask would show
        step()
    drop_lowest_half(masks, layers, "connections", 0)
    masks.apply_to_weights()
    masks.apply_to_optimizer_state(optimizer)
    for _ in range(20):
        step()
        for layer in layers:
            pruned = masks.weight[layer.name] == 0
            assert (layer.weight[pruned] == 0).all()
            state = optimizer.state[layer.weight]
            assert (state["exp_avg"][pruned] == 0).all() and (state["exp_avg_sq"][pruned] == 0).all()


def test_dropping_and_growing_connections_changes_exactly_those_positions():
    layers = find_prunable_layers(fcnn())
    masks = MaskSet(layers)
    name = layers[1].name
    chosen = torch.zeros_like(masks.weight[name], dtype=torch.bool)
    chosen[0, :5] = True
    masks.drop_connections(name, chosen)
    assert masks.alive_weight_counts()[name] == layers[1].weight.numel() - 5
    assert not masks.alive_connections(name)[0, :5].any() and masks.alive_connections(name)[0, 5:].all()
    masks.grow_connections(name, chosen)
    assert masks.alive_connections(name).all()


def test_a_regrown_weight_starts_with_zeroed_optimizer_state():
    model, layers, masks, optimizer, inputs, labels = adam_training_setup()
    for _ in range(3):
        masked_adam_step(model, optimizer, masks, inputs, labels)
    chosen = torch.zeros_like(layers[0].weight, dtype=torch.bool)
    chosen[1, 2] = True
    masks.zero_optimizer_state_at(optimizer, layers[0], chosen)
    state = optimizer.state[layers[0].weight]
    assert state["exp_avg"][1, 2] == 0 and state["exp_avg_sq"][1, 2] == 0 and state["exp_avg"][1, 3] != 0
