"""The training engine computes what a plain PyTorch loop computes, alone or interleaved with others."""

import json

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from bench_harness import engine
from bench_harness.augment import RandomCropFlip
from bench_harness.cli import app
from bench_harness.data import split_validation
from bench_harness.datasets import make_synthetic
from bench_harness.engine import Normaliser, ResidentSplit, StepGraph, Trainer, fit_together
from bench_harness.masks import MaskSet
from bench_harness.models import build_fcnn
from bench_harness.plugins import registries
from bench_harness.pruner import PruningContext, find_prunable_layers, layer_parameters, window_start
from bench_harness.schedule import EventPlan, PruningSchedule
from bench_harness.statistics import InputGram, InputSecondMoments, RunningMean, RunningMeans, flat_gradients

EPOCHS, EVERY, RATE, BATCH, LR = 4, 2, 0.4, 50, 0.002


@pytest.fixture(scope="module")
def splits():
    return split_validation(make_synthetic(num_train=600, num_test=100), 100)


def engine_trainer(splits, pruner_name, seed, augment=False, pruner_class=None, schedule=None):
    torch.manual_seed(seed)
    model = build_fcnn(tuple(splits.train_images.shape[1:]), 10)
    layers = find_prunable_layers(model)
    optimizer = engine.make_optimizer(model, LR, torch.device("cpu"))
    masks = MaskSet(layers)
    pruner_class = pruner_class or registries().pruners.get(pruner_name)
    pruner = pruner_class(PruningContext(model, layers, optimizer, seed, torch.device("cpu"), "connections", BATCH))
    schedule = schedule or PruningSchedule.build(EPOCHS, EVERY, RATE, prunes=pruner_class.prunes)
    return Trainer(model, optimizer, layers, masks, pruner, schedule, Normaliser(splits.mean, splits.std, torch.device("cpu")),
                   BATCH, seed, torch.device("cpu"), "connections", "layer",
                   augmenter=RandomCropFlip(seed, torch.device("cpu")) if augment else None)


def resident(splits):
    return ResidentSplit(splits.train_images, splits.train_labels), ResidentSplit(splits.val_images, splits.val_labels)


def reference_loop(splits, seed, prune):
    """A textbook eager loop with magnitude pruning written out by hand: no harness code involved."""
    torch.manual_seed(seed)
    model = build_fcnn(tuple(splits.train_images.shape[1:]), 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=True)  # the CPU's Adam, as the harness sets it up
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


# --- the CUDA-graph path's bookkeeping, checked on the CPU ----------------------------------------
# A CUDA graph cannot be captured without a GPU, but everything around it can be checked: the static
# order and augmentation buffers, the device-side cursor, the switch from warm-up steps to replays,
# the eager last partial batch, and in-place updates of everything the graph reads.


class ReplayedStep:
    """Stands in for a captured graph: each replay runs the recorded step again, as Python.

    A replayed backward writes the static gradients rather than adding to them, so they are zeroed
    first, which is what the graph's arithmetic amounts to.
    """

    def __init__(self, trainer, step):
        self.optimizer, self.step = trainer.optimizer, step

    def replay(self):
        self.optimizer.zero_grad(set_to_none=False)
        self.step()


@pytest.fixture
def replayed_graphs(monkeypatch):
    monkeypatch.setattr(StepGraph, "_record", staticmethod(ReplayedStep))


@pytest.fixture(scope="module")
def ragged_splits():
    """530 training images: 10 full batches of 50 and a partial one, which the engine trains eagerly."""
    return split_validation(make_synthetic(num_train=630, num_test=100), 100)


def graph_trainer(splits, pruner_name, seed, augment):
    trainer = engine_trainer(splits, pruner_name, seed, augment)
    trainer.wants_graph = True  # what a CUDA device would set
    return trainer


@pytest.mark.parametrize("augment", [False, True], ids=["plain", "augmented"])
@pytest.mark.parametrize("pruner_name", ["none", "magnitude", "taylor", "contribution", "rigl", "obs", "wanda"])
def test_replayed_step_graph_trains_exactly_like_eager_steps(replayed_graphs, ragged_splits, pruner_name, augment):
    eager = engine_trainer(ragged_splits, pruner_name, 3, augment)
    graphed = graph_trainer(ragged_splits, pruner_name, 3, augment)
    outcomes = fit_together([eager, graphed], *resident(ragged_splits))
    assert [outcome.error for outcome in outcomes] == [None, None]
    assert (eager.engine, graphed.engine) == ("eager", "cuda-graph")
    assert [r.train_loss for r in outcomes[0].history] == [r.train_loss for r in outcomes[1].history]
    for a, b in zip(eager.model.parameters(), graphed.model.parameters()):
        assert torch.equal(a, b)
    assert graphed.graph.cursor.item() == len(ragged_splits.train_labels) // BATCH  # every full batch, once


def _tensors_the_graph_reads(trainer):
    """Every tensor a captured step reads or writes, by identity of its storage."""
    pruner_stats = []
    for value in vars(trainer.pruner).values():
        if isinstance(value, InputSecondMoments):
            value = value.stats
        if isinstance(value, (RunningMeans, InputGram)):
            pruner_stats += [*value.totals, value.count]
        elif isinstance(value, RunningMean):
            pruner_stats += [value.total, value.count]
    assert pruner_stats, "the pruner keeps no running statistics"
    optimizer_state = [t for state in trainer.optimizer.state.values() for t in state.values() if torch.is_tensor(t)]
    parameters = list(trainer.model.parameters())
    tensors = parameters + [p.grad for p in parameters] + list(trainer.masks._masks) + optimizer_state + pruner_stats
    tensors += [trainer._loss_sum, trainer.graph.order, trainer.graph.cursor]
    return {name: tensor.data_ptr() for name, tensor in enumerate(tensors)}


@pytest.mark.parametrize("pruner_name", ["taylor", "contribution", "rigl", "obs", "wanda", "snip"])
def test_pruning_and_evaluation_update_what_the_graph_reads_in_place(replayed_graphs, ragged_splits, pruner_name):
    trainer = graph_trainer(ragged_splits, pruner_name, 0, augment=False)
    train, val = resident(ragged_splits)
    trainer.train_epoch(train)
    before = _tensors_the_graph_reads(trainer)
    entry = trainer.prune(EventPlan(1, 0.6, regrow_fraction=0.3), val)  # compensation and regrowth where the pruner has them
    assert entry.removed > 0 and (pruner_name != "rigl" or sum(entry.regrown.values()) > 0)
    trainer.evaluate(val)
    trainer.train_epoch(train)  # replays, then the eager partial batch
    assert _tensors_the_graph_reads(trainer) == before


def test_a_failed_capture_trains_eagerly_and_says_why(monkeypatch, ragged_splits):
    def refuse(trainer, step):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    monkeypatch.setattr(StepGraph, "_record", staticmethod(refuse))
    eager = engine_trainer(ragged_splits, "taylor", 5)
    failed = graph_trainer(ragged_splits, "taylor", 5, augment=False)
    with pytest.warns(UserWarning, match="training eagerly") as warned:
        outcomes = fit_together([eager, failed], *resident(ragged_splits))
    assert len(warned) == 1 and failed.wants_graph is False  # tried once, not at every step
    assert outcomes[1].error is None  # not taken for a broken device: the run goes on
    assert failed.engine == "eager" and "operation not permitted" in failed.graph_error
    for a, b in zip(eager.model.parameters(), failed.model.parameters()):
        assert torch.equal(a, b)


def test_capture_time_is_recorded_apart_from_training_time(monkeypatch, ragged_splits):
    skew = {"seconds": 0.0}
    real_clock = engine.time.perf_counter
    monkeypatch.setattr(engine.time, "perf_counter", lambda: real_clock() + skew["seconds"])

    def slow_capture(trainer, step):
        skew["seconds"] += 1000.0  # a capture that takes 1,000 s on this clock
        return ReplayedStep(trainer, step)

    monkeypatch.setattr(StepGraph, "_record", staticmethod(slow_capture))
    trainer = graph_trainer(ragged_splits, "none", 0, augment=False)
    outcome = fit_together([trainer], *resident(ragged_splits))[0]
    assert trainer.capture_seconds >= 1000.0
    assert all(0.0 <= report.train_seconds < 1000.0 for report in outcome.history)
    solo = graph_trainer(ragged_splits, "none", 1, augment=False)
    _, seconds = solo.train_epoch(resident(ragged_splits)[0])  # the Trainer's own timing of an epoch with a capture
    assert solo.capture_seconds >= 1000.0 and 0.0 <= seconds < 1000.0



def test_a_broken_device_is_not_mistaken_for_a_failed_capture(monkeypatch, ragged_splits):
    # A sticky error from earlier work can surface during capture; it must propagate (and stop the
    # grid, see the device-failure test above), not be recorded as "this step cannot be captured".
    def refuse(trainer, step):
        raise RuntimeError("capture failed")

    def device_is_broken(device):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    trainer = graph_trainer(ragged_splits, "none", 0, augment=False)
    trainer.begin_epoch(resident(ragged_splits)[0])
    monkeypatch.setattr(StepGraph, "_record", staticmethod(refuse))
    monkeypatch.setattr(engine, "synchronise", device_is_broken)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        for _ in range(StepGraph.WARMUP_STEPS):
            trainer.advance()
    assert trainer.graph_error is None


def test_layer_hooks_are_removed_when_training_ends_so_the_model_is_plain_again(splits, tmp_path):
    trainer = engine_trainer(splits, "wanda", 0)
    assert trainer.model[1]._forward_hooks  # the inputs reach the pruner through a hook
    trainer.fit(*resident(splits))
    assert not any(module._forward_hooks for module in trainer.model.modules())
    torch.save(trainer.model, tmp_path / "model.pt")  # pickles: no closure over the trainer left


def test_a_restored_run_joins_a_group_at_its_next_epoch_and_ends_as_if_never_stopped(splits):
    from bench_harness import checkpoint

    whole, alone = engine_trainer(splits, "contribution", 0), engine_trainer(splits, "taylor", 1)
    whole.fit(*resident(splits))
    alone.fit(*resident(splits))
    saved = {}
    first = engine_trainer(splits, "contribution", 0)
    fit_together([first], *resident(splits), after_epoch=lambda index: saved.setdefault(first.epochs_done, checkpoint.dumps(first.state_dict(), {})))
    assert sorted(saved) == [1, 2, 3]  # after every epoch but the last
    restored, fresh = engine_trainer(splits, "contribution", 7), engine_trainer(splits, "taylor", 1)
    restored.load_state_dict(checkpoint.loads(saved[1], {})[0])
    done = []
    outcomes = fit_together([restored, fresh], *resident(splits), on_done=done.append)
    assert done == [0, 1] and [outcome.error for outcome in outcomes] == [None, None]
    for one, other in ((whole, restored), (alone, fresh)):
        assert [r.train_loss for r in one.outcome.history] == [r.train_loss for r in other.outcome.history]
        assert all(torch.equal(a, b) for a, b in zip(one.model.state_dict().values(), other.model.state_dict().values()))
        assert all(torch.equal(one.masks.weight[name], other.masks.weight[name]) for name in one.masks.weight)


def test_a_pruner_calling_sys_exit_fails_its_run_and_the_group_goes_on(splits):
    bad, good = engine_trainer(splits, "magnitude", 0), engine_trainer(splits, "magnitude", 1)
    bad.pruner.score = lambda layer, granularity: exit(5)
    outcomes = fit_together([bad, good], *resident(splits))
    assert isinstance(outcomes[0].error, SystemExit) and outcomes[1].error is None and len(outcomes[1].history) == EPOCHS


def test_the_weight_watch_sees_observe_change_the_weights_and_stays_quiet_otherwise(splits):
    honest, meddler = engine_trainer(splits, "taylor", 0), engine_trainer(splits, "taylor", 0)
    observe = meddler.pruner.observe

    def meddling(step):
        observe(step)
        with torch.no_grad():
            meddler.layers[0].weight.mul_(0.999)

    meddler.pruner.observe = meddling
    fit_together([honest, meddler], *resident(splits))
    observed = len(honest.observed_epochs)  # epochs 1 and 2: the one event follows epoch 2
    assert observed == EVERY and honest.watch.describe() is None and honest.watch.checked["observe"] == 2 * observed
    assert meddler.watch.changed == {"observe": 2 * observed}
    assert "observe() at 4 of 4 checked calls" in meddler.watch.describe()


def test_the_weight_watch_checks_the_first_and_the_last_observed_step_of_a_window(splits):
    class Window(registries().pruners.get("taylor")):
        observe_window = 1 / 3  # steps 6-9 of 10: the epoch's first step observes nothing

        def observe(self, step):
            super().observe(step)
            with torch.no_grad():
                self.layers[0].weight.mul_(0.999)

    meddler = engine_trainer(splits, None, 0, pruner_class=Window)
    fit_together([meddler], *resident(splits))
    assert meddler.watch.changed == {"observe": 2 * len(meddler.observed_epochs)}


@pytest.mark.parametrize("pruner_name", ["magnitude", "contribution", "rigl", "obs"])
def test_pruned_weights_stay_exactly_zero_through_every_step_without_masking_the_weights(splits, pruner_name):
    # The step masks gradients, not weights: Adam moves a weight whose gradient and moments are zero
    # by exactly zero. Checked after every step following an event with a cut, a compensation (obs)
    # and a regrowth (contribution, rigl), before the epoch's end enforces the masks again.
    trainer = engine_trainer(splits, pruner_name, 5)
    train, val = resident(splits)
    trainer.train_epoch(train)
    entry = trainer.prune(EventPlan(1, 0.5, regrow_fraction=0.3), val)
    assert entry.removed > 0
    trainer.begin_epoch(train)
    for _ in range(trainer.steps_per_epoch(train)):
        trainer.advance()
        for layer in trainer.layers:
            pruned = ~trainer.masks.alive_connections(layer.name)
            assert pruned.any() and torch.count_nonzero(layer.weight[pruned]) == 0
    trainer.end_epoch()


class _GradientSpy(registries().pruners.get("magnitude")):
    """Counts, at each observe, the pruned positions whose gradient it sees non-zero."""

    def observe(self, step):
        masks = self.context.model.spy_masks
        self.seen = sum(int(torch.count_nonzero(layer.weight.grad[masks.weight[layer.name] == 0])) for layer in self.layers)
        if step.dense_gradients is not None:
            assert all(step.dense_gradients[layer.name] is layer.weight.grad for layer in self.layers)


class _DenseGradientSpy(_GradientSpy):
    wants_dense_gradients = True


@pytest.mark.parametrize("spy, sees_pruned", [(_GradientSpy, False), (_DenseGradientSpy, True)])
def test_observe_sees_masked_gradients_unless_the_pruner_wants_dense_ones(splits, spy, sees_pruned):
    trainer = engine_trainer(splits, None, 2, pruner_class=spy)
    trainer.model.spy_masks = trainer.masks
    train, val = resident(splits)
    trainer.train_epoch(train)
    trainer.prune(EventPlan(1, 0.5), val)
    trainer.train_epoch(train)
    assert (trainer.pruner.seen > 0) is sees_pruned
    for layer in trainer.layers:  # and the optimizer, after observe, saw them masked
        assert torch.count_nonzero(layer.weight.grad[~trainer.masks.alive_connections(layer.name)]) == 0


class _FlatGradientSpy(registries().pruners.get("magnitude")):
    """Checks, at each observe, that ``step.gradients`` is the memory every ``.grad`` lives in."""

    wants_dense_gradients = True

    def observe(self, step):
        named = layer_parameters(self.layers)
        assert step.gradients is not None and step.gradients.numel() == sum(param.numel() for _, param in named)
        assert torch.equal(step.gradients, torch.cat([param.grad.flatten() for _, param in named]))
        storage = step.gradients.untyped_storage().data_ptr()
        assert all(param.grad.untyped_storage().data_ptr() == storage for _, param in named)
        self.seen = getattr(self, "seen", 0) + 1


def test_observe_gets_every_gradient_in_one_flat_buffer_that_the_grads_are_views_of(splits):
    trainer = engine_trainer(splits, None, 2, pruner_class=_FlatGradientSpy)
    train, val = resident(splits)
    trainer.train_epoch(train)
    trainer.prune(EventPlan(1, 0.5), val)
    trainer.train_epoch(train)
    assert trainer.pruner.seen == 2 * trainer.steps_per_epoch(train)


@pytest.mark.parametrize("pruner_name", ["contribution", "obd-fisher", "contribution-stride3"])
def test_statistics_from_the_flat_gradients_are_those_from_the_grad_tensors_bit_for_bit(splits, monkeypatch, pruner_name):
    # obd-fisher and its subclasses read the flat buffer where the engine has one (dense gradients
    # for contribution, masked ones for obd-fisher); without it, the .grad tensors.
    flat = engine_trainer(splits, pruner_name, 3)
    updates = []
    add_products = RunningMeans.add_products_
    monkeypatch.setattr(RunningMeans, "add_products_", lambda self, first, *rest, **kw: updates.append(torch.is_tensor(first)) or add_products(self, first, *rest, **kw))
    flat.fit(*resident(splits))
    assert updates and all(updates)  # every update took the flat path
    monkeypatch.setattr(engine, "flat_gradients", lambda params: None)
    listed = engine_trainer(splits, pruner_name, 3)
    assert flat.gradients is not None and listed.gradients is None
    updates.clear()
    listed.fit(*resident(splits))
    assert updates and not any(updates)
    for one, other in zip([*flat.model.parameters(), *flat.pruner.grad_square_mean.totals, *flat.pruner.grad_mean.totals],
                          [*listed.model.parameters(), *listed.pruner.grad_square_mean.totals, *listed.pruner.grad_mean.totals]):
        assert torch.equal(one, other)


def test_a_checkpoint_keeps_the_flat_totals_once_not_their_views_too(splits):
    pruner = engine_trainer(splits, "contribution", 3).pruner
    state = pruner.state_dict()
    assert set(state["grad_mean"]) == set(state["grad_square_mean"]) == {"flat", "count"}
    state["grad_mean"]["flat"].fill_(2.0)
    pruner.load_state_dict(state)  # in place: the views see it
    assert all(torch.all(total == 2.0) for total in pruner.grad_mean.totals)


def test_running_means_take_one_flat_update_in_their_layout_or_one_tensor_per_statistic():
    likes = [torch.zeros(3, 2), torch.zeros(4)]
    values = [torch.arange(6.0).view(3, 2), torch.tensor([1.0, -2.0, 3.0, 0.5])]
    by_list, by_flat = RunningMeans(likes), RunningMeans(likes)
    by_list.add_products_(values, values, scale=2.0)
    by_flat.add_products_(torch.cat([v.flatten() for v in values]), torch.cat([v.flatten() for v in values]), scale=2.0)
    assert all(torch.equal(by_list.mean(i), by_flat.mean(i)) for i in range(2))
    assert torch.equal(by_flat.mean(1), 2.0 * values[1].square())
    with pytest.raises(ValueError, match="10 elements"):
        by_flat.add_(torch.zeros(9))
    with pytest.raises(ValueError, match="two lists or two flat tensors"):
        by_flat.add_products_(torch.zeros(10), values)
    by_flat.reset_()
    assert all(torch.count_nonzero(total) == 0 for total in by_flat.totals)


def _second_parameters():
    weight = torch.nn.Parameter(torch.zeros(3))
    return {
        "another dtype": [weight, torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))],
        "frozen": [weight, torch.nn.Parameter(torch.zeros(2), requires_grad=False)],
        "channels last": [weight, torch.nn.Parameter(torch.zeros(4, 3, 2, 2).to(memory_format=torch.channels_last))],
        "shared": [weight, weight],
        "computed": [weight, torch.nn.Parameter(torch.zeros(2)) * 2.0],
    }


@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf")
@pytest.mark.parametrize("case", list(_second_parameters()))
def test_no_flat_gradient_buffer_where_one_cannot_stand_in_for_the_parameters_own_gradients(case):
    params = _second_parameters()[case]
    assert flat_gradients(params) is None and all(param.grad is None for param in params)
    assert flat_gradients(params[:1]) is not None and params[0].grad.shape == (3,)


class _GradientResetter(registries().pruners.get("obd-fisher")):
    """Plugin code that sets every .grad to None at each event (as model.zero_grad() does)."""

    def after_prune(self):
        super().after_prune()
        self.context.model.zero_grad()


def test_gradients_replaced_between_epochs_are_noticed_and_read_from_the_grad_tensors(splits):
    # Events after epochs 2 and 4: the statistics of epochs 3-4, taken after the reset, choose the second cut.
    schedule = PruningSchedule(5, "fixed", (2, 4), (0.6, 0.36))
    trainer = engine_trainer(splits, None, 3, pruner_class=_GradientResetter, schedule=schedule)
    reference = engine_trainer(splits, "obd-fisher", 3, schedule=schedule)
    assert trainer.gradients is not None
    for one in (trainer, reference):
        one.fit(*resident(splits))
    assert trainer.gradients is None  # the buffer was dropped at the epoch after the event
    for one, other in zip([*trainer.model.parameters(), trainer.pruner.grad_square_mean.flat], [*reference.model.parameters(), reference.pruner.grad_square_mean.flat]):
        assert torch.equal(one, other)


class _StepCounter(registries().pruners.get("magnitude")):
    """Counts its observed steps per epoch (the epoch read from the trainer the test attaches)."""

    def observe(self, step):
        epoch = self.trainer.epochs_done + 1
        self.steps[epoch] = self.steps.get(epoch, 0) + 1


@pytest.mark.parametrize("window, observed", [(None, {1, 2, 3, 4, 5}), (1, {2, 5}), (2, {1, 2, 4, 5})])
def test_observe_runs_only_in_the_epochs_whose_statistics_an_event_reads(splits, window, observed):
    # Events after epochs 2 and 5 of 7: nothing after the last event is observed, and a pruner that
    # needs one epoch of statistics is observed only in the epoch before each event.
    class Counter(_StepCounter):
        observe_epochs = window

    schedule = PruningSchedule(7, "fixed", (2, 5), (0.6, 0.36))
    trainer = engine_trainer(splits, None, 1, pruner_class=Counter, schedule=schedule)
    trainer.pruner.trainer, trainer.pruner.steps = trainer, {}
    outcome = trainer.fit(*resident(splits))
    assert set(trainer.pruner.steps) == observed
    assert set(trainer.pruner.steps.values()) == {trainer.steps_per_epoch(resident(splits)[0])}
    assert [report.epoch for report in outcome.history if report.event is not None] == [2, 5]


class _StepIndexes(registries().pruners.get("magnitude")):
    """Records the index (within its epoch) of every step it observes."""

    def observe(self, step):
        self.steps.setdefault(self.trainer.epochs_done + 1, []).append(self.trainer._steps_done)


@pytest.mark.parametrize("every, window, first", [(1, 1.0, 0), (3, 1.0, 0), (4, 1.0, 0), (1, 1 / 3, 6), (2, 0.5, 5), (1, 1, 0)])
def test_a_pruner_observing_every_n_th_step_of_a_window_sees_the_steps_w_w_plus_n_of_each_observed_epoch(splits, every, window, first):
    class Sampler(_StepIndexes):
        observe_every = every
        observe_window = window

    trainer = engine_trainer(splits, None, 1, pruner_class=Sampler)
    trainer.pruner.trainer, trainer.pruner.steps = trainer, {}
    trainer.fit(*resident(splits))
    steps = trainer.steps_per_epoch(resident(splits)[0])
    assert steps == 10  # a third is the last 4 steps, a half the last 5
    assert set(trainer.pruner.steps) == set(trainer.observed_epochs) == {1, 2}  # the one event follows epoch 2
    assert all(indexes == list(range(first, steps, every)) for indexes in trainer.pruner.steps.values())


@pytest.mark.parametrize("share, steps, first", [(1 / 3, 860, 573), (1 / 3, 861, 574), (1 / 3, 3, 2), (0.5, 7, 3), (1.0, 5, 0), (0.001, 10, 9),
                                                   (0.07, 100, 93), (0.035, 200, 193)])
def test_an_observation_window_is_the_epochs_last_steps_with_its_share_read_as_an_exact_fraction(share, steps, first):
    # 7% of 100 steps is 7 steps, although 0.07 * 100 is 7.000000000000001 in floats (whose ceiling
    # would make it 8); likewise 3.5% of 200.
    assert window_start(share, steps) == first


@pytest.mark.parametrize("pruner, observed", [("contribution-stride3", lambda steps: range(0, steps, 3)), ("contribution-window3", lambda steps: range(steps - 4, steps))])
def test_a_pruner_observing_some_steps_replays_two_graphs_and_trains_as_eager_steps_do(replayed_graphs, ragged_splits, monkeypatch, pruner, observed):
    # Epochs 1-2 observe (the event follows epoch 2): one graph with observe and one without, both
    # replayed in turn; epochs 3-4 observe nothing, so one graph without observe is captured then.
    captured = []
    monkeypatch.setattr(StepGraph, "_record", staticmethod(lambda trainer, step: captured.append(step.keywords["observe"]) or ReplayedStep(trainer, step)))
    eager = engine_trainer(ragged_splits, pruner, 4)
    graphed = graph_trainer(ragged_splits, pruner, 4, False)
    calls = []
    observe = graphed.pruner.observe
    graphed.pruner.observe = lambda step: calls.append((graphed.epochs_done + 1, graphed._steps_done, graphed.graph is None)) or observe(step)
    fit_together([eager, graphed], *resident(ragged_splits))
    assert captured == [True, False, False] and graphed.engine == "cuda-graph"
    steps = graphed.steps_per_epoch(resident(ragged_splits)[0])  # 10 full batches and a partial one
    assert [call[:2] for call in calls] == [(epoch, index) for epoch in (1, 2) for index in observed(steps)]
    assert calls[0][2]  # the first observation runs eagerly, before the capture, even when the window starts late
    for a, b in zip(eager.model.parameters(), graphed.model.parameters()):
        assert torch.equal(a, b)
    assert [r.train_loss for r in eager.outcome.history] == [r.train_loss for r in graphed.outcome.history]


def test_switching_the_observation_off_recaptures_the_step_and_trains_as_eager_steps_do(replayed_graphs, ragged_splits, monkeypatch):
    # The event follows epoch 2 of 4: the graph of epochs 1-2 holds observe, epochs 3-4 need one without.
    captured = []
    monkeypatch.setattr(StepGraph, "_record", staticmethod(lambda trainer, step: captured.append(trainer.observing) or ReplayedStep(trainer, step)))
    eager, graphed = engine_trainer(ragged_splits, "contribution", 4), graph_trainer(ragged_splits, "contribution", 4, False)
    fit_together([eager, graphed], *resident(ragged_splits))
    assert captured == [True, False] and graphed.engine == "cuda-graph"
    for a, b in zip(eager.model.parameters(), graphed.model.parameters()):
        assert torch.equal(a, b)
