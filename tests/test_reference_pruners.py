"""The field's reference methods do what their papers say: OBS, RigL, Wanda, SNIP."""

import torch

from bench_harness.engine import Normaliser, ResidentSplit, Trainer
from bench_harness.event import run_event
from bench_harness.masks import MaskSet
from bench_harness.models import build_fcnn
from bench_harness.plugins import registries
from bench_harness.pruner import PruningContext, StepView, find_prunable_layers
from bench_harness.schedule import EventPlan, PruningSchedule
from bench_harness_plugins.obs import damped


def trained(name, steps_epochs=1, seed=0):
    """A small model trained for an epoch through the real engine under pruner ``name``."""
    torch.manual_seed(seed)
    model = build_fcnn((1, 6, 6), 4, hidden=(16, 8))
    layers = find_prunable_layers(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    masks = MaskSet(layers)
    device = torch.device("cpu")
    pruner = registries().pruners.get(name)(PruningContext(model, layers, optimizer, seed, device, "connections", 16))
    generator = torch.Generator().manual_seed(seed)
    # Class prototypes plus noise: neighbouring inputs are correlated, as pixels of real images are.
    labels = torch.randint(0, 4, (128,), generator=generator)
    prototypes = torch.rand(4, 1, 6, 6, generator=generator) * 255
    images = (prototypes[labels] + 30 * torch.randn(128, 1, 6, 6, generator=generator)).clamp(0, 255).to(torch.uint8)
    data = ResidentSplit(images, labels)
    trainer = Trainer(model, optimizer, layers, masks, pruner, PruningSchedule.build(3, 1, 0.5), Normaliser((0.5,), (0.25,), device), 16, seed, device, "connections", "layer")
    for _ in range(steps_epochs):
        trainer.train_epoch(data)
    return trainer, data


def layer_inputs(trainer, data):
    """Each prunable layer's input on the whole split (the normalised images, then hidden activations)."""
    seen = {}
    hooks = [layer.module.register_forward_hook(lambda m, args, out, name=layer.name: seen.__setitem__(name, args[0].detach()))
             for layer in trainer.layers]
    with torch.no_grad():
        trainer.model(trainer.normaliser(data.images))
    for hook in hooks:
        hook.remove()
    return seen


def test_obs_scores_are_w_squared_over_the_inverse_hessian_diagonal():
    trainer, _ = trained("obs")
    pruner, layer = trainer.pruner, trainer.layers[1]
    hessian = damped(pruner.gram.mean(layer))
    expected = layer.weight.detach().square() / torch.linalg.inv(hessian).diagonal()[None, :]
    torch.testing.assert_close(pruner.score(layer, "connections"), expected, rtol=1e-4, atol=1e-7)


def test_obs_compensation_restores_the_layer_output_better_than_no_compensation():
    trainer, data = trained("obs", steps_epochs=2)
    inputs = layer_inputs(trainer, data)
    # The Gram matrix of exactly these inputs, so the re-fit is judged on the data it was fitted to.
    trainer.pruner.gram.reset_()
    trainer.pruner.observe(StepView(torch.zeros(()), len(data), inputs=inputs))
    before = {layer.name: layer.weight.detach().clone() for layer in trainer.layers}
    run_event(EventPlan(1, 0.4), trainer.pruner, trainer.masks, trainer.optimizer, "connections", "layer")
    for layer in trainer.layers:
        x = inputs[layer.name]
        mask = trainer.masks.weight[layer.name]
        reference = x @ before[layer.name].T
        uncompensated = ((x @ (before[layer.name] * mask).T - reference) ** 2).mean()
        compensated = ((x @ layer.weight.detach().T - reference) ** 2).mean()
        assert compensated < uncompensated, layer.name
        if layer is trainer.layers[0]:  # correlated pixels: a re-fit recovers much of the cut's damage
            assert compensated < 0.8 * uncompensated


def test_obs_compensation_is_each_rows_damped_least_squares_refit():
    trainer, data = trained("obs", steps_epochs=2)
    layer = trainer.layers[0]
    hessian = damped(trainer.pruner.gram.mean(layer))
    before = layer.weight.detach().clone()
    run_event(EventPlan(1, 0.5), trainer.pruner, trainer.masks, trainer.optimizer, "connections", "layer")
    # The same statistics are gone after the event (reset); the re-fit used `hessian`.
    row = 3
    alive = trainer.masks.alive_connections(layer.name)[row]
    # argmin over w' supported on the survivors of (w' - w)ᵀ H (w' - w): H_SS w'_S = (H w)_S
    expected = torch.linalg.solve(hessian[alive][:, alive], (hessian @ before[row])[alive])
    torch.testing.assert_close(layer.weight.detach()[row][alive], expected, rtol=1e-3, atol=1e-5)


def test_rigl_regrows_where_the_dense_gradient_is_largest_and_keeps_the_count():
    trainer, data = trained("rigl")
    layer = trainer.layers[0]
    run_event(EventPlan(1, 0.5), trainer.pruner, trainer.masks, trainer.optimizer, "connections", "layer")
    trainer.train_epoch(data)
    grow = trainer.pruner.grow_scores(layer).clone()
    pruned = ~trainer.masks.alive_connections(layer.name)
    assert (grow[pruned] > 0).any()  # dense: pruned positions have gradients too
    alive_before = trainer.masks.alive_connections(layer.name)
    entry = run_event(EventPlan(2, 0.4, regrow_fraction=0.3), trainer.pruner, trainer.masks, trainer.optimizer, "connections", "layer")
    alive = trainer.masks.alive_connections(layer.name)
    regrown = alive & ~alive_before
    assert entry.regrown[layer.name] > 0 and int(regrown.sum()) <= entry.regrown[layer.name]
    assert entry.alive_weights_after[layer.name] == round(0.4 * layer.weight.numel())
    if regrown.any():
        assert grow[regrown].min() >= grow[~alive].max()


def test_wanda_weighs_each_weight_by_the_norm_of_its_input_not_its_output():
    trainer, data = trained("wanda")
    pruner, layer = trainer.pruner, trainer.layers[0]
    pruner.moments.reset_()
    x = torch.ones(8, 36)
    x[:, 5] = 10.0
    pruner.observe(StepView(torch.zeros(()), 8, activations=None, inputs={l.name: (x if l is layer else torch.ones(8, l.weight.shape[1])) for l in trainer.layers}))
    scores = pruner.score(layer, "connections")
    weights = layer.weight.detach().abs()
    torch.testing.assert_close(scores[:, 5], 10.0 * weights[:, 5])
    torch.testing.assert_close(scores[:, 4], weights[:, 4])


def test_snip_is_the_absolute_mean_gradient_times_the_weight():
    trainer, data = trained("snip")
    pruner, layer = trainer.pruner, trainer.layers[1]
    pruner.gradients.reset_()
    grads = [torch.randn_like(layer.weight) for _ in range(3)]
    for grad in grads:
        for other in trainer.layers:
            other.weight.grad = grad if other is layer else torch.zeros_like(other.weight)
        pruner.observe(StepView(torch.zeros(()), 16))
    expected = (torch.stack(grads).mean(0) * layer.weight.detach()).abs()
    torch.testing.assert_close(pruner.score(layer, "connections"), expected)


def test_contribution_drops_like_obd_fisher_and_grows_by_the_estimated_loss_decrease():
    """Our method: the drop score is obd-fisher's ½·F·w² (on the same steps, bit for bit), the grow score
    E[g]²/(2(F + 1%·mean F)) from the *dense* gradients, so pruned positions are ranked too."""
    ours, data = trained("contribution")
    reference, _ = trained("obd-fisher")
    for mine, theirs in zip(ours.layers, reference.layers):
        torch.testing.assert_close(ours.pruner.score(mine, "connections"), reference.pruner.score(theirs, "connections"))
    layer = ours.layers[0]
    run_event(EventPlan(1, 0.5), ours.pruner, ours.masks, ours.optimizer, "connections", "layer")
    pruned = ~ours.masks.alive_connections(layer.name)
    # One more epoch with the per-step dense gradients recorded by hand, to check the grow score.
    seen = []
    hook = layer.weight.register_hook(lambda grad: seen.append(grad.detach().clone()))
    ours.train_epoch(data)
    hook.remove()
    grads = torch.stack(seen)
    sizes = torch.tensor([16.0] * (len(data) // 16) + ([float(len(data) % 16)] if len(data) % 16 else []))
    batch = sizes.mean()
    per_sample = (sizes[:, None, None] * grads.square()).mean(0)
    fisher = (per_sample - (batch - 1) * grads.mean(0).square()).clamp(min=0)
    expected = grads.mean(0).square() / (2 * (fisher + 0.01 * fisher.mean()))
    grow = ours.pruner.grow_scores(layer)
    torch.testing.assert_close(grow, expected, rtol=1e-4, atol=1e-12)
    assert (grow[pruned] > 0).any()
    # At the swap, the regrown positions are the pruned ones with the highest gain.
    alive_before = ours.masks.alive_connections(layer.name)
    entry = run_event(EventPlan(2, 0.4, regrow_fraction=0.3), ours.pruner, ours.masks, ours.optimizer, "connections", "layer")
    regrown = ours.masks.alive_connections(layer.name) & ~alive_before
    assert entry.regrown[layer.name] > 0
    assert entry.alive_weights_after[layer.name] == round(0.4 * layer.weight.numel())
    assert grow[regrown].min() >= grow[~ours.masks.alive_connections(layer.name) & ~alive_before].max()


def test_contribution_gain_prefers_a_steady_gradient_to_a_noisy_one_of_the_same_mean_size():
    """Where RigL sees the same |E[g]|, the gain E[g]²/2F ranks the steadily pulled position first."""
    ours, _ = trained("contribution")
    layer = ours.layers[1]
    ours.pruner.after_prune()  # empty statistics, then two positions with hand-made gradient streams
    steady, noisy = (0, 0), (0, 1)
    for step in range(8):
        dense = {l.name: torch.zeros_like(l.weight) for l in ours.layers}
        dense[layer.name][steady] = 0.1
        dense[layer.name][noisy] = 0.1 + (1.0 if step % 2 else -1.0)
        for l in ours.layers:
            l.weight.grad = dense[l.name].clone()
            if l.bias is not None:
                l.bias.grad = torch.zeros_like(l.bias)
        ours.pruner.observe(StepView(torch.tensor(0.0), 16, dense_gradients=dense))
    rigl = ours.pruner.grad_mean.mean(ours.pruner.position[f"{layer.name}.weight"]).abs()
    torch.testing.assert_close(rigl[steady], rigl[noisy])
    grow = ours.pruner.grow_scores(layer)
    assert grow[steady] > 10 * grow[noisy]
