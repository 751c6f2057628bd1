"""Movement pruning (Sanh et al. 2020) as a third-party bench-harness plugin.

A weight that training keeps pushing away from zero matters; one drifting towards zero does not.
The score is minus the sum over training steps of gradient times weight, restarted at each event.
"""

import torch

from bench_harness import hookimpl
from bench_harness.pruner import Pruner, RunningMean


class MovementPruner(Pruner):
    name = "movement"
    description = "Movement (Sanh 2020): -sum of g*w over the steps since the last event."
    granularities = ("connections",)

    def __init__(self, context):
        super().__init__(context)
        self.movement = {layer.name: RunningMean(layer.weight) for layer in self.layers}

    @torch.no_grad()
    def observe(self, step):
        for layer in self.layers:
            self.movement[layer.name].add_(-layer.weight.grad * layer.weight)

    def score(self, layer, granularity):
        return self.movement[layer.name].total

    def after_prune(self):
        for stat in self.movement.values():
            stat.reset_()


@hookimpl
def register_pruners(register):
    register(MovementPruner)
