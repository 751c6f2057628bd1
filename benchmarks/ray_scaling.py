"""Ray scaling: the wall time of one small grid trained by ``bench run --executor ray`` on a local
Ray instance of 1 CPU, then of 2 CPUs (each group of runs a task of one CPU, as ``bench run``
sends it: ``--ray-cpus-per-task 1``), side by side with the local executor in this process, which
uses as many torch threads as a Ray task of one CPU (``--local-threads``, 1), so all three compute
the same records.

Every configuration trains the same grid from scratch into its own temporary results folder
through the runner's own path (``plan_runs`` + ``run_grid``, the executor ``bench run`` builds),
so the times include what a command does besides training: the driver's checks, claims, shipping
checkpoints and records back. The first configuration also loads the dataset into the file cache,
so a warm-up grid of one epoch runs first and is not timed.

    python benchmarks/ray_scaling.py --help
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch

from bench_harness.config import RunConfig
from bench_harness.plugins import registries
from bench_harness.runner import plan_runs, run_grid
from bench_harness.store import ResultsStore

from benchmark_env import default_output, describe_environment, progress, publish, report_header, table


def grid(args: argparse.Namespace, epochs: int) -> list[RunConfig]:
    base = RunConfig(epochs=epochs, batch_size=args.batch_size, prune_every=1, device="cpu")
    return plan_runs(base, args.pruners, [args.dataset], args.seeds, registries())


def train(configs: list[RunConfig], args: argparse.Namespace, folder: Path, workers: int | None) -> dict:
    """One grid into a fresh folder: locally (``workers`` None) or on a local Ray of that many CPUs."""
    executor, threads = None, torch.get_num_threads()
    if workers is None:
        torch.set_num_threads(args.local_threads)
    else:
        import ray

        from bench_harness.cluster import RayExecutor

        ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        executor = RayExecutor()
    try:
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        summary = run_grid(configs, registries(), ResultsStore(folder), args.data_dir, checkpoint_every=None, executor=executor)
        seconds = time.perf_counter() - started
        load_after = os.getloadavg()[0]
    finally:
        torch.set_num_threads(threads)
        if workers is not None:
            import ray

            ray.shutdown()
    if summary.failed or summary.completed != len(configs):
        raise SystemExit(f"the grid did not complete: {summary}")
    # How many runs trained at the same time, from the records' start and end (to the second).
    spans = [(datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"])) for r in ResultsStore(folder).records()]
    overlap = max(sum(1 for start, end in spans if start <= moment < end) for moment, _ in spans)
    # The machine's 1-minute load average around the measurement: other work on the same cores shows.
    return {"seconds": round(seconds, 2), "runs": summary.completed, "max_concurrent_runs": overlap, "load_average": [round(load_before, 2), round(load_after, 2)]}


def report(payload: dict) -> str:
    how = (f"{payload['runs']} runs ({', '.join(payload['pruners'])} x {payload['seeds']} seeds) of {payload['dataset']}, "
           f"{payload['epochs']} epochs, batch {payload['batch_size']}; wall time of the whole command, best of {payload['repeats']}")
    rows = [[row["executor"], row["worker_cpus"] or "-", row["torch_threads"], row["max_concurrent_runs"], f"{row['seconds']:.1f}",
             f"{row['speedup_vs_one_worker']:.2f}x" if row["speedup_vs_one_worker"] else "-",
             " -> ".join(f"{load:.1f}" for load in row["load_average"])] for row in payload["rows"]]
    return "\n".join([*report_header(payload["environment"], how), table(
        rows, ["executor", "Ray worker CPUs", "torch threads per run", "runs at once", "wall (s)", "vs 1 worker", "load average"], payload.get("tablefmt", "simple"))])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", type=Path, default=None, help="as bench run --data-dir")
    parser.add_argument("--pruners", default="magnitude,random", help="comma-separated")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1, help="times each configuration trains the grid (the best is kept)")
    parser.add_argument("--workers", default="1,2", help="Ray CPUs to compare, comma-separated")
    parser.add_argument("--local-threads", type=int, default=1, help="torch threads of the local executor's grid (a Ray task of 1 CPU has 1)")
    parser.add_argument("--device", default="cpu", choices=["cpu"], help="the runs' device: this measures CPU workers")
    parser.add_argument("--folder", type=Path, default=Path("."), help="where the temporary results folders go")
    parser.add_argument("--output", type=Path, default=None, help="the JSON file (default: benchmarks/results/...)")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = parser.parse_args()
    args.pruners = [name.strip() for name in args.pruners.split(",") if name.strip()]
    try:
        workers = [int(count) for count in args.workers.split(",")]
    except ValueError:
        parser.error(f"--workers takes CPU counts such as 1,2, got {args.workers!r}")
    if args.repeats < 1 or args.seeds < 1 or args.local_threads < 1 or args.epochs < 2 or not workers or min(workers) < 1:
        parser.error("--repeats, --seeds and --local-threads must be at least 1, --epochs at least 2 (a pruning event needs one), --workers positive")
    configs = grid(args, args.epochs)
    environment = describe_environment(torch.device("cpu"))
    rows = []
    folder = Path(tempfile.mkdtemp(prefix=".ray-scaling-", dir=args.folder))
    try:
        progress("warm-up: one local run of the grid's first config, untimed")
        train(grid(args, 2)[:1], args, folder / "warm-up", None)
        for executor, count in [("local", None), *[("ray", count) for count in workers]]:
            best = None
            for repeat in range(args.repeats):
                progress(f"{executor}{'' if count is None else f' with {count} worker CPU(s)'}: {len(configs)} runs (repeat {repeat + 1})")
                result = train(configs, args, folder / f"{executor}-{count}-{repeat}", count)
                best = result if best is None or result["seconds"] < best["seconds"] else best
            rows.append({"executor": executor, "worker_cpus": count, "torch_threads": args.local_threads if count is None else 1, **best})
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    one = next((row["seconds"] for row in rows if row["worker_cpus"] == 1), None)
    for row in rows:
        row["speedup_vs_one_worker"] = round(one / row["seconds"], 2) if one and row["executor"] == "ray" else None
    payload = {
        "benchmark": "ray-scaling", "environment": environment, "dataset": args.dataset, "pruners": args.pruners,
        "seeds": args.seeds, "epochs": args.epochs, "batch_size": args.batch_size, "runs": len(configs),
        "repeats": args.repeats, "rows": rows,
    }
    output = args.output or default_output("ray-scaling", torch.device("cpu"))
    print(report({**payload, "tablefmt": "github" if args.markdown else "simple"}))
    publish(payload, output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
