"""Layer-wise Optimal Brain Surgeon (L-OBS, Dong et al. 2017; OBC, Frantar & Alistarh 2022).

Each layer is treated on its own: removing weights from a row ``w`` of a layer that computes
``y = w·x`` changes that output by ``δᵀx``, whose mean square is ``δᵀ H δ`` with ``H = E[x xᵀ]``, the
Gram matrix of the layer's inputs (for a convolution, of its receptive-field patches), accumulated
during training (``wants_inputs``) and damped by 1% of its mean diagonal. OBS then says:

* **selection**: removing weight q alone, with the rest of its row re-fitted, costs ``w_q² / [H⁻¹]_qq``
  (the score; lower goes first). As in L-OBS, ``H⁻¹`` is that of the full layer input, computed once
  per event;
* **compensation**: after the cut, each row's survivors S are re-fitted to the row's old output, the
  exact multi-weight OBS update ``δ_S = H_SS⁻¹ H_SD w_D`` for the set D the row lost (what OBC reaches
  one weight at a time). Rows are solved in batches with a Cholesky factorisation.

Cost: a d×d Gram update per layer and step (d = 784 for LeNet's first layer, which roughly doubles
the per-step work of that model on a CPU), and per event one d×d inverse per layer plus a Cholesky
solve of up to d×d per row.
"""

import torch

from bench_harness import hookimpl
from bench_harness.pruner import Cut, PrunableLayer, Pruner, PruningContext, StepView
from bench_harness.statistics import InputGram

DAMPING = 0.01
"""Added to H's diagonal, as a fraction of its mean diagonal (OBC and SparseGPT use 1%)."""

SOLVE_ELEMENTS = 1 << 24
"""Rows are re-fitted in batches of at most this many matrix elements (64 MB in float32)."""


def damped(gram: torch.Tensor) -> torch.Tensor:
    """``H + λ·mean(diag H)·I``: positive definite even where inputs are dead or collinear."""
    diagonal = gram.diagonal()
    shift = DAMPING * diagonal.mean() + torch.finfo(gram.dtype).eps
    return gram + shift * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)


def refit_rows(hessian: torch.Tensor, before: torch.Tensor, dropped: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """Per row, the change of the survivors that best restores the row's output: ``H_SS⁻¹ H_SD w_D``.

    ``before`` are the rows' weights before the cut, ``dropped`` and ``alive`` boolean masks of the
    same ``(rows, d)`` shape. Returns the change, zero outside ``alive``.
    """
    targets = (before * dropped) @ hessian  # row r: H w_D (H is symmetric)
    counts = alive.sum(dim=1)
    width = int(counts.max()) if counts.numel() else 0
    delta = torch.zeros_like(before)
    if width == 0:
        return delta
    # Each row's alive positions first, in order: the first counts[r] entries of its index row.
    index = torch.sort((~alive).to(torch.int8), dim=1, stable=True).indices[:, :width]
    valid = torch.arange(width, device=before.device)[None, :] < counts[:, None]
    chunk = max(1, SOLVE_ELEMENTS // (width * width))
    eye = torch.eye(width, dtype=hessian.dtype, device=hessian.device)
    for start in range(0, before.shape[0], chunk):
        rows = slice(start, start + chunk)
        idx, ok = index[rows], valid[rows]
        pair_ok = ok[:, :, None] & ok[:, None, :]
        system = torch.where(pair_ok, hessian[idx[:, :, None], idx[:, None, :]], eye)
        right = torch.where(ok, targets[rows].gather(1, idx), 0.0)
        factor = torch.linalg.cholesky(system)
        solution = torch.cholesky_solve(right.unsqueeze(-1), factor).squeeze(-1)
        delta[rows].scatter_(1, idx, torch.where(ok, solution, 0.0))
    return delta * alive


class OBSPruner(Pruner):
    """Selection by w²/[H⁻¹]_qq, compensation by re-fitting each row's survivors."""

    name = "obs"
    description = "Layer-wise OBS (L-OBS/OBC): select by w²/[H⁻¹]qq, re-fit each row's survivors."
    granularities = ("connections",)
    wants_inputs = True

    def __init__(self, context: PruningContext) -> None:
        super().__init__(context)
        self.gram = InputGram(self.layers)

    @torch.no_grad()
    def observe(self, step: StepView) -> None:
        """Add this step's input Gram matrices."""
        self.gram.add_(step.inputs)

    def score(self, layer: PrunableLayer, granularity: str) -> torch.Tensor:
        """w_q² / [H⁻¹]_qq, the OBS cost of removing w_q with its row re-fitted."""
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(damped(self.gram.mean(layer))))
        weight = layer.weight.detach().flatten(1)
        return (weight.square() / inverse.diagonal()[None, :]).view_as(layer.weight)

    def compensate(self, layer: PrunableLayer, cut: Cut) -> torch.Tensor:
        """Re-fit each row's surviving weights to the row's output before the cut."""
        hessian = damped(self.gram.mean(layer))
        delta = refit_rows(hessian, cut.weight_before.flatten(1).float(), cut.dropped.flatten(1), cut.alive.flatten(1))
        return delta.view_as(layer.weight)

    def after_prune(self) -> None:
        """The inputs change with the network: each event uses its own interval's statistics."""
        self.gram.reset_()


@hookimpl
def register_pruners(register):
    """Register layer-wise OBS."""
    register(OBSPruner)
