"""Each built-in pruner scores what its definition says."""

import pytest
import torch
from torch import nn

from bench_harness.event import run_event
from bench_harness.masks import MaskSet
from bench_harness.models import build_fcnn
from bench_harness.plugins import registries
from bench_harness.pruner import PruningContext, StepView, find_prunable_layers
from bench_harness.schedule import EventPlan
from bench_harness.testing import check_pruner


def setup(pruner_name, granularity="connections", seed=0, batch_size=16):
    torch.manual_seed(seed)
    model = build_fcnn((1, 6, 6), 4, hidden=(10, 8))
    layers = find_prunable_layers(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    context = PruningContext(model, layers, optimizer, seed, torch.device("cpu"), granularity, batch_size)
    pruner = registries().pruners.get(pruner_name)(context)
    return model, layers, optimizer, pruner


def train_steps(model, optimizer, pruner, steps=5, batch_size=16, keep_grads=None):
    generator = torch.Generator().manual_seed(123)
    for _ in range(steps):
        inputs = torch.randn(batch_size, 1, 6, 6, generator=generator)
        labels = torch.randint(0, 4, (batch_size,), generator=generator)
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(inputs), labels)
        loss.backward()
        if keep_grads is not None:
            keep_grads.append({name: p.grad.clone() for name, p in model.named_parameters()} | {
                f"value:{name}": p.detach().clone() for name, p in model.named_parameters()})
        pruner.observe(StepView(loss.detach(), batch_size))
        optimizer.step()


def test_magnitude_removes_the_smallest_weights():
    model, layers, optimizer, pruner = setup("magnitude")
    masks = MaskSet(layers)
    before = {layer.name: layer.weight.detach().clone() for layer in layers}
    run_event(EventPlan(1, 0.7), pruner, masks, optimizer, "connections", "layer")
    for layer in layers:
        layer.weight.data.copy_(before[layer.name])
        pruned = masks.weight[layer.name] == 0
        assert layer.weight.abs()[pruned].max() <= layer.weight.abs()[~pruned].min()


def test_neurons_whose_weights_were_zeroed_by_hand_go_first():
    for name in ("magnitude", "obd-fisher", "taylor"):
        model, layers, optimizer, pruner = setup(name, "neurons")
        with torch.no_grad():
            layers[0].weight[[2, 7]] = 0.0
            layers[0].bias[[2, 7]] = 0.0
            layers[1].weight[:, [2, 7]] = 0.0
        # The observed step sees the zeroed units (what taylor accumulates); its update revives them a
        # little, so they are zeroed again before scoring (what magnitude and obd-fisher read).
        train_steps(model, optimizer, pruner, steps=1)
        with torch.no_grad():
            layers[0].weight[[2, 7]] = 0.0
            layers[0].bias[[2, 7]] = 0.0
            layers[1].weight[:, [2, 7]] = 0.0
        masks = MaskSet(layers)
        run_event(EventPlan(1, 0.8), pruner, masks, optimizer, "neurons", "layer")  # two of ten units in the first layer
        dead = (~masks.alive_units[layers[0].name]).nonzero().flatten().tolist()
        assert dead == [2, 7], name


def test_random_depends_on_the_seed_only():
    _, layers, _, first = setup("random", seed=3)
    _, _, _, again = setup("random", seed=3)
    _, _, _, other = setup("random", seed=4)
    a, b, c = (p.score(layers[0], "connections") for p in (first, again, other))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_taylor_is_the_mean_of_squared_gradient_times_weight():
    model, layers, optimizer, pruner = setup("taylor")
    steps = []
    train_steps(model, optimizer, pruner, steps=4, keep_grads=steps)
    name = layers[1].name
    expected = torch.stack([(s[f"{name}.weight"] * s[f"value:{name}.weight"]).square() for s in steps]).mean(0)
    torch.testing.assert_close(pruner.score(layers[1], "connections"), expected)
    pruner.after_prune()
    assert torch.count_nonzero(pruner.score(layers[1], "connections")) == 0


def test_taylor_neuron_score_squares_the_summed_first_order_terms():
    model, layers, optimizer, pruner = setup("taylor", "neurons")
    steps = []
    train_steps(model, optimizer, pruner, steps=3, keep_grads=steps)
    name = layers[0].name
    per_step = [
        ((s[f"{name}.weight"] * s[f"value:{name}.weight"]).sum(1) + s[f"{name}.bias"] * s[f"value:{name}.bias"]).square()
        for s in steps
    ]
    torch.testing.assert_close(pruner.score(layers[0], "neurons"), torch.stack(per_step).mean(0))


def test_obd_fisher_is_half_fisher_times_weight_squared_in_loss_units():
    batch = 16
    model, layers, optimizer, pruner = setup("obd-fisher", batch_size=batch)
    steps = []
    train_steps(model, optimizer, pruner, steps=5, batch_size=batch, keep_grads=steps)
    name = layers[1].name
    grads = torch.stack([s[f"{name}.weight"] for s in steps])
    fisher = (batch * grads.square().mean(0) - (batch - 1) * grads.mean(0).square()).clamp(min=0)
    expected = 0.5 * fisher * layers[1].weight.detach().square()
    torch.testing.assert_close(pruner.score(layers[1], "connections"), expected)


def test_obd_fisher_neuron_score_counts_incoming_bias_and_outgoing_weights():
    model, layers, optimizer, pruner = setup("obd-fisher", "neurons")
    train_steps(model, optimizer, pruner, steps=3)
    connections = {layer.name: pruner.score(layer, "connections") for layer in layers}
    first, second = layers[0], layers[1]
    # The bias term by hand, from the same statistics the pruner gathered (its own running means).
    batch = 16.0
    index = pruner.position[f"{first.name}.bias"]
    fisher = (pruner.grad_square_mean.mean(index) - (batch - 1) * pruner.grad_mean.mean(index).square()).clamp(min=0)
    bias_term = 0.5 * fisher * first.bias.detach().square()
    assert bias_term.abs().sum() > 0
    expected = connections[first.name].sum(1) + bias_term + connections[second.name].sum(0)
    torch.testing.assert_close(pruner.score(first, "neurons"), expected)


def test_the_dense_reference_never_prunes():
    pruner_class = registries().pruners.get("none")
    assert pruner_class.prunes is False


@pytest.mark.parametrize("name", registries().pruners.names())
def test_every_builtin_keeps_the_pruner_contract(name):
    check_pruner(registries().pruners.get(name))


@pytest.mark.parametrize("attribute, value", [
    *(("observe_epochs", window) for window in (0, -1, 1.5, True, "1")),  # None is allowed: every epoch
    *(("observe_every", every) for every in (0, -2, 2.0, True, None)),
    *(("observe_window", share) for share in (0, 0.0004, -0.5, 1.5, True, None, "0.5")),  # 1, 1.0 and 1/1000 are allowed (test below)
])
def test_a_pruner_asking_for_an_impossible_observation_window_or_stride_is_refused_at_registration(attribute, value):
    from bench_harness.pruner import Pruner, validate_pruner_class

    Odd = type("Odd", (Pruner,), {"name": "odd-observation", attribute: value})
    with pytest.raises(TypeError, match=attribute):
        validate_pruner_class(Odd)


@pytest.mark.parametrize("attribute, value", [("observe_window", 1), ("observe_window", 1.0), ("observe_window", 0.001), ("observe_every", 7), ("observe_epochs", None)])
def test_a_pruner_asking_for_a_possible_observation_window_or_stride_is_registered(attribute, value):
    from bench_harness.pruner import Pruner, validate_pruner_class

    validate_pruner_class(type("Fine", (Pruner,), {"name": "fine-observation", attribute: value}))
