"""The dense reference ``none``: trains the same model for the same epochs and never prunes."""

import torch

from bench_harness import hookimpl
from bench_harness.pruner import PrunableLayer, Pruner


class DenseReference(Pruner):
    """The unpruned model every criterion is compared against."""

    name = "none"
    description = "Dense reference: the same training, never pruned."
    prunes = False

    def score(self, layer: PrunableLayer, granularity: str) -> torch.Tensor:
        """Never called: the harness does not schedule events for a pruner with ``prunes = False``."""
        raise RuntimeError("The dense reference is never asked for scores.")


@hookimpl
def register_pruners(register):
    """Register the dense reference."""
    register(DenseReference)
