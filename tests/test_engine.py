"""The training engine computes what a plain PyTorch loop computes, alone or interleaved with others."""

import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from bench_harness.cli import app
from bench_harness.data import split_validation
from bench_harness.datasets import make_synthetic
from bench_harness.engine import Normaliser, ResidentSplit, Trainer, fit_together
from bench_harness.masks import MaskSet
from bench_harness.models import build_fcnn
from bench_harness.plugins import registries
from bench_harness.pruner import PruningContext, find_prunable_layers
from bench_harness.schedule import PruningSchedule

EPOCHS, EVERY, RATE, BATCH, LR = 4, 2, 0.4, 50, 0.002


@pytest.fixture(scope="module")
def splits():
    return split_validation(make_synthetic(num_train=600, num_test=100), 100)


def engine_trainer(splits, pruner_name, seed):
    torch.manual_seed(seed)
    model = build_fcnn(tuple(splits.train_images.shape[1:]), 10)
    layers = find_prunable_layers(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    masks = MaskSet(layers)
    pruner_class = registries().pruners.get(pruner_name)
    pruner = pruner_class(PruningContext(model, layers, optimizer, seed, torch.device("cpu"), "connections", BATCH))
    schedule = PruningSchedule.build(EPOCHS, EVERY, RATE, prunes=pruner_class.prunes)
    return Trainer(model, optimizer, layers, masks, pruner, schedule, Normaliser(splits.mean, splits.std, torch.device("cpu")),
                   BATCH, seed, torch.device("cpu"), "connections", "layer")


def resident(splits):
    return ResidentSplit(splits.train_images, splits.train_labels), ResidentSplit(splits.val_images, splits.val_labels)


def reference_loop(splits, seed, prune):
    """A textbook eager loop with magnitude pruning written out by hand: no harness code involved."""
    torch.manual_seed(seed)
    model = build_fcnn(tuple(splits.train_images.shape[1:]), 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    masks = [torch.ones_like(w) for w in weights]
    mean = torch.tensor(splits.mean).view(1, -1, 1, 1)
    std = torch.tensor(splits.std).view(1, -1, 1, 1)
    generator = torch.Generator().manual_seed(seed)
    images, labels = splits.train_images, splits.train_labels
    for epoch in range(1, EPOCHS + 1):
        for batch in torch.randperm(len(labels), generator=generator).split(BATCH):
            inputs = (images[batch].float() / 255 - mean) / std
            optimizer.zero_grad()
            F.cross_entropy(model(inputs), labels[batch]).backward()
            for weight, mask in zip(weights, masks):
                weight.grad.mul_(mask)
            optimizer.step()
            with torch.no_grad():
                for weight, mask in zip(weights, masks):
                    weight.mul_(mask)
        if prune and epoch % EVERY == 0 and epoch < EPOCHS:
            with torch.no_grad():
                for weight, mask in zip(weights, masks):
                    alive = int(mask.sum())
                    remove = int(RATE * alive + 0.5)
                    candidates = torch.where(mask.bool(), weight.abs(), torch.tensor(float("inf")))
                    mask.view(-1)[candidates.flatten().argsort(stable=True)[:remove]] = 0
                    weight.mul_(mask)
                    for state in optimizer.state[weight].values():
                        if state.shape == weight.shape:
                            state.mul_(mask)
    return model


@pytest.mark.parametrize("pruner_name, prune", [("none", False), ("magnitude", True)])
def test_engine_matches_a_plain_eager_loop(splits, pruner_name, prune):
    trainer = engine_trainer(splits, pruner_name, seed=7)
    trainer.fit(*resident(splits))
    reference = reference_loop(splits, seed=7, prune=prune)
    for ours, theirs in zip(trainer.model.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
    if prune:
        assert trainer.masks.sparsity() == pytest.approx(RATE, abs=0.01)  # one event: after epoch 2 of 4


def test_interleaved_runs_are_exactly_what_they_are_alone(splits):
    alone = []
    for name, seed in (("taylor", 0), ("contribution", 1), ("random", 2)):
        trainer = engine_trainer(splits, name, seed)
        trainer.fit(*resident(splits))
        alone.append(trainer)
    together = [engine_trainer(splits, name, seed) for name, seed in (("taylor", 0), ("contribution", 1), ("random", 2))]
    outcomes = fit_together(together, *resident(splits))
    for solo, shared, outcome in zip(alone, together, outcomes):
        assert outcome.error is None
        for a, b in zip(solo.model.parameters(), shared.model.parameters()):
            assert torch.equal(a, b)
        for name in solo.masks.weight:
            assert torch.equal(solo.masks.weight[name], shared.masks.weight[name])


def test_a_failing_run_leaves_its_group_training(splits):
    good = engine_trainer(splits, "magnitude", 0)
    bad = engine_trainer(splits, "magnitude", 1)
    bad.pruner.score = lambda layer, granularity: (_ for _ in ()).throw(RuntimeError("scoring failed"))
    outcomes = fit_together([bad, good], *resident(splits))
    assert isinstance(outcomes[0].error, RuntimeError)
    assert outcomes[1].error is None and len(outcomes[1].history) == EPOCHS


def test_concurrency_changes_speed_not_results(tmp_path):
    runner = CliRunner()
    common = ["run", "--pruner", "contribution", "--pruner", "none", "--dataset", "synthetic", "--seeds", "2", "--epochs", "3",
              "--prune-every", "1", "--device", "cpu"]
    for concurrency in (1, 4):
        result = runner.invoke(app, [*common, "--concurrency", str(concurrency), "--results", str(tmp_path / str(concurrency))])
        assert result.exit_code == 0, result.output

    def load(folder):
        return {p.name: json.loads(p.read_text()) for p in sorted((tmp_path / folder / "runs").glob("*.json"))}

    one, four = load("1"), load("4")
    assert one.keys() == four.keys() and len(one) == 4
    for name in one:
        assert one[name]["metrics"]["test_accuracy"] == four[name]["metrics"]["test_accuracy"]
        assert [h["train_loss"] for h in one[name]["history"]] == [h["train_loss"] for h in four[name]["history"]]
        assert one[name]["metrics"]["concurrent_runs"] == 1 and four[name]["metrics"]["concurrent_runs"] == 4
    assert runner.invoke(app, [*common, "--concurrency", "0", "--results", str(tmp_path / "x")]).exit_code == 2


def test_a_device_failure_stops_the_group_instead_of_failing_every_run(splits):
    from bench_harness.errors import DeviceFailure

    first, second = engine_trainer(splits, "magnitude", 0), engine_trainer(splits, "magnitude", 1)
    first.advance = lambda: (_ for _ in ()).throw(RuntimeError("CUDA error: an illegal memory access was encountered"))
    with pytest.raises(DeviceFailure):
        fit_together([first, second], *resident(splits))
