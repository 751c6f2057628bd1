"""Shared pieces for tests of the pruning event: a small model, and pruners with fixed answers."""

from __future__ import annotations

import torch

from bench_harness.masks import MaskSet
from bench_harness.models import build_cnn, build_fcnn
from bench_harness.pruner import Pruner, PruningContext, find_prunable_layers


def fcnn():
    torch.manual_seed(0)
    return build_fcnn((1, 8, 8), 10, hidden=(20, 12))


def cnn():
    torch.manual_seed(0)
    return build_cnn((3, 8, 8), 10)


def random_scores(layers, granularity, seed):
    generator = torch.Generator().manual_seed(seed)
    shape = (lambda layer: layer.weight.shape) if granularity == "connections" else (lambda layer: (layer.units,))
    return {layer.name: torch.rand(shape(layer), generator=generator) for layer in layers}


class FixedScores(Pruner):
    """Returns whatever scores (and grow scores, compensations) a test put in ``answers``."""

    name = "fixed"

    def __init__(self, context, scores=None, grow=None):
        super().__init__(context)
        self.scores = scores or {}
        self.grow = grow
        self.resets = 0

    def score(self, layer, granularity):
        return self.scores[layer.name]

    def after_prune(self):
        self.resets += 1


class Regrowing(FixedScores):
    name = "fixed-regrow"

    def grow_scores(self, layer):
        return self.grow[layer.name]


def setup(model=None, granularity="connections", pruner_class=FixedScores, lr=0.01, **kwargs):
    """(model, layers, masks, optimizer, pruner) for a pruner class built on a fresh model."""
    model = model if model is not None else fcnn()
    layers = find_prunable_layers(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    masks = MaskSet(layers)
    context = PruningContext(model, layers, optimizer, 0, torch.device("cpu"), granularity, 16)
    return model, layers, masks, optimizer, pruner_class(context, **kwargs)
