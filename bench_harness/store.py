"""The results store: one JSON file per run under ``RESULTS/runs/``, written atomically.

A record is written to a temporary file in the same folder, flushed to disk, then renamed over its
final name, so an interrupted run never leaves a half-written record, and an earlier record is only
replaced by a complete new one.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

from bench_harness.config import RunConfig
from bench_harness.record import same_plugins

def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomically(path: Path, payload: dict) -> None:
    """Write ``payload`` as JSON to ``path`` so that readers see the old file or the new one, never half."""
    write_text_atomically(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so no reader sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp creates the file readable by its owner only; give it the permissions of a normal file.
        os.chmod(temporary, 0o666 & ~_current_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class ResultsStore:
    """Run records of one results folder."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.models_dir = self.root / "models"

    def path_for(self, config: RunConfig) -> Path:
        """Where the record of ``config`` lives."""
        return self.runs_dir / f"{config.run_id()}.json"

    def read(self, path: Path) -> dict | None:
        """One record, or None (with a warning) if the file cannot be parsed."""
        try:
            with open(path, encoding="utf-8") as stream:
                return json.load(stream)
        except (OSError, json.JSONDecodeError) as exc:
            warnings.warn(f"Skipping unreadable run record {path}: {exc}")
            return None

    def is_complete(self, config: RunConfig, provenance: dict) -> bool:
        """True if a successful run with exactly this config hash is already recorded, by the same
        versions of its pruner, dataset and model plugins (``provenance``, see ``record.plugin_provenance``)."""
        path = self.path_for(config)
        if not path.exists():
            return False
        record = self.read(path)
        return (
            bool(record) and record.get("status") == "ok" and record.get("config_hash") == config.config_hash()
            and same_plugins(record, provenance)
        )

    def write(self, config: RunConfig, record: dict) -> Path:
        """Store a run's record atomically and return its path."""
        path = self.path_for(config)
        write_json_atomically(path, record)
        return path

    def records(self) -> list[dict]:
        """Every readable record in the folder, in file-name order."""
        if not self.runs_dir.is_dir():
            return []
        found = []
        for path in sorted(self.runs_dir.glob("*.json")):
            record = self.read(path)
            if record is not None:
                found.append(record)
        return found
