"""The run configuration: one dataclass whose defaults are the seed protocol (PROTOCOL.md §1).

Every field is a ``bench run`` option of the same name. A run is identified by the hash of the
fields that change what is computed; execution settings (the device) do not enter the hash, so a
finished run is not repeated just because it is asked for on another machine.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace

from bench_harness.errors import UserError
from bench_harness.pruner import GRANULARITIES, SCOPES

EXECUTION_FIELDS = frozenset({"device", "telemetry_period"})
"""Fields that choose where a run executes, not what it computes; left out of the config hash."""


DEFAULT_VAL_SIZE = 5000


def resolve_val_size(val_size: int | None, train_images: int) -> int:
    """The validation size a run uses: the configured one, or min(5,000, a tenth of the training set)."""
    if val_size is not None:
        return val_size
    return min(DEFAULT_VAL_SIZE, train_images // 10)


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
        if not self.lr > 0:
            raise UserError(f"--lr must be positive, got {self.lr}.")
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
        if self.val_size is not None and self.val_size < 0:
            raise UserError(f"--val-size must not be negative, got {self.val_size}.")
        if not self.telemetry_period > 0:
            raise UserError(f"--telemetry-period must be positive, got {self.telemetry_period}.")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UserError(f"--device must be auto, cpu or cuda, got '{self.device}'.")

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

        The payload is canonical: floats are floats (so 0 and 0.0 agree), and a rate that
        ``target_sparsity`` overrides does not count.
        """
        payload = {key: value for key, value in self.to_dict().items() if key not in EXECUTION_FIELDS}
        for key in ("lr", "prune_rate", "target_sparsity"):
            if payload[key] is not None:
                payload[key] = float(payload[key])
        if payload["target_sparsity"] is not None:
            payload["prune_rate"] = None
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def as_dense_reference(self) -> "RunConfig":
        """The same run with every pruning setting at its default: a pruner that never prunes
        computes the same thing whatever they are, so all such runs share one config hash."""
        defaults = RunConfig()
        return replace(
            self, granularity=defaults.granularity, scope=defaults.scope, prune_every=defaults.prune_every,
            prune_rate=defaults.prune_rate, target_sparsity=defaults.target_sparsity,
        )

    def run_id(self) -> str:
        """A readable, unique file stem: dataset, model, pruner, granularity, scope, seed, hash."""
        return f"{self.dataset}-{self.model}-{self.pruner}-{self.granularity}-{self.scope}-s{self.seed}-{self.config_hash()[:8]}"
