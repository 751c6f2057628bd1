"""Run records: the one place where the JSON record of a run is built.

A record is a plain dict (it is written as JSON by ``bench_harness.store``) with, at the top, the
identity of the run (``run_id``, ``pruner``, ``dataset``, ``model``, ``seed``, ``config`` and its
hash), where its pieces came from (``plugins``: the package and version of the pruner, dataset and
model plugins), whether it is the dense reference (``dense_reference``), its ``status`` and
``error``, and then what it measured: ``metrics``, the per-epoch ``history``, the per-event
``events``, ``telemetry`` and the ``environment``.
"""

from __future__ import annotations

import platform
import traceback
from datetime import datetime, timezone

import torch

import bench_harness
from bench_harness.config import RunConfig

SCHEMA_VERSION = 2
"""2: ``plugins``, ``dense_reference``, ``events``, ``val_loss`` in the history."""

PLUGIN_KINDS = ("pruner", "dataset", "model")


def cpu_name() -> str:
    """The processor's model name (Linux reports it in /proc/cpuinfo; elsewhere the platform's word)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            for line in stream:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    """Versions and hardware a record was produced with."""
    import torchvision

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "bench_harness": bench_harness.__version__,
        "device": device.type,
        "device_name": name,
        "platform": platform.platform(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
    }


def now() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def plugin_provenance(registries, config: RunConfig) -> dict:
    """Which plugin (package, version, module) provides the run's pruner, dataset and model."""
    return {
        "pruner": registries.pruners.entry(config.pruner).provenance,
        "dataset": registries.datasets.entry(config.dataset).provenance,
        "model": registries.models.entry(config.model).provenance,
    }


def same_plugins(record: dict, provenance: dict) -> bool:
    """True when a record was produced by the same package versions of its three plugins.

    A record from another version of a pruner (or dataset, or model) package may describe something
    that version no longer computes, so it does not count as complete.
    """
    recorded = record.get("plugins")
    if not isinstance(recorded, dict):
        return False
    for kind in PLUGIN_KINDS:
        then, current = recorded.get(kind) or {}, provenance.get(kind) or {}
        if (then.get("distribution"), then.get("version")) != (current.get("distribution"), current.get("version")):
            return False
    return True


def new_record(config: RunConfig, device: torch.device, provenance: dict | None = None, dense_reference: bool = False) -> dict:
    """The record of a run that is about to start."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": config.run_id(),
        "pruner": config.pruner,
        "dataset": config.dataset,
        "model": config.model,
        "seed": config.seed,
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        "dense_reference": dense_reference,
        "plugins": provenance or {},
        "status": "running",
        "error": None,
        "started_at": now(),
        "finished_at": None,
        "metrics": {},
        "history": [],
        "events": [],
        "telemetry": {"train": None, "inference": None},
        "environment": environment(device),
    }


def for_run(config: RunConfig, registries, device: torch.device) -> dict:
    """The new record of a planned run, with its plugins' provenance and the dense-reference mark."""
    prunes = registries.pruners.get(config.pruner).prunes
    return new_record(config, device, plugin_provenance(registries, config), dense_reference=not prunes)


def mark_failed(record: dict, exc: BaseException) -> dict:
    """Turn a record into a failed one, with the error and its traceback."""
    record["status"] = "failed"
    record["error"] = f"{type(exc).__name__}: {exc}"
    record["traceback"] = "".join(traceback.format_exception(exc))
    record["finished_at"] = now()
    return record


def mark_ok(record: dict) -> dict:
    """Turn a record into a finished one."""
    record["status"] = "ok"
    record["finished_at"] = now()
    return record


def add_training(record: dict, history: list) -> None:
    """The per-epoch history and the events of a trained run (``EpochReport`` objects)."""
    record["history"] = [
        {
            "epoch": report.epoch, "train_loss": report.train_loss, "val_loss": report.val_loss,
            "val_accuracy": report.val_accuracy, "sparsity": report.sparsity, "pruned": report.pruned,
        }
        for report in history
    ]
    record["events"] = [report.event.to_dict() for report in history if report.event is not None]
