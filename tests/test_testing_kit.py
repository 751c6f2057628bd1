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


@pytest.mark.parametrize(
    "pruner_class, message",
    [
        (WrongShape, "expected shape"),
        (SyncsInObserve, "__bool__ in observe"),
        (ChangesWeightsInObserve, "changed a weight in observe"),
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
