"""Checkpoints: a run's whole training state at the end of an epoch, so a rerun continues from there.

A checkpoint holds what :meth:`bench_harness.engine.Trainer.state_dict` returns (model, optimizer,
masks with their alive units, the pruner's ``state_dict``, the shuffle and augmentation generators,
the history and event entries so far, the time totals and the weight watch's counts) and, beside
it, who it belongs to: the run id, the full config hash and the plugins' packages and versions, and
when the run first started. A checkpoint of another config or another plugin version is never
resumed: the run starts over, as a record of another version is redone.

The payload is ``torch.save``'d into memory and written by ``bench_harness.store`` atomically, so a
kill during the write leaves the previous checkpoint; it is read back with ``weights_only=True`` (no
code runs on load) onto the CPU and copied into the run's own tensors on its device.
"""

from __future__ import annotations

import io

import torch

FORMAT = 1
"""Bumped when the layout changes; a checkpoint of another format is not resumed."""

MUST_MATCH = ("run_id", "config_hash", "plugins")
"""Identity keys a checkpoint must share with the run to be resumed; the others (when the run first
started, the epochs it was resumed from) are carried into the run's record."""


def dumps(trainer_state: dict, identity: dict) -> bytes:
    """A checkpoint's bytes: ``identity`` (run id, config hash, plugins, and what the record carries
    over) and the trainer's state."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "identity": identity, "trainer": trainer_state}, buffer)
    return buffer.getvalue()


def loads(data: bytes, identity: dict) -> tuple[dict, dict]:
    """(the trainer's state, the saved identity) from a checkpoint's bytes.

    Raises ``ValueError`` with a reason when the bytes are not a checkpoint of this format or belong
    to another run, config or plugin version (the keys of :data:`MUST_MATCH`).
    """
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file, whatever the unpickler says
        raise ValueError(f"it is not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or not isinstance(payload.get("trainer"), dict):
        raise ValueError(f"it is not a checkpoint of format {FORMAT}")
    saved = payload.get("identity") or {}
    for key in MUST_MATCH:
        if saved.get(key) != identity.get(key):
            raise ValueError(f"it was made with another {key.replace('_', ' ')}")
    return payload["trainer"], saved
