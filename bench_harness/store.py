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
    write_bytes_atomically(path, text.encode("utf-8"))


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so no reader sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
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
        """One record, or None (with a warning naming the file) if it is not a JSON object."""
        try:
            with open(path, encoding="utf-8") as stream:
                record = json.load(stream)
        except (OSError, ValueError) as exc:  # ValueError: bad JSON, and bytes that are not UTF-8
            warnings.warn(f"Skipping unreadable run record {path}: {exc}", stacklevel=2)
            return None
        if not isinstance(record, dict):
            warnings.warn(f"Skipping run record {path}: it holds a JSON {type(record).__name__}, not an object.", stacklevel=2)
            return None
        return record

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
        """Every usable record in the folder, each run once, in file-name order.

        A file that is not a record (unreadable, not a JSON object, no pruner, finished without
        metrics) is left out with a warning naming it. Two files holding the same run id (a copied
        file) count once: a finished record wins over an unfinished one, then the later one.
        """
        if not self.runs_dir.is_dir():
            return []
        kept: dict[str, tuple[Path, dict]] = {}
        for path in sorted(self.runs_dir.glob("*.json")):
            record = self.read(path)
            if record is None:
                continue
            problem = _malformed(record)
            if problem:
                warnings.warn(f"Skipping run record {path}: {problem}.", stacklevel=2)
                continue
            run_id = str(record.get("run_id") or path.stem)
            if run_id in kept:
                other_path, other = kept[run_id]
                if _preference(record) > _preference(other):
                    kept[run_id] = (path, record)
                    other_path, path = path, other_path
                warnings.warn(f"Skipping run record {path}: it repeats run {run_id} of {other_path}, counted once.", stacklevel=2)
                continue
            kept[run_id] = (path, record)
        return [record for _, record in kept.values()]


def _malformed(record: dict) -> str | None:
    """Why a JSON object is not a usable run record, or None if it is one."""
    config = record.get("config")
    if config is not None and not isinstance(config, dict):
        return "its config is not an object"
    if not (record.get("pruner") or (config or {}).get("pruner")):
        return "it names no pruner"
    if record.get("status") == "ok" and not isinstance(record.get("metrics"), dict):
        return "it is marked ok but holds no metrics"
    return None


def _preference(record: dict) -> tuple:
    """Which of two records of the same run to keep: a finished one, then the later one."""
    return (record.get("status") == "ok", str(record.get("finished_at") or ""))
