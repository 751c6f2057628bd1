"""First-order Taylor importance (Molchanov et al. 2019), accumulated over the steps since the last event.

A connection's importance is the squared first-order estimate of the loss change when it is removed,
(g·w)², averaged over the training steps of the interval. A neuron's importance is the square of the
*summed* first-order terms of all its parameters (incoming weights and bias), which is Molchanov's
group criterion: the gradient of a gate on the unit times the gate's value.
"""

import torch

from bench_harness import hookimpl
from bench_harness.pruner import PrunableLayer, Pruner, PruningContext, RunningMean, StepView


class TaylorPruner(Pruner):
    """Mean over the interval of (g·w)² per connection, or of (Σ g·w over a unit)² per neuron."""

    name = "taylor"
    description = "First-order Taylor (Molchanov 2019): mean (g·w)² since the last event."

    def __init__(self, context: PruningContext) -> None:
        super().__init__(context)
        self.neurons = context.granularity == "neurons"
        self.stats = {
            layer.name: RunningMean(torch.empty(layer.units, device=layer.weight.device) if self.neurons else layer.weight)
            for layer in self.layers
        }

    @torch.no_grad()
    def observe(self, step: StepView) -> None:
        """Add this step's (g·w)² (or per-unit (Σ g·w)²) to the running means."""
        for layer in self.layers:
            first_order = layer.weight.grad * layer.weight
            if self.neurons:
                per_unit = layer.incoming_per_unit(first_order)
                if layer.bias is not None:
                    per_unit = per_unit + layer.bias.grad * layer.bias
                self.stats[layer.name].add_(per_unit.square())
            else:
                self.stats[layer.name].add_(first_order.square())

    def score(self, layer: PrunableLayer, granularity: str) -> torch.Tensor:
        """The running mean since the last event."""
        return self.stats[layer.name].mean()

    def after_prune(self) -> None:
        """Each interval is scored on its own steps only."""
        for stat in self.stats.values():
            stat.reset_()


@hookimpl
def register_pruners(register):
    """Register the Taylor baseline."""
    register(TaylorPruner)
