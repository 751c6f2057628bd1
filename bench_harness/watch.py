"""Notices a pruner changing the model's weights where only the harness may change them.

Weights legitimately change in three places: the optimizer step, the masks' enforcement, and the
pruning event's own drop, compensation (the harness applies what ``compensate`` returns) and
regrowth. A pruner method that writes to the weights itself (zeroing them in ``observe``, say)
would turn a comparison of criteria into a comparison of sabotage, and the run would look
``ok``. The watch compares the model's parameters (and, around ``observe``, their gradients)
exactly, before and after a pruner method runs, and counts the calls that changed something.

What it sees, at a cost that does not show in a run (a copy of the parameters per check):

* the pruner's ``__init__`` and ``load_state_dict`` (once per run);
* every call of ``score``, ``compensate``, ``grow_scores`` and ``after_prune`` (events are rare);
* ``observe`` at the first and the last step of every epoch, when that step runs eagerly: every such
  step on the CPU; on a GPU the warm-up steps before the step graph is captured and an epoch's
  smaller last batch (a replayed graph cannot compare without synchronising every step).

What it cannot see: a change made in ``observe`` at steps it does not check (a pruner that
tampers only now and then, or only inside a replayed graph), changes to the optimizer's state,
forward hooks a pruner registers on the model, and anything done from another thread.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


class WeightWatch:
    """Counts, per pruner method, the checked calls that changed the model's parameters."""

    def __init__(self, model: nn.Module) -> None:
        self.params = list(model.parameters())
        self.checked: dict[str, int] = {}
        """Calls checked, by method name."""
        self.changed: dict[str, int] = {}
        """Checked calls after which a parameter (or, for ``observe``, a gradient) differed."""

    def _snapshot(self, gradients: bool) -> list[torch.Tensor | None]:
        tensors = [param.detach() for param in self.params]
        if gradients:
            tensors += [param.grad for param in self.params]
        return [None if tensor is None else tensor.clone() for tensor in tensors]

    @contextlib.contextmanager
    def guard(self, method: str, gradients: bool = False) -> Iterator[None]:
        """Check that the block (one pruner call) leaves the parameters (and gradients) bit for bit alone."""
        before = self._snapshot(gradients)
        yield
        after = self._snapshot(gradients)
        self.checked[method] = self.checked.get(method, 0) + 1
        if any((a is None) != (b is None) or (a is not None and not torch.equal(a, b)) for a, b in zip(before, after)):
            self.changed[method] = self.changed.get(method, 0) + 1

    def describe(self) -> str | None:
        """One sentence naming each method that changed the weights, or None if none did."""
        parts = [f"{method}() at {count} of {self.checked[method]} checked calls" for method, count in self.changed.items()]
        if not parts:
            return None
        what = "weights or gradients" if "observe" in self.changed else "weights"
        return f"The pruner changed the model's {what} outside the pruning event: in " + ", ".join(parts) + "."

    def state_dict(self) -> dict:
        """The counts so far, for a checkpoint."""
        return {"checked": dict(self.checked), "changed": dict(self.changed)}

    def load_state_dict(self, state: dict) -> None:
        """Continue counting from a checkpoint's counts."""
        self.checked = {str(k): int(v) for k, v in state.get("checked", {}).items()}
        self.changed = {str(k): int(v) for k, v in state.get("changed", {}).items()}
