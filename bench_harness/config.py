"""The run configuration: one dataclass whose defaults are the seed protocol (the README's protocol table).

Every field is a ``bench run`` option of the same name. A run is identified by the hash of the
fields that change what is computed; execution settings (the device) do not enter the hash, so a
finished run is not repeated just because it is asked for on another machine.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields, replace

from bench_harness.errors import UserError
from bench_harness.pruner import GRANULARITIES, SCHEDULES, SCOPES

EXECUTION_FIELDS = frozenset({"device", "telemetry_period"})
"""Fields that choose where a run executes, not what it computes; left out of the config hash."""

PRUNING_FIELDS = (
    "granularity", "scope", "schedule", "prune_every", "prune_rate", "target_sparsity", "prune_start", "prune_end",
    "regrow_fraction", "regrow_every",
)
"""Fields that only matter to a pruner that prunes: the dense reference computes the same thing
whatever they are, so its runs ignore them (one dense run serves every pruning table)."""

REGROWTH_FIELDS = ("regrow_fraction", "regrow_every")
"""Fields that only matter to a pruner that regrows (one that implements ``grow_scores``)."""


CHECKPOINT_BUDGET = 0.05
"""Without ``--checkpoint-every``, each run is checkpointed after an epoch whenever the wall time
since its last checkpoint is at least ``concurrent runs / CHECKPOINT_BUDGET`` times what that
checkpoint took to write, so checkpoints take at most 5% of the time on any hardware while an
interruption loses as little as that allows. On a CPU a checkpoint is a fraction of a percent of a
seed-protocol epoch (``benchmarks/checkpoint_cost.py``; figures in ``benchmarks/README.md``), so
this is every epoch; on a GPU, whose epochs are far shorter, it may be every few epochs. An
execution setting: it never changes what a run computes, so it is not a field of the run's config."""


DEFAULT_VAL_SIZE = 5000


def resolve_val_size(val_size: int | None, train_images: int) -> int:
    """The validation size a run uses: the configured one, or min(5,000, a tenth of the training set)."""
    if val_size is not None:
        return val_size
    return min(DEFAULT_VAL_SIZE, train_images // 10)


_FLOAT_FIELDS = frozenset({"lr", "prune_rate", "target_sparsity", "regrow_fraction"})
_IDENTITY_FIELDS = frozenset({"pruner", "dataset", "model", "seed"})
"""Always hashed, default or not: they name what the run is."""


@dataclass(frozen=True)
class RunConfig:
    """Every setting of one run. The defaults are the seed protocol."""

    pruner: str = "none"
    dataset: str = "mnist"
    model: str = ""
    """Empty means the dataset's default model (mnist, fashion-mnist -> fcnn; cifar10 -> cnn)."""
    seed: int = 0
    epochs: int = 50
    batch_size: int = 64
    lr: float = 0.001
    prune_every: int = 5
    """Prune after every N-th epoch, never after the last: 50 epochs give 9 events and 5 epochs of fine-tuning."""
    prune_rate: float = 0.1
    """Fraction of the still-alive connections (or neurons) removed at each event."""
    target_sparsity: float | None = None
    """If set, overrides prune_rate with the rate that reaches this final fraction pruned."""
    granularity: str = "connections"
    scope: str = "layer"
    """How an event's removals are shared between layers: layer | global | erk | lamp."""
    schedule: str = "fixed"
    """fixed: the same fraction of the alive elements per event; cubic: Zhu & Gupta's sparsity curve."""
    prune_start: int | None = None
    """The epoch after which the first event happens; None means ``prune_every``."""
    prune_end: int | None = None
    """The epoch after which the last event happens; None means the last multiple of ``prune_every``
    before the final epoch."""
    regrow_fraction: float = 0.3
    """For pruners that regrow: the fraction of a layer's alive connections dropped and regrown at an
    event (RigL's alpha), decayed with a cosine over the run's events."""
    regrow_every: int = 0
    """For pruners that regrow: also drop-and-regrow (without pruning) after every N-th epoch between
    pruning events; 0 regrows only at pruning events."""
    augment: bool = False
    """On-device random crop (4-pixel padding) and horizontal flip of training images; the plan names none."""
    val_size: int | None = None
    """Training images held out for validation (a fixed split, the same for every seed); None means
    5,000 (MNIST's customary split), or a tenth of the training set when that is smaller."""
    device: str = "auto"
    telemetry_period: float = 0.1
    """Seconds between NVML telemetry samples."""

    def validate(self) -> None:
        """Raise UserError with one sentence for the first setting that makes no sense."""
        if self.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {self.epochs}.")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}.")
        if not 0 < self.lr < math.inf:
            raise UserError(f"--lr must be a positive finite number, got {self.lr}.")
        if self.prune_every < 1:
            raise UserError(f"--prune-every must be at least 1, got {self.prune_every}.")
        if not 0.0 <= self.prune_rate < 1.0:
            raise UserError(f"--prune-rate must be in [0, 1), got {self.prune_rate}.")
        if self.target_sparsity is not None and not 0.0 < self.target_sparsity < 1.0:
            raise UserError(f"--target-sparsity must be between 0 and 1 (exclusive), got {self.target_sparsity}.")
        if self.granularity not in GRANULARITIES:
            raise UserError(f"--granularity must be one of {', '.join(GRANULARITIES)}, got '{self.granularity}'.")
        if self.scope not in SCOPES:
            raise UserError(f"--scope must be one of {', '.join(SCOPES)}, got '{self.scope}'.")
        if self.scope == "erk" and self.granularity != "connections":
            raise UserError("--scope erk sets per-layer densities of connections; use it with --granularity connections.")
        if self.schedule not in SCHEDULES:
            raise UserError(f"--schedule must be one of {', '.join(SCHEDULES)}, got '{self.schedule}'.")
        for name, epoch in (("--prune-start", self.prune_start), ("--prune-end", self.prune_end)):
            if epoch is not None and not 1 <= epoch < self.epochs:
                raise UserError(f"{name} must be an epoch from 1 to {self.epochs - 1} (never the last), got {epoch}.")
        if self.prune_start is not None and self.prune_end is not None and self.prune_end < self.prune_start:
            raise UserError(f"--prune-end ({self.prune_end}) must not come before --prune-start ({self.prune_start}).")
        if not 0.0 <= self.regrow_fraction < 1.0:
            raise UserError(f"--regrow-fraction must be in [0, 1), got {self.regrow_fraction}.")
        if self.regrow_every < 0:
            raise UserError(f"--regrow-every must not be negative, got {self.regrow_every}.")
        if self.val_size is not None and self.val_size < 0:
            raise UserError(f"--val-size must not be negative, got {self.val_size}.")
        if not self.telemetry_period > 0:
            raise UserError(f"--telemetry-period must be positive, got {self.telemetry_period}.")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UserError(f"--device must be auto, cpu or cuda, got '{self.device}'.")
        for name in sorted(_FLOAT_FIELDS | {"telemetry_period"}):  # what the checks above let through (inf)
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
                raise UserError(f"--{name.replace('_', '-')} must be a finite number, got {value}.")

    def to_dict(self) -> dict:
        """A JSON-ready dict of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        """The inverse of to_dict; unknown keys (from a newer version) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})

    def config_hash(self) -> str:
        """16 hex digits identifying what this run computes.

        Only settings that differ from their defaults enter the hash (as in open_lth), so adding a
        new setting with a default never renames existing runs; in return a default is never changed
        (a new behaviour gets a new option). The payload is canonical: floats are floats (0 and 0.0
        agree), and a rate that ``target_sparsity`` overrides does not count.
        """
        defaults = RunConfig().to_dict()
        payload = {}
        for key, value in self.to_dict().items():
            if key in EXECUTION_FIELDS or (key == "prune_rate" and self.target_sparsity is not None):
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key in _FLOAT_FIELDS:
                value = float(value)
            if value != defaults[key] or key in _IDENTITY_FIELDS:
                payload[key] = value
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def as_dense_reference(self) -> "RunConfig":
        """The same run with every pruning setting at its default: a pruner that never prunes
        computes the same thing whatever they are, so all such runs share one config hash."""
        return self.with_defaults(PRUNING_FIELDS)

    def without_regrowth(self) -> "RunConfig":
        """The same run with the regrowth settings at their defaults, for a pruner that never regrows."""
        return self.with_defaults(REGROWTH_FIELDS)

    def with_defaults(self, names: tuple[str, ...]) -> "RunConfig":
        """The same run with the named settings at their defaults."""
        defaults = RunConfig()
        return replace(self, **{name: getattr(defaults, name) for name in names})

    def run_id(self) -> str:
        """A readable, unique file stem: dataset, model, pruner, granularity, scope, seed, hash."""
        return f"{self.dataset}-{self.model}-{self.pruner}-{self.granularity}-{self.scope}-s{self.seed}-{self.config_hash()[:8]}"
