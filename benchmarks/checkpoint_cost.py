"""Checkpoint cost: what ``bench run --checkpoint-every N`` costs a seed-protocol run.

For each model and pruner, a run is built exactly as ``bench run`` builds it (``prepare_run``, on
synthetic pixels shaped like MNIST or CIFAR-10, see ``speed.py``), trained for one epoch of the
seed protocol (batch 64, Adam) so the pruner's statistics are real, and then checkpointed
repeatedly through the runner's own path: ``Trainer.state_dict`` serialised by
``bench_harness.checkpoint`` and written by ``ResultsStore.write_checkpoint`` (a temporary file,
``fsync``, rename) into a results folder on the disk the command runs from. It reports the median
seconds and the bytes of one checkpoint, the seconds to restore one into a freshly built run, and
the share of a training epoch that one checkpoint adds, which with ``--checkpoint-every 1`` is the
share of a whole seed-protocol run (49 checkpoints for 50 epochs; the record replaces the 50th).

It also times one check of the weight watch (``bench_harness.watch``), which the engine makes at
the first and last step of every epoch.

    python benchmarks/checkpoint_cost.py --help
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from bench_harness import checkpoint
from bench_harness.plugins import registries
from bench_harness.runner import DataCache, checkpoint_identity, prepare_run, resolve_device
from bench_harness.store import ResultsStore

from benchmark_env import default_output, describe_environment, model_list, progress, publish, report_header, table
from speed import WORKLOADS, run_config, synthetic_datasets, timed

PROTOCOL_EPOCHS = 50


def measure(model: str, pruners: list[str], args: argparse.Namespace, device: torch.device, folder: Path) -> list[dict]:
    """One row per pruner: epoch seconds, checkpoint seconds and bytes, restore seconds, shares."""
    workload = WORKLOADS[model]
    train_images = args.train_images or workload.train_images
    rows = []
    with synthetic_datasets({model: (train_images, 1000)}):
        cache = DataCache(registries(), None, device)
        store = ResultsStore(folder)
        for pruner in pruners:
            if "connections" not in registries().pruners.get(pruner).granularities:
                continue
            progress(f"{model} {pruner}: one epoch of {train_images:,} images, then {args.repeats} checkpoints")
            config = run_config(workload, pruner, 0, PROTOCOL_EPOCHS, args)
            run = prepare_run(config, registries(), cache, use_cuda_graph=device.type == "cuda")
            train, _, _, _ = cache.get(config.dataset, config.val_size)
            _, epoch_seconds = timed(device, lambda: run.trainer.train_epoch(train))
            identity = checkpoint_identity(run)
            data = b""

            def save() -> None:
                nonlocal data
                data = checkpoint.dumps(run.trainer.state_dict(), identity)
                store.write_checkpoint(config, data)

            save_seconds = statistics.median(timed(device, save)[1] for _ in range(args.repeats))
            fresh = prepare_run(config, registries(), cache, use_cuda_graph=device.type == "cuda")
            saved = store.read_checkpoint(config)
            restore_seconds = statistics.median(
                timed(device, lambda: fresh.trainer.load_state_dict(checkpoint.loads(saved, identity)[0]))[1] for _ in range(args.repeats)
            )
            watch = run.trainer.watch

            def check() -> None:
                with watch.guard("observe", gradients=True):
                    pass

            watch_seconds = statistics.median(timed(device, check)[1] for _ in range(args.repeats))
            scale = workload.train_images / train_images  # a full-size epoch from the measured one
            full_epoch = epoch_seconds * scale
            run.trainer.close()
            fresh.trainer.close()
            rows.append({
                "model": model, "pruner": pruner, "train_images_measured": train_images,
                "epoch_seconds_measured": epoch_seconds, "epoch_seconds_full_size": full_epoch,
                "checkpoint_seconds": save_seconds, "checkpoint_bytes": len(data), "restore_seconds": restore_seconds,
                "checkpoint_share_of_epoch": save_seconds / full_epoch,
                "checkpoint_share_of_run_every_epoch": (PROTOCOL_EPOCHS - 1) * save_seconds / (PROTOCOL_EPOCHS * full_epoch),
                "watch_check_seconds": watch_seconds,
                "watch_share_of_epoch": 2 * watch_seconds / full_epoch,
            })
            store.remove_checkpoint(config)
    return rows


def report(payload: dict) -> str:
    rows = [[r["model"], r["pruner"], f"{r['epoch_seconds_full_size']:.2f}", f"{1000 * r['checkpoint_seconds']:.1f}",
             f"{r['checkpoint_bytes'] / 2**20:.2f}", f"{1000 * r['restore_seconds']:.1f}",
             f"{100 * r['checkpoint_share_of_run_every_epoch']:.2f}%", f"{100 * r['watch_share_of_epoch']:.3f}%"]
            for r in payload["rows"]]
    headers = ["model", "pruner", "epoch (s)", "checkpoint (ms)", "size (MiB)", "restore (ms)", "run share, every epoch", "watch share"]
    how = (f"One seed-protocol epoch (batch 64) per run, then the median of {payload['repeats']} checkpoints written to "
           "disk (fsync); epochs of fewer images are scaled to the full size.")
    return "\n".join([*report_header(payload["environment"], how), table(rows, headers, payload.get("tablefmt", "simple"))])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="fcnn,cnn", help="fcnn (MNIST-shaped), cnn (CIFAR-10-shaped), comma-separated")
    parser.add_argument("--pruners", default="none,magnitude,taylor,contribution,obs,rigl",
                        help="comma-separated, or 'all' for every registered pruner")
    parser.add_argument("--train-images", type=int, default=0,
                        help="images in the timed epoch (default: the full dataset's); the share is scaled to the full size")
    parser.add_argument("--repeats", type=int, default=7, help="checkpoints timed per run (median)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--folder", type=Path, default=Path("."),
                        help="where the temporary results folder goes (default: here; the disk checkpoints would go to)")
    parser.add_argument("--output", type=Path, default=None, help="the JSON file (default: benchmarks/results/...)")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = parser.parse_args()
    if args.repeats < 1 or args.train_images < 0:
        parser.error("--repeats must be at least 1 and --train-images not negative")
    device = resolve_device(args.device)
    models = model_list(parser, args.models, WORKLOADS)
    pruners = registries().pruners.names() if args.pruners == "all" else [name.strip() for name in args.pruners.split(",") if name.strip()]
    for name in pruners:
        registries().pruners.get(name)
    folder = Path(tempfile.mkdtemp(prefix=".checkpoint-cost-", dir=args.folder))
    try:
        rows = [row for model in models for row in measure(model, pruners, args, device, folder)]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    payload = {
        "benchmark": "checkpoint-cost", "environment": describe_environment(device), "repeats": args.repeats,
        "protocol_epochs": PROTOCOL_EPOCHS, "rows": rows,
    }
    output = args.output or default_output("checkpoint-cost", device)
    print(report({**payload, "tablefmt": "github" if args.markdown else "simple"}))
    publish(payload, output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
