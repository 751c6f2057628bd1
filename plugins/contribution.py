"""``contribution``: our method. Every connection's contribution to the training loss is estimated in
loss units during training, both ways: what removing a live connection would cost, and what growing
a pruned one back would gain. The drop and the regrowth of a pruning event use the same two moments
of the gradient, so one set of running statistics (two fused kernels per step) serves both.

With g the minibatch gradient of a weight w (the *dense* gradient: pruned positions included), E[g]
its mean over the steps since the last event and F = E[B·g²] − (E[B]−1)·E[g]² its per-sample second
moment (the empirical Fisher diagonal, corrected for the batch size B), the local quadratic model of
the loss along that one coordinate is  L(w + δ) ≈ L(w) + E[g]·δ + ½·F·δ².

* **drop** (OBD with a Fisher diagonal, LeCun et al. 1990; Hassibi & Stork's OBS without the
  off-diagonal terms): removing w (δ = −w) at a trained point (E[g] ≈ 0) costs ΔL⁻ ≈ ½·F·w². The
  lowest go first; a neuron's score is the sum over its incoming weights, bias and outgoing weights.
* **regrow**: a pruned position sits at w = 0; letting it train, the best it can do in that model is
  δ = −E[g]/F, a loss decrease of ΔL⁺ = E[g]² / (2·F). This is the *gain* of one natural-gradient
  step: RigL (Evci et al. 2020) regrows by |E[g]| alone, which favours positions whose gradient is
  large only because it is noisy or its curvature steep; dividing by F ranks them by the loss they
  would actually recover. F is damped by 1% of its layer mean, so a position with no signal
  (a dead input) never wins on a ratio of two zeros.

Both scores are estimated loss changes of the same quadratic model, so the harness's swap at each
event (drop the lowest ΔL⁻ beyond the schedule's count, grow the highest ΔL⁺; ``--regrow-fraction``)
trades like for like, and ``--scope global`` compares every layer in loss units.

What it builds on: OBD's saliency with the empirical Fisher standing in for the Hessian diagonal
(as in WoodFisher's diagonal baseline and Theis et al. 2018), RigL's drop-and-grow schedule with
cosine decay, and the gain ΔL⁺ that sparse momentum and RigL approximate by gradient size. What is
new is estimating both directions of the swap in the same units from the same two running moments.

Memory: two floats per weight and per bias (E[g] and E[B·g²]), as for ``obd-fisher``: the dense
gradients are read where backward leaves them, before the harness masks them.

The moments are taken on every step of the epochs before an event. Cost variants take them on
fewer (the last epoch, every third or every fourth step, or every step of the last third of each
epoch); on the validation split of Fashion-MNIST only every third step kept the method's accuracy,
and its cost on LeNet on a CPU is about 5%, not reliably under it, so the method keeps every step.
"""

import torch

from bench_harness import hookimpl
from bench_harness.pruner import PrunableLayer, RunningMeans, StepView
from bench_harness_plugins.obd_fisher import OBDFisherPruner

FISHER_DAMPING = 0.01
"""Added to F in the regrowth gain, as a fraction of the layer's mean F."""


class ContributionPruner(OBDFisherPruner):
    """Drop by the estimated loss rise ½·F·w², regrow by the estimated loss fall E[g]²/(2F)."""

    name = "contribution"
    description = "Ours: drop by loss rise ½·F·w², regrow by loss fall E[g]²/2F (training-time Fisher)."
    wants_dense_gradients = True
    """So ``observe`` (``obd-fisher``'s) runs before the harness masks the gradients: E[g] and F then
    cover pruned positions too, for the regrowth gain. A pruned weight or bias is zero, so its
    statistics never reach a drop score."""

    def grow_scores(self, layer: PrunableLayer) -> torch.Tensor:
        """E[g]² / (2·(F + 1%·mean F)): the loss decrease the position would buy if grown back."""
        mean, fisher = self._moments(f"{layer.name}.weight")
        damping = FISHER_DAMPING * fisher.mean() + torch.finfo(fisher.dtype).tiny
        return mean.square() / (2.0 * (fisher + damping))


class TaylorDropVariant(ContributionPruner):
    """Ablation: drop by Taylor's mean (g·w)² instead of ½·F·w²; regrowth unchanged."""

    name = "contribution-taylor-drop"
    description = "Ablation of contribution: drop by Taylor's mean (g·w)², regrow by E[g]²/2F."
    variant_of = "contribution"
    granularities = ("connections",)

    def __init__(self, context) -> None:
        super().__init__(context)
        self.weights = [layer.weight for layer in self.layers]
        self.first_order = RunningMeans(self.weights)

    @torch.no_grad()
    def observe(self, step: StepView) -> None:
        super().observe(step)
        terms = torch._foreach_mul([weight.grad for weight in self.weights], self.weights)
        self.first_order.add_products_(terms, terms)

    def score(self, layer: PrunableLayer, granularity: str) -> torch.Tensor:
        return self.first_order.mean(self.layers.index(layer))

    def after_prune(self) -> None:
        super().after_prune()
        self.first_order.reset_()


class GrowGradientVariant(ContributionPruner):
    """Ablation: regrow by RigL's |E[g]| instead of the gain E[g]²/2F; drop unchanged."""

    name = "contribution-grow-gradient"
    description = "Ablation of contribution: drop by ½·F·w², regrow by |E[g]| (RigL's grow criterion)."
    variant_of = "contribution"

    def grow_scores(self, layer: PrunableLayer) -> torch.Tensor:
        return self._moments(f"{layer.name}.weight")[0].abs()


class LastEpochVariant(ContributionPruner):
    """Cost variant: the same scores from the statistics of the last epoch before each event only."""

    name = "contribution-last-epoch"
    description = "Cost variant of contribution: statistics from the last epoch before each event only."
    variant_of = "contribution"
    observe_epochs = 1


class EveryThirdStepVariant(ContributionPruner):
    """Cost variant: the same scores from every third step's statistics (``observe_every = 3``)."""

    name = "contribution-stride3"
    description = "Cost variant of contribution: statistics from every third training step only."
    variant_of = "contribution"
    observe_every = 3


class EveryFourthStepVariant(ContributionPruner):
    """Cost variant: the same scores from every fourth step's statistics (``observe_every = 4``)."""

    name = "contribution-stride4"
    description = "Cost variant of contribution: statistics from every fourth training step only."
    variant_of = "contribution"
    observe_every = 4


class LastThirdVariant(ContributionPruner):
    """Cost variant: the same scores from every step of the last third of each observed epoch
    (``observe_window = 1/3``): as many steps as every third step, taken one after another."""

    name = "contribution-window3"
    description = "Cost variant of contribution: statistics from every step of the last third of each epoch."
    variant_of = "contribution"
    observe_window = 1 / 3


@hookimpl
def register_pruners(register):
    """Register our method and its ablation and cost variants."""
    register(ContributionPruner)
    register(TaylorDropVariant)
    register(GrowGradientVariant)
    register(LastEpochVariant)
    register(EveryThirdStepVariant)
    register(EveryFourthStepVariant)
    register(LastThirdVariant)
