"""First-order Taylor importance (Molchanov et al. 2019), accumulated over the steps since the last event.

A connection's importance is the squared first-order estimate of the loss change when it is removed,
(g·w)², averaged over the training steps of the interval. A neuron's importance is the square of the
*summed* first-order terms of all its parameters (incoming weights and bias), which is Molchanov's
group criterion: the gradient of a gate on the unit times the gate's value.
"""

import torch

from bench_harness import hookimpl
from bench_harness.pruner import PrunableLayer, Pruner, PruningContext, RunningMeans, StepView


class TaylorPruner(Pruner):
    """Mean over the interval of (g·w)² per connection, or of (Σ g·w over a unit)² per neuron."""

    name = "taylor"
    description = "First-order Taylor (Molchanov 2019): mean (g·w)² since the last event."

    def __init__(self, context: PruningContext) -> None:
        super().__init__(context)
        self.neurons = context.granularity == "neurons"
        self.weights = [layer.weight for layer in self.layers]
        shapes = [torch.empty(layer.units, device=layer.weight.device) if self.neurons else layer.weight for layer in self.layers]
        self.stats = RunningMeans(shapes)
        self.position = {layer.name: index for index, layer in enumerate(self.layers)}

    @torch.no_grad()
    def observe(self, step: StepView) -> None:
        """Add this step's (g·w)² (or per-unit (Σ g·w)²) to the running means, fused across layers."""
        first_order = torch._foreach_mul([weight.grad for weight in self.weights], self.weights)
        if self.neurons:
            terms = []
            for layer, per_weight in zip(self.layers, first_order):
                per_unit = layer.incoming_per_unit(per_weight)
                if layer.bias is not None:
                    per_unit = per_unit.addcmul(layer.bias.grad, layer.bias)
                terms.append(per_unit)
            first_order = terms
        self.stats.add_products_(first_order, first_order)

    def score(self, layer: PrunableLayer, granularity: str) -> torch.Tensor:
        """The running mean since the last event."""
        return self.stats.mean(self.position[layer.name])

    def after_prune(self) -> None:
        """Each interval is scored on its own steps only."""
        self.stats.reset_()


@hookimpl
def register_pruners(register):
    """Register the Taylor baseline."""
    register(TaylorPruner)
