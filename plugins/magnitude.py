"""Magnitude pruning (Han et al. 2015): the smallest weights, or the units with the smallest weights."""

import torch

from bench_harness import hookimpl
from bench_harness.pruner import PrunableLayer, Pruner


class MagnitudePruner(Pruner):
    """Scores a connection by |w| and a neuron by the L2 norm of its incoming weights."""

    name = "magnitude"
    description = "Magnitude: |w| per connection, L2 norm of incoming weights per neuron."

    def score(self, layer: PrunableLayer, granularity: str) -> torch.Tensor:
        """|w|, or the per-unit L2 norm of the incoming weights."""
        weight = layer.weight.detach()
        if granularity == "connections":
            return weight.abs()
        return layer.incoming_per_unit(weight.square()).sqrt()


@hookimpl
def register_pruners(register):
    """Register the magnitude baseline."""
    register(MagnitudePruner)
