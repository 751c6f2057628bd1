"""When the harness prunes and how much: the pruning schedule of one run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PruningSchedule:
    """Prune after every ``prune_every``-th epoch, except after the last one, at a fixed rate.

    The last event falls before the final epoch so the model always fine-tunes after its last cut
    (with the seed protocol: events after epochs 5, 10, ..., 45 and five epochs of fine-tuning).
    """

    epochs: int
    prune_every: int
    rate: float
    """Fraction of the still-alive elements removed at each event (compounds: 0.9^9 = 38.7% remain)."""

    @classmethod
    def build(cls, epochs: int, prune_every: int, rate: float, target_sparsity: float | None = None, prunes: bool = True) -> "PruningSchedule":
        """The schedule for a run; ``target_sparsity`` picks the rate that reaches it after all events."""
        if not prunes:
            return cls(epochs, prune_every, 0.0)
        schedule = cls(epochs, prune_every, rate)
        if target_sparsity is not None and schedule.event_epochs:
            remaining = (1.0 - target_sparsity) ** (1.0 / len(schedule.event_epochs))
            schedule = cls(epochs, prune_every, 1.0 - remaining)
        return schedule

    @property
    def event_epochs(self) -> tuple[int, ...]:
        """The 1-based epochs after which a pruning event happens."""
        return tuple(range(self.prune_every, self.epochs, self.prune_every))

    def prunes_after(self, epoch: int) -> bool:
        """Whether a pruning event follows this 1-based epoch."""
        return self.rate > 0 and epoch in self.event_epochs

    def expected_final_density(self) -> float:
        """Fraction of elements left after all events, ignoring rounding (0.9^9 for the seed protocol)."""
        return (1.0 - self.rate) ** len(self.event_epochs) if self.rate > 0 else 1.0
