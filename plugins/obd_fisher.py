"""``obd-fisher``: Optimal Brain Damage with a Fisher diagonal, our ``contribution`` criterion's first
version, kept for comparison and as the drop half of the current ``contribution``.

An estimate, in loss units, of how much the training loss would rise if a connection or a whole
neuron were removed. For one weight w with per-sample gradient second moment F (the diagonal of the
empirical Fisher, standing in for the Hessian diagonal), the second-order estimate of removing it is
ΔL ≈ ½·F·w² (Optimal Brain Damage with a Fisher diagonal). F is estimated during training from the
minibatch gradients g of the steps since the last pruning event: with batch size B,
E[g²] = μ² + σ²/B, so the per-sample second moment is  F = E[B·g²] − (E[B]−1)·E[g]², which keeps the
estimate in loss units whatever the batch size (B is each step's own size: an epoch's last batch may
be smaller). The weight w is the current one at the event, i.e. the one actually removed.

A neuron's removal deletes its incoming weights, its bias and its outgoing weights; its contribution
is the sum of ½·F·w² over all of them (the diagonal approximation ignores their interactions).
Because every score is an estimated loss increase, one ranking across layers (``--scope global``)
compares like with like.
"""

import torch

from bench_harness import hookimpl
from bench_harness.pruner import PrunableLayer, Pruner, PruningContext, RunningMean, RunningMeans, StepView, layer_parameters


class OBDFisherPruner(Pruner):
    """Estimated loss increase ½·F·w² per connection, summed over everything a neuron owns."""

    name = "obd-fisher"
    description = "OBD-Fisher (our v1): estimated loss rise ½·F·w², F the training-time Fisher diagonal."

    def __init__(self, context: PruningContext) -> None:
        super().__init__(context)
        self.batch_size = RunningMean(torch.empty((), device=context.device))
        named = layer_parameters(self.layers)
        self.params = [param for _, param in named]
        self.position = {key: index for index, (key, _) in enumerate(named)}
        # E[g] and E[B·g²] for every weight and bias, each kept as one fused list.
        self.grad_mean = RunningMeans(self.params)
        self.grad_square_mean = RunningMeans(self.params)

    @torch.no_grad()
    def observe(self, step: StepView) -> None:
        """Accumulate E[g] and E[B·g²] per parameter element: two fused kernels per step (two plain
        ones over the engine's flat gradient buffer where it has one: the same layout as ours).

        The gradients are masked here, and unmasked for a subclass that wants dense gradients."""
        grads = step.gradients if step.gradients is not None else [param.grad for param in self.params]
        self.batch_size.add_(float(step.batch_size))
        self.grad_mean.add_(grads)
        self.grad_square_mean.add_products_(grads, grads, scale=float(step.batch_size))

    def _moments(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The interval's mean gradient E[g] and per-sample Fisher diagonal F of one parameter."""
        batch, index = self.batch_size.mean(), self.position[key]
        mean = self.grad_mean.mean(index)
        fisher = (self.grad_square_mean.mean(index) - (batch - 1.0) * mean.square()).clamp(min=0.0)
        return mean, fisher

    def _loss_increase(self, key: str, param: torch.Tensor) -> torch.Tensor:
        return 0.5 * self._moments(key)[1] * param.detach().float().square()

    def score(self, layer: PrunableLayer, granularity: str) -> torch.Tensor:
        """½·F·w² per weight, or its sum over a unit's incoming weights, bias and outgoing weights."""
        weight_term = self._loss_increase(f"{layer.name}.weight", layer.weight)
        if granularity == "connections":
            return weight_term
        per_unit = layer.incoming_per_unit(weight_term)
        if layer.bias is not None:
            per_unit = per_unit + self._loss_increase(f"{layer.name}.bias", layer.bias)
        if layer.next is not None:
            per_unit = per_unit + layer.outgoing_per_unit(self._loss_increase(f"{layer.next.name}.weight", layer.next.weight))
        return per_unit

    def after_prune(self) -> None:
        """Statistics restart after each event: the surviving network is a different function."""
        for stat in (self.batch_size, self.grad_mean, self.grad_square_mean):
            stat.reset_()


@hookimpl
def register_pruners(register):
    """Register OBD with a Fisher diagonal."""
    register(OBDFisherPruner)
