"""Random pruning: the floor every criterion must beat. Seeded by the run's seed."""

import torch

from bench_harness import hookimpl
from bench_harness.pruner import PrunableLayer, Pruner, PruningContext


class RandomPruner(Pruner):
    """Uniform random scores, drawn from a generator seeded with the run's seed, fresh at every event."""

    name = "random"
    description = "Random: uniform scores from the run's seed (the floor to beat)."

    def __init__(self, context: PruningContext) -> None:
        super().__init__(context)
        # A CPU generator gives the same draws on every device, so a seed means the same masks anywhere.
        self.generator = torch.Generator().manual_seed(context.seed)
        self.drawn: dict[tuple[str, str], torch.Tensor] = {}

    def score(self, layer: PrunableLayer, granularity: str) -> torch.Tensor:
        """This event's uniform scores (drawn on the first request, the same until the event ends)."""
        key = (layer.name, granularity)
        if key not in self.drawn:
            shape = layer.weight.shape if granularity == "connections" else (layer.units,)
            self.drawn[key] = torch.rand(shape, generator=self.generator).to(layer.weight.device)
        return self.drawn[key]

    def after_prune(self) -> None:
        """The next event draws afresh."""
        self.drawn.clear()


@hookimpl
def register_pruners(register):
    """Register the random baseline."""
    register(RandomPruner)
