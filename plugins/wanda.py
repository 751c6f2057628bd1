"""Wanda (Sun et al. 2023): a weight matters in proportion to its size and to the size of its input.

The score of the connection from input feature j is |w|·‖x_j‖₂, with ‖x_j‖₂ the norm of that input
over the samples seen; here the root of the mean of x_j² over the steps since the last event, which
ranks the same. The inputs are the layer's *inputs* (``wants_inputs``): for LeNet the flattened
image and the hidden activations after ReLU; for a convolution, per input channel. The original
compares weights within each output row; the harness's allocation (``--scope``) decides instead,
as for every criterion.
"""

import torch

from bench_harness import hookimpl
from bench_harness.pruner import PrunableLayer, Pruner, PruningContext, StepView
from bench_harness.statistics import InputSecondMoments


class WandaPruner(Pruner):
    """|w| times the RMS of the input feature the weight reads."""

    name = "wanda"
    description = "Wanda (Sun 2023): |w|·‖x‖₂ of the weight's input feature."
    granularities = ("connections",)
    wants_inputs = True

    def __init__(self, context: PruningContext) -> None:
        super().__init__(context)
        self.moments = InputSecondMoments(self.layers)

    @torch.no_grad()
    def observe(self, step: StepView) -> None:
        """Add this step's per-feature E[x²] of every layer's input."""
        self.moments.add_(step.inputs)

    def score(self, layer: PrunableLayer, granularity: str) -> torch.Tensor:
        """|w|·sqrt(E[x²]) of the input each weight reads."""
        return layer.weight.detach().abs() * self.moments.mean(layer).sqrt()

    def after_prune(self) -> None:
        """Inputs change as the network is pruned: each event uses its own interval."""
        self.moments.reset_()


@hookimpl
def register_pruners(register):
    """Register Wanda."""
    register(WandaPruner)
