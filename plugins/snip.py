"""SNIP's connection sensitivity (Lee et al. 2019), measured during training instead of at initialisation.

SNIP scores a connection by |∂L/∂c| for a gate c on it, which is |g·w|: the first-order change of
the loss when the weight is removed. The original computes it once, on a batch, before training;
here g is the mean gradient over the steps since the last event (the gradient of the loss averaged
over those batches), so each event scores the network it is about to prune. Unlike ``taylor``,
which averages the *squared* per-batch term, the averaging happens before the absolute value: terms
whose sign flips from batch to batch cancel. A neuron's score is the absolute sum of its incoming
weights' and bias's terms (the gate on the unit).
"""

import torch

from bench_harness import hookimpl
from bench_harness.pruner import PrunableLayer, Pruner, PruningContext, StepView
from bench_harness.statistics import RunningMeans


class SnipPruner(Pruner):
    """|E[g]·w| per connection, |Σ E[g]·w| over a unit's incoming weights and bias per neuron."""

    name = "snip"
    description = "SNIP (Lee 2019): |E[g]·w| with the gradient averaged since the last event."

    def __init__(self, context: PruningContext) -> None:
        super().__init__(context)
        self.params = [layer.weight for layer in self.layers]
        if context.granularity == "neurons":
            self.params += [layer.bias for layer in self.layers if layer.bias is not None]
        self.index = {id(param): position for position, param in enumerate(self.params)}
        self.gradients = RunningMeans(self.params)

    @torch.no_grad()
    def observe(self, step: StepView) -> None:
        """Add this step's gradients to the running means (one fused kernel)."""
        self.gradients.add_([param.grad for param in self.params])

    def _term(self, param: torch.Tensor) -> torch.Tensor:
        return self.gradients.mean(self.index[id(param)]) * param.detach()

    def score(self, layer: PrunableLayer, granularity: str) -> torch.Tensor:
        """|E[g]·w|, or |Σ E[g]·w| over a unit's incoming weights and bias."""
        if granularity == "connections":
            return self._term(layer.weight).abs()
        per_unit = layer.incoming_per_unit(self._term(layer.weight))
        if layer.bias is not None:
            per_unit = per_unit + self._term(layer.bias)
        return per_unit.abs()

    def after_prune(self) -> None:
        """Each event scores the gradients of its own interval."""
        self.gradients.reset_()


@hookimpl
def register_pruners(register):
    """Register SNIP."""
    register(SnipPruner)
