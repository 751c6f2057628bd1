"""RigL (Evci et al. 2020): drop the smallest weights, regrow where the dense gradient is largest.

At each event the harness removes the schedule's count plus g connections per layer by this pruner's
scores (w², magnitude), then regrows the g non-alive connections whose gradient magnitude is
largest; regrown weights start at zero with fresh optimizer state. g is ``--regrow-fraction`` (0.3
by default, RigL's drop fraction) of the layer's alive connections, decayed with RigL's cosine.
RigL reads the gradient of one batch at the update; here the gradient is averaged over the steps
since the last event (the dense gradient: pruned positions included), a less noisy estimate of the
same quantity. With ``--regrow-every N`` the swaps also happen between pruning events, as in RigL's
dynamic sparse training.
"""

import torch

from bench_harness import hookimpl
from bench_harness.pruner import PrunableLayer, Pruner, PruningContext, StepView
from bench_harness.statistics import RunningMeans


class RigLPruner(Pruner):
    """Drop by w², regrow by |mean dense gradient|."""

    name = "rigl"
    description = "RigL (Evci 2020): drop by magnitude, regrow by dense-gradient magnitude."
    granularities = ("connections",)
    wants_dense_gradients = True

    def __init__(self, context: PruningContext) -> None:
        super().__init__(context)
        self.gradients = RunningMeans([layer.weight for layer in self.layers])
        self.position = {layer.name: index for index, layer in enumerate(self.layers)}

    @torch.no_grad()
    def observe(self, step: StepView) -> None:
        """Add this step's unmasked gradients (one fused kernel)."""
        self.gradients.add_([step.dense_gradients[layer.name] for layer in self.layers])

    def score(self, layer: PrunableLayer, granularity: str) -> torch.Tensor:
        """Magnitude, w²."""
        return layer.weight.detach().square()

    def grow_scores(self, layer: PrunableLayer) -> torch.Tensor:
        """|mean dense gradient| since the last event."""
        return self.gradients.mean(self.position[layer.name]).abs()

    def after_prune(self) -> None:
        """Gradients of the next interval only."""
        self.gradients.reset_()


@hookimpl
def register_pruners(register):
    """Register RigL."""
    register(RigLPruner)
