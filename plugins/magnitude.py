"""Magnitude pruning (Han et al. 2015): the smallest weights, or the units with the smallest weights."""

import torch

from bench_harness import hookimpl
from bench_harness.pruner import PrunableLayer, Pruner


class MagnitudePruner(Pruner):
    """Scores a connection by w² and a neuron by the squared L2 norm of its incoming weights.

    Squares rank exactly as |w| and the L2 norm do, within a layer and across layers, and they are
    the additive "energy" that LAMP's normalisation (``--scope lamp``) is defined on.
    """

    name = "magnitude"
    description = "Magnitude (Han 2015): w² per connection, squared L2 norm of incoming weights per neuron."

    def score(self, layer: PrunableLayer, granularity: str) -> torch.Tensor:
        """w², or its sum over each unit's incoming weights."""
        squares = layer.weight.detach().square()
        if granularity == "connections":
            return squares
        return layer.incoming_per_unit(squares)


@hookimpl
def register_pruners(register):
    """Register the magnitude baseline."""
    register(MagnitudePruner)
