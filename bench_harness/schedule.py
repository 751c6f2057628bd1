"""When the harness prunes and how much: the pruning schedule of one run.

A schedule is a list of events, each after a given epoch, each with the fraction of the elements
(connections, or hidden units for neuron pruning) that must remain alive after it. Two shapes:

* ``fixed`` (the seed protocol): every event keeps ``1 - rate`` of what was alive, so after event k
  the kept fraction is ``(1 - rate)^k`` (0.9^9 = 38.7% after nine events of 10%);
* ``cubic`` (Zhu & Gupta 2017): sparsity follows ``s_f + (s_0 - s_f)(1 - t/T)^3`` with ``s_0 = 0``,
  ``t`` the event's index and ``T`` the number of events: large cuts while the network is dense,
  small ones near the end. Its final sparsity ``s_f`` is the target, or by default the fixed
  schedule's, so the two shapes end at the same size.

With ``--target-sparsity`` the last event keeps exactly ``1 - target`` of the elements (rounded to
whole elements once, by the allocation). A pruner that regrows also gets, at each event, a regrowth
fraction ``regrow_fraction / 2 * (1 + cos(pi * t / T_end))`` (RigL's cosine decay, ``t`` the event's
epoch, ``T_end`` the last pruning epoch), and optionally extra regrow-only events between pruning
events.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class EventPlan:
    """What one event must do: the kept fraction after it, and how much to swap by regrowth."""

    epoch: int
    """The 1-based epoch after which the event happens."""
    density: float | None
    """Fraction of the elements alive after the event; None for a regrow-only event."""
    regrow_fraction: float = 0.0
    """Fraction of each layer's alive connections to drop and regrow (0: no regrowth)."""

    @property
    def kind(self) -> str:
        """``prune`` for a scheduled cut, ``regrow`` for a swap that keeps the alive count."""
        return "regrow" if self.density is None else "prune"


@dataclass(frozen=True)
class PruningSchedule:
    """The events of one run. Build it with :meth:`build`; the fields describe it in run records."""

    epochs: int
    kind: str
    event_epochs: tuple[int, ...]
    """The 1-based epochs after which a pruning event happens (never the last epoch)."""
    densities: tuple[float, ...]
    """Kept fraction after each pruning event, in order."""
    rate: float | None = None
    """The fixed schedule's fraction removed per event (None for cubic)."""
    regrow_fraction: float = 0.0
    regrow_epochs: tuple[int, ...] = ()
    """Epochs after which a regrow-only event happens."""

    @classmethod
    def build(
        cls,
        epochs: int,
        prune_every: int,
        rate: float,
        target_sparsity: float | None = None,
        prunes: bool = True,
        kind: str = "fixed",
        start: int | None = None,
        end: int | None = None,
        regrow_fraction: float = 0.0,
        regrow_every: int = 0,
    ) -> "PruningSchedule":
        """The schedule for a run's settings (``prunes=False``: the dense reference, no events)."""
        if not prunes:
            return cls(epochs, kind, (), ())
        first = prune_every if start is None else start
        last = epochs - 1 if end is None else end
        event_epochs = tuple(range(first, last + 1, prune_every))
        count = len(event_epochs)
        if count == 0:
            return cls(epochs, kind, (), ())
        final_density = 1.0 - target_sparsity if target_sparsity is not None else (1.0 - rate) ** count
        if kind == "fixed":
            per_event = 1.0 - final_density ** (1.0 / count) if target_sparsity is not None else rate
            densities = [(1.0 - per_event) ** k for k in range(1, count + 1)]
        elif kind == "cubic":
            per_event = None
            densities = [1.0 - (1.0 - final_density) * (1.0 - (1.0 - k / count) ** 3) for k in range(1, count + 1)]
        else:
            raise ValueError(f"Unknown schedule '{kind}'.")
        densities[-1] = final_density  # exact, not the last power's rounding
        regrow_epochs = ()
        if regrow_fraction > 0 and regrow_every > 0:
            regrow_epochs = tuple(
                epoch for epoch in range(regrow_every, event_epochs[-1], regrow_every)
                if epoch > event_epochs[0] and epoch not in event_epochs
            )
        return cls(epochs, kind, event_epochs, tuple(densities), per_event, regrow_fraction, regrow_epochs)

    @classmethod
    def for_run(cls, config, prunes: bool = True, regrows: bool = False) -> "PruningSchedule":
        """The schedule of a :class:`bench_harness.config.RunConfig` for a pruner that (re)grows or not."""
        return cls.build(
            config.epochs, config.prune_every, config.prune_rate, config.target_sparsity, prunes, config.schedule,
            config.prune_start, config.prune_end, config.regrow_fraction if regrows else 0.0, config.regrow_every,
        )

    def event_after(self, epoch: int) -> EventPlan | None:
        """The event that follows this 1-based epoch, or None."""
        if epoch in self.event_epochs:
            density = self.densities[self.event_epochs.index(epoch)]
            return EventPlan(epoch, density, self._regrow_at(epoch))
        if epoch in self.regrow_epochs:
            return EventPlan(epoch, None, self._regrow_at(epoch))
        return None

    def _regrow_at(self, epoch: int) -> float:
        if self.regrow_fraction <= 0:
            return 0.0
        return self.regrow_fraction / 2.0 * (1.0 + math.cos(math.pi * epoch / self.event_epochs[-1]))

    def observed_epochs(self, window: int | None = None) -> frozenset[int]:
        """The 1-based epochs whose training steps a pruner's statistics must see: those before each
        event (a cut or a swap) since the previous one, or only the last ``window`` of them.

        Statistics restart after every event, so nothing seen after the last event is ever read: a
        run observes no step of its final epochs."""
        observed, previous = set(), 0
        for event in sorted((*self.event_epochs, *self.regrow_epochs)):
            first = previous + 1 if window is None else max(previous + 1, event - window + 1)
            observed.update(range(first, event + 1))
            previous = event
        return frozenset(observed)

    @property
    def final_density(self) -> float:
        """Fraction of elements left after the last event (1 without events)."""
        return self.densities[-1] if self.densities else 1.0

    def describe(self) -> dict:
        """The schedule as a run record stores it."""
        return {
            "kind": self.kind, "event_epochs": list(self.event_epochs), "densities": list(self.densities),
            "rate": self.rate, "regrow_fraction": self.regrow_fraction, "regrow_epochs": list(self.regrow_epochs),
        }
