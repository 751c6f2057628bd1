"""Telemetry benchmark: what the NVML sampler costs the training it watches.

The runner samples the GPU on a background thread while a group of runs trains. That thread
competes with the training loop's own thread for the Python interpreter and issues NVML calls to
the driver. This script trains the same group of concurrent runs (as ``bench run`` does: the
runner's ``prepare_run``, interleaved steps, a CUDA graph on a GPU) in trials of a few epochs,
alternating trials with and without the sampler, and reports the median paired slowdown. The
target (issue 4) is under 1% of training time.

Without NVML (no NVIDIA driver, or a CPU run) the sampler does nothing, so the figure measures
nothing; the report says so instead of printing a reassuring zero.

    python benchmarks/telemetry.py --help
"""

from __future__ import annotations

import argparse
import statistics
import sys
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import torch

from bench_harness.engine import ResidentSplit
from bench_harness.measure.telemetry import TelemetrySampler, nvml_index
from bench_harness.config import RunConfig
from bench_harness.plugins import registries
from bench_harness.runner import DataCache, default_concurrency, resolve_device

from benchmark_env import default_output, describe_environment, model_list, progress, publish, report_header, table
from speed import WORKLOADS, build_trainer, synthetic_datasets, timed

TARGET_PERCENT = 1.0
"""Issue 4: telemetry costs under 1% of training time."""


def train_group(trainers: list, data: ResidentSplit, epochs: int) -> None:
    """``epochs`` epochs of every run, interleaved step by step as ``fit_together`` trains a group."""
    steps = trainers[0].steps_per_epoch(data)
    for _ in range(epochs):
        for trainer in trainers:
            trainer.begin_epoch(data)
        for _ in range(steps):
            for trainer in trainers:
                trainer.advance()
        for trainer in trainers:
            trainer.end_epoch()


def one_trial(trainers: list, data: ResidentSplit, epochs: int, sampler: TelemetrySampler | None, device: torch.device) -> dict:
    """Seconds of one trial, and what the sampler saw when it ran."""
    with sampler if sampler is not None else nullcontext():
        _, seconds = timed(device, lambda: train_group(trainers, data, epochs))
    summary = None if sampler is None else sampler.summary()
    return {"seconds": seconds, "samples": None if summary is None else summary["samples"], "summary": summary}


def measure_model(model: str, device: torch.device, args: argparse.Namespace) -> dict:
    """Alternating trials with and without the sampler for one model's group of runs."""
    workload = WORKLOADS[model]
    cache = DataCache(registries(), None, device)
    train, _, _, _ = cache.get(workload.dataset, 0)
    build_args = SimpleNamespace(epochs=args.trial_epochs, device=args.device)
    trainers = [build_trainer(workload, cache, device, "none", seed, build_args) for seed in range(args.concurrency)]
    train_group(trainers, train, 1)  # warm-up: graph capture on a GPU, allocator and caches elsewhere
    index = nvml_index(device)
    with_sampler, without_sampler, sampler = [], [], None
    for round_index in range(args.rounds):
        progress(f"{model}: round {round_index + 1} of {args.rounds}")
        # Alternate which trial goes first, so a drift of the machine's speed hits both alike.
        for sampling in (True, False) if round_index % 2 == 0 else (False, True):
            if sampling:
                sampler = TelemetrySampler(index, args.period)
                with_sampler.append(one_trial(trainers, train, args.trial_epochs, sampler, device))
            else:
                without_sampler.append(one_trial(trainers, train, args.trial_epochs, None, device))
    slowdowns = [100.0 * (on["seconds"] - off["seconds"]) / off["seconds"] for on, off in zip(with_sampler, without_sampler)]
    quartiles = statistics.quantiles(slowdowns, n=4) if len(slowdowns) > 1 else [slowdowns[0]] * 3
    return {
        "runs": args.concurrency,
        "engines": sorted({trainer.engine for trainer in trainers}),
        "train_images": len(train),
        "sampler_active": sampler.error is None,
        "sampler_error": sampler.error,
        "nvml_index": index,
        "seconds_with": [trial["seconds"] for trial in with_sampler],
        "seconds_without": [trial["seconds"] for trial in without_sampler],
        "samples_per_trial": [trial["samples"] for trial in with_sampler],
        "overhead_percent_median": statistics.median(slowdowns),
        "overhead_percent_quartiles": [quartiles[0], quartiles[2]],
        "overhead_percent_each": slowdowns,
        "last_summary": with_sampler[-1]["summary"],
    }


def report(payload: dict) -> str:
    """The human-readable table of the JSON payload."""
    settings = payload["settings"]
    lines = report_header(
        payload["environment"],
        f"Each trial trains {settings['concurrency']} concurrent runs for {settings['trial_epochs']} epoch(s); "
        f"{settings['rounds']} rounds of one trial with and one without the sampler (period {settings['period']} s), order alternating.",
    )
    rows, inactive = [], []
    for model, result in payload["results"].items():
        samples = [count for count in result["samples_per_trial"] if count is not None]
        median, (low, high) = result["overhead_percent_median"], result["overhead_percent_quartiles"]
        verdict = ("yes" if median < TARGET_PERCENT else "NO") if result["sampler_active"] else "n/a"
        rows.append([
            model, "/".join(result["engines"]), f"{statistics.median(result['seconds_without']):.3f}", f"{statistics.median(result['seconds_with']):.3f}",
            f"{median:+.2f}%", f"{low:+.2f}% .. {high:+.2f}%", f"{statistics.median(samples):.0f}" if samples else "0", verdict,
        ])
        if not result["sampler_active"]:
            inactive.append(f"{model}: the sampler was inactive ({result['sampler_error']}), so this overhead measures nothing.")
    lines.append(table(rows, ["model", "engine", "s/trial without", "s/trial with", "overhead (median)", "quartiles", "samples/trial", f"< {TARGET_PERCENT:g}%"]))
    return "\n".join(lines + ([""] + inactive if inactive else []))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; see --help."""
    parser = argparse.ArgumentParser(description="Measure the NVML telemetry sampler's cost to training: trials with and without it, alternating.")
    parser.add_argument("--models", default="fcnn,cnn", help="comma-separated: fcnn (MNIST-shaped data), cnn (CIFAR-10-shaped) [default: fcnn,cnn]")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda [default: auto]")
    parser.add_argument("--period", type=float, default=0.1, help="seconds between samples, as bench run --telemetry-period [default: 0.1]")
    parser.add_argument("--trial-epochs", type=int, default=5, help="epochs per trial [default: 5]")
    parser.add_argument("--rounds", type=int, default=6, help="pairs of trials (with, without) [default: 6]")
    parser.add_argument("--concurrency", type=int, default=None, help="runs trained together [default: the runner's, 5 on a GPU, 1 on the CPU]")
    parser.add_argument("--train-images", type=int, default=None, help="training images per dataset [default: 60,000 / 50,000, the real sizes]")
    parser.add_argument("--output", type=Path, default=None, help="JSON file [default: benchmarks/results/telemetry-<device>-<date>.json]")
    args = parser.parse_args(argv)
    args.models = model_list(parser, args.models, WORKLOADS)
    for option in ("trial_epochs", "rounds", "concurrency", "train_images"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1, got {value}")
    if args.period <= 0:
        parser.error(f"--period must be positive, got {args.period}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table, write the JSON."""
    args = parse_args(argv)
    device = resolve_device(args.device)
    environment = describe_environment(device)  # read before measuring: the commit measured, not the one at the end
    args.concurrency = args.concurrency or default_concurrency(device)
    sizes = {model: (args.train_images or WORKLOADS[model].train_images, 1) for model in args.models}
    with synthetic_datasets(sizes):
        results = {model: measure_model(model, device, args) for model in args.models}
    payload = {
        "benchmark": "bench-harness telemetry: training time with and without the NVML sampler",
        "data": "synthetic uint8 pixels with MNIST's and CIFAR-10's shapes (see speed.py)",
        "environment": environment,
        "settings": {
            "period": args.period, "trial_epochs": args.trial_epochs, "rounds": args.rounds, "concurrency": args.concurrency,
            "target_percent": TARGET_PERCENT,
            "sizes": sizes, "batch_size": RunConfig().batch_size,
        },
        "results": results,
    }
    print(report(payload))
    output = args.output or default_output("telemetry", device)
    publish(payload, output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
