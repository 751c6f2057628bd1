"""Run records built by hand, in the store's schema, for the tests of everything that reads them.

`make_record` writes the current schema (``dense_reference`` flag, every config field, per-event
entries, plugin provenance); ``schema=1`` writes a record as the first version did, without them.
"""

from __future__ import annotations

import json

from bench_harness.config import RunConfig

_V1_CONFIG_KEYS = ("pruner", "dataset", "model", "seed", "epochs", "batch_size", "lr", "prune_every", "prune_rate",
                   "target_sparsity", "granularity", "scope", "val_size", "augment", "device")


def make_record(pruner: str, seed: int, accuracy: float | None, status: str = "ok", metrics: dict | None = None,
                schema: int = 2, dense: bool | None = None, events: bool = True, **config_changes) -> dict:
    """One run: ``accuracy`` is the test accuracy (a fraction); config settings change by keyword."""
    dense = (pruner == "none") if dense is None else dense
    config = {**RunConfig().to_dict(), "pruner": pruner, "dataset": "fashion-mnist", "model": "fcnn", "seed": seed,
              "val_size": 5000, "device": "cpu", **config_changes}
    if schema == 1:
        config = {k: config[k] for k in _V1_CONFIG_KEYS if k in config}
    epochs, every = config["epochs"], config["prune_every"]
    event_epochs = [] if dense else list(range(every, epochs, every))
    rate = 0.0 if dense else config["prune_rate"]
    if not dense and config.get("target_sparsity") is not None and event_epochs:
        rate = 1 - (1 - config["target_sparsity"]) ** (1 / len(event_epochs))
    sparsity = 1 - (1 - rate) ** len(event_epochs)
    run_metrics = {
        "test_accuracy": accuracy, "val_accuracy": accuracy, "params_total": 266610,
        "params_nonzero": round(266610 * (1 - sparsity)), "sparsity": sparsity, "train_seconds": 12.3,
        "prune_seconds": 0.0 if dense else 0.05, "inference_seconds": 0.01, "peak_memory_mb": None,
    }
    run_metrics.update(metrics or {})
    changed = {k: v for k, v in config_changes.items()}
    suffix = "-".join(f"{k}{v}" for k, v in sorted(changed.items()))
    base = accuracy if accuracy is not None else 0.5
    history, alive = [], 1.0
    for epoch in range(1, epochs + 1):
        pruned = epoch in event_epochs
        alive *= (1 - rate) if pruned else 1.0
        history.append({"epoch": epoch, "train_loss": 1.0 / epoch, "val_accuracy": base - 0.02 / epoch,
                        "val_loss": 0.5 / epoch, "sparsity": 1 - alive, "pruned": 1000 if pruned else 0})
    record = {
        "schema_version": schema,
        "run_id": f"{config['dataset']}-{pruner}-s{seed}-{suffix}",
        "pruner": pruner, "dataset": config["dataset"], "model": config["model"], "seed": seed,
        "config": config, "config_hash": "0" * 16, "status": status,
        "error": "ValueError: scores contain NaN" if status == "failed" else None,
        "metrics": run_metrics if status == "ok" else {**run_metrics, "test_accuracy": None},
        "history": history, "telemetry": {"train": None, "inference": None},
        "environment": {"python": "3.11.7", "torch": "2.4.0", "device": "cpu", "device_name": "Test CPU"},
        "schedule": {"event_epochs": event_epochs, "rate": rate},
    }
    if schema >= 2:
        record["dense_reference"] = dense
        record["plugins"] = {"pruner": {"name": pruner, "distribution": "bench-harness", "version": "0.1.0",
                                        "module": f"bench_harness_plugins.{pruner}"}}
        record["events"] = [
            {"epoch": epoch, "kind": "prune", "target_density": (1 - rate) ** (i + 1),
             "val_accuracy_before": base - 0.01, "val_loss_before": 0.4,
             "val_accuracy_after_cut": base - 0.10 - 0.01 * i, "val_loss_after_cut": 0.9,
             "val_accuracy_after_compensation": None, "val_loss_after_compensation": None, "seconds": 0.01}
            for i, epoch in enumerate(event_epochs)
        ] if events else []
    return record


def seeds(pruner: str, accuracies=(0.88, 0.89, 0.90), **changes) -> list[dict]:
    """One record per accuracy, seeds 0, 1, 2, ..."""
    return [make_record(pruner, seed, acc, **changes) for seed, acc in enumerate(accuracies)]


def write_records(folder, records: list[dict]) -> None:
    """Store records as a results folder holds them: RESULTS/runs/<run_id>.json."""
    runs = folder / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for record in records:
        (runs / f"{record['run_id']}.json").write_text(json.dumps(record))
