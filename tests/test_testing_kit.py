"""The plugin authors' kit catches every broken promise it lists, and passes a correct pruner."""

import itertools

import pytest
import torch

from bench_harness.pruner import Pruner
from bench_harness.testing import PrunerContractError, check_pruner
from bench_harness_plugins.magnitude import MagnitudePruner


class WrongShape(MagnitudePruner):
    name = "wrong-shape"

    def score(self, layer, granularity):
        return torch.ones(3)


class SyncsInObserve(MagnitudePruner):
    name = "syncs"

    def observe(self, step):
        if step.loss > 0:  # bool() of a tensor: waits for the device
            pass


class ChangesWeightsInObserve(MagnitudePruner):
    name = "meddles"

    def observe(self, step):
        with torch.no_grad():
            self.layers[0].weight.mul_(0.5)


class ScalesDenseGradientsInObserve(MagnitudePruner):
    """Dense gradients are the parameters' own .grad: scaling them in place changes what Adam steps with."""

    name = "meddles-with-gradients"
    wants_dense_gradients = True

    def observe(self, step):
        for gradient in step.dense_gradients.values():
            gradient.mul_(100.0)


class ChangesWeightsInScore(MagnitudePruner):
    name = "meddles-late"

    def score(self, layer, granularity):
        with torch.no_grad():
            layer.weight.add_(0.01 * layer.weight.sign())
        return super().score(layer, granularity)


class ChangesWeightsAfterPrune(MagnitudePruner):
    name = "meddles-after"

    def after_prune(self):
        with torch.no_grad():
            self.layers[1].weight.mul_(1.5)


_counter = itertools.count()


class NotDeterministic(MagnitudePruner):
    name = "flaky"

    def __init__(self, context):
        super().__init__(context)
        self.offset = next(_counter)

    def score(self, layer, granularity):
        generator = torch.Generator().manual_seed(self.offset)
        shape = layer.weight.shape if granularity == "connections" else (layer.units,)
        return torch.rand(shape, generator=generator)


class IntegerScores(MagnitudePruner):
    name = "integers"

    def score(self, layer, granularity):
        return super().score(layer, granularity).long()


class BadCompensation(MagnitudePruner):
    name = "bad-compensation"

    def compensate(self, layer, cut):
        return torch.zeros(2, 2)


class ForgetsANumber(MagnitudePruner):
    """Keeps a count of steps in a Python number, which the default state_dict() cannot see."""

    name = "forgetful"

    def __init__(self, context):
        super().__init__(context)
        self.steps = 0

    def observe(self, step):
        self.steps += 1

    def score(self, layer, granularity):
        return super().score(layer, granularity) * (1 + torch.arange(layer.weight.numel()).view_as(layer.weight) % (self.steps + 2))


class RemembersTheNumber(ForgetsANumber):
    """The same pruner, saving its number too: it resumes exactly."""

    name = "remembers"

    def state_dict(self):
        return {**super().state_dict(), "steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state.pop("steps")
        super().load_state_dict(state)


class RebindsItsTensors(Pruner):
    """Restores by binding new tensors: a captured graph would keep updating the old ones."""

    name = "rebinds"
    granularities = ("connections",)

    def __init__(self, context):
        super().__init__(context)
        self.total = [torch.zeros_like(layer.weight) for layer in self.layers]

    def observe(self, step):
        torch._foreach_add_(self.total, [layer.weight.grad.abs() for layer in self.layers])

    def score(self, layer, granularity):
        return self.total[self.layers.index(layer)].clone()

    def load_state_dict(self, state):
        self.total = [tensor.clone() for tensor in state["total"]]


@pytest.mark.parametrize(
    "pruner_class, message",
    [
        (ForgetsANumber, "does not resume exactly"),
        (RebindsItsTensors, r"replaced total\[0\], .* instead of copying into it"),
        (WrongShape, "expected shape"),
        (SyncsInObserve, "__bool__ in observe"),
        (ChangesWeightsInObserve, "changed a weight in observe"),
        (ScalesDenseGradientsInObserve, "changed a gradient in observe"),
        (ChangesWeightsInScore, "score\\(\\) must not change state"),
        (ChangesWeightsAfterPrune, "changed by something other than compensate"),
        (NotDeterministic, "not deterministic"),
        (IntegerScores, "floating dtype"),
        (BadCompensation, "compensation of shape"),
    ],
)
def test_the_kit_names_each_broken_promise(pruner_class, message):
    with pytest.raises(PrunerContractError, match=message):
        check_pruner(pruner_class, granularities=("connections",))


def test_an_uncapturable_pruner_may_synchronise_in_observe():
    class Honest(SyncsInObserve):
        name = "honest"
        capturable = False

    check_pruner(Honest, granularities=("connections",))


def test_a_class_that_is_not_a_pruner_is_refused():
    with pytest.raises(PrunerContractError, match="not a subclass"):
        check_pruner(object)
    with pytest.raises(PrunerContractError, match="does not declare"):
        check_pruner(type("OnlyConnections", (Pruner,), {"name": "c", "granularities": ("connections",)}), granularities=("neurons",))


def test_a_pruner_that_saves_its_own_state_resumes_exactly():
    check_pruner(RemembersTheNumber, granularities=("connections",))


def test_the_default_state_finds_tensors_generators_and_accumulators_and_restores_them_in_place():
    from bench_harness.models import build_fcnn
    from bench_harness.pruner import PruningContext, find_prunable_layers, state_tensors
    from bench_harness.statistics import RunningMeans

    class Keeper(MagnitudePruner):
        name = "keeper"

        def __init__(self, context):
            super().__init__(context)
            self.generator = torch.Generator().manual_seed(context.seed)
            self.nested = {"means": RunningMeans([layer.weight for layer in self.layers]), "pair": (torch.zeros(2), 3)}
            self.weights = [layer.weight for layer in self.layers]  # the model's own: not the pruner's to save
            self.cache = {}

    def build():
        model = build_fcnn((1, 6, 6), 4, hidden=(5,))
        layers = find_prunable_layers(model)
        return Keeper(PruningContext(model, layers, torch.optim.Adam(model.parameters()), 0, torch.device("cpu"), "connections", 8))

    first = build()
    first.nested["means"].add_([torch.ones_like(w) for w in first.weights])
    first.nested["pair"][0].fill_(7.0)
    first.generator.manual_seed(99)
    first.cache["late"] = torch.ones(3)
    state = first.state_dict()
    assert set(state) == {"generator", "nested", "cache"} and "weights" not in state
    second = build()
    places = state_tensors(second)
    second.load_state_dict(state)
    assert all(state_tensors(second)[path] == storage for path, storage in places.items())  # copied in place
    assert torch.equal(second.nested["pair"][0], torch.full((2,), 7.0)) and float(second.nested["means"].count) == 1.0
    assert torch.equal(torch.rand(3, generator=second.generator), torch.rand(3, generator=torch.Generator().manual_seed(99)))
    assert torch.equal(second.cache["late"], torch.ones(3))
    with pytest.raises(ValueError, match="shape"):
        second.load_state_dict({**state, "nested": {**state["nested"], "pair": [torch.zeros(5), None]}})
