"""Compaction benchmark: is a neuron-pruned model, made physically smaller, really faster?

Masked pruning leaves every multiply in place; only removing the dead units and channels makes the
arithmetic smaller. This script prunes a fraction of the hidden units of ``fcnn`` and of the
channels of ``cnn`` (one neuron-pruning event through the harness's own ``MaskSet``, scored by a
registered pruner), builds the compact model with the harness's ``compact_model``, checks that it
computes the same outputs and has the parameter count the masks predict, and then times the masked
and the compact model side by side, alternating, at several batch sizes on one device.

The weights are freshly initialised, not trained: speed depends on the shapes, not on the values.

    python benchmarks/compaction.py --help
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

from bench_harness.event import run_event
from bench_harness.masks import MaskSet
from bench_harness.measure.compaction import compact_model, compact_param_count
from bench_harness.measure.flops import count_flops
from bench_harness.measure.latency import measure_latency
from bench_harness.measure.trained_model import THROUGHPUT_BATCH_SIZE, hidden_alive_units, timing_repeats
from bench_harness.plugins import registries
from bench_harness.pruner import PruningContext, find_prunable_layers
from bench_harness.runner import resolve_device
from bench_harness.schedule import EventPlan

from benchmark_env import default_output, describe_environment, model_list, progress, publish, report_header, table

INPUT_SHAPES = {"fcnn": (1, 28, 28), "cnn": (3, 32, 32)}
"""Each model at the shape of its seed-protocol dataset (MNIST, CIFAR-10)."""

NUM_CLASSES = 10

EQUIVALENCE_TOLERANCE = 1e-5
"""Largest absolute output difference allowed between the masked and the compact model (float32)."""

EQUIVALENCE_BATCH = 256


def pruned_model(model_name: str, fraction: float, criterion: str, seed: int, device: torch.device) -> tuple[nn.Module, MaskSet]:
    """A fresh model with ``fraction`` of every hidden layer's units removed in one event (layer scope)."""
    torch.manual_seed(seed)
    model = registries().models.get(model_name).build(INPUT_SHAPES[model_name], NUM_CLASSES).to(device)
    layers = find_prunable_layers(model)
    optimizer = torch.optim.Adam(model.parameters())
    context = PruningContext(model, layers, optimizer, seed, device, "neurons", 64)
    pruner = registries().pruners.get(criterion)(context)
    masks = MaskSet(layers)
    run_event(EventPlan(1, 1.0 - fraction), pruner, masks, optimizer, "neurons", "layer")
    return model, masks


def count_from_masks(model: nn.Module, masks: MaskSet) -> int:
    """Parameters the compact model must have, counted from the masks alone.

    After neuron pruning only, a weight or bias survives compaction exactly when its mask is 1
    (dead units' rows and their columns in the next layer are all zero); parameters of layers the
    harness does not prune are kept whole.
    """
    covered = {id(layer.weight) for layer in masks.layers} | {id(layer.bias) for layer in masks.layers if layer.bias is not None}
    uncovered = sum(param.numel() for param in model.parameters() if id(param) not in covered)
    kept = sum(int(mask.sum()) for mask in masks.weight.values()) + sum(int(mask.sum()) for mask in masks.bias.values())
    return kept + uncovered


@torch.no_grad()
def max_output_difference(model: nn.Module, compact: nn.Module, input_shape: tuple[int, int, int], device: torch.device) -> float:
    """Largest absolute difference of the two models' outputs on random float32 inputs."""
    inputs = torch.randn((EQUIVALENCE_BATCH, *input_shape), device=device)
    model.eval()
    compact.eval()
    return float((model(inputs) - compact(inputs)).abs().max())


def time_side_by_side(model: nn.Module, compact: nn.Module, input_shape: tuple[int, int, int], batch_size: int, device: torch.device, rounds: int) -> dict:
    """Median latencies of both models over ``rounds`` alternating rounds, and the median per-round speed-up.

    Alternating the order each round means a slow spell of the machine hits both models alike; the
    speed-up is taken per round (same conditions) before the median.
    """
    warmup, repeats = timing_repeats(device)
    masked_ms, compact_ms = [], []
    for round_index in range(rounds):
        pair = [(model, masked_ms), (compact, compact_ms)]
        for net, times in pair if round_index % 2 == 0 else reversed(pair):
            times.append(measure_latency(net, input_shape, batch_size, device, warmup=warmup, repeats=repeats))
    speedups = [dense / small for dense, small in zip(masked_ms, compact_ms)]
    return {
        "batch_size": batch_size,
        "masked_ms": statistics.median(masked_ms),
        "compact_ms": statistics.median(compact_ms),
        "speedup": statistics.median(speedups),
        "masked_ms_rounds": masked_ms,
        "compact_ms_rounds": compact_ms,
    }


def benchmark_model(model_name: str, device: torch.device, args: argparse.Namespace) -> dict:
    """Prune, compact, verify and time one model."""
    input_shape = INPUT_SHAPES[model_name]
    model, masks = pruned_model(model_name, args.fraction, args.criterion, args.seed, device)
    alive = hidden_alive_units(masks)
    compact = compact_model(model, alive)
    params_compact = sum(param.numel() for param in compact.parameters())
    difference = max_output_difference(model, compact, input_shape, device)
    flops_masked = count_flops(model, input_shape)["flops_dense"]
    flops_compact = count_flops(compact, input_shape)["flops_dense"]
    units = {name: {"before": int(vector.numel()), "after": int(vector.sum())} for name, vector in alive.items()}
    checks = {
        "max_abs_output_difference": difference,
        "outputs_equal": difference < EQUIVALENCE_TOLERANCE,
        "params_compact": params_compact,
        "params_from_masks": count_from_masks(model, masks),
        "params_from_plan": compact_param_count(model, alive),
    }
    checks["params_equal"] = checks["params_compact"] == checks["params_from_masks"] == checks["params_from_plan"]
    timings = []
    for batch_size in args.batch_sizes:
        progress(f"{model_name}: batch {batch_size}")
        timings.append(time_side_by_side(model, compact, input_shape, batch_size, device, args.rounds))
    return {
        "units": units,
        "params_masked_model": sum(param.numel() for param in model.parameters()),
        "flops_masked": flops_masked,
        "flops_compact": flops_compact,
        "flops_ratio": flops_masked / flops_compact,
        "checks": checks,
        "timings": timings,
    }


def report(payload: dict) -> str:
    """The human-readable tables of the JSON payload."""
    settings = payload["settings"]
    lines = report_header(
        payload["environment"],
        f"{settings['fraction']:.0%} of every hidden layer's units removed by '{settings['criterion']}' in one event; "
        f"untrained weights; medians of {settings['rounds']} alternating rounds, each the median of {settings['timing_repeats']} timed passes.",
    )
    check_rows, timing_rows = [], []
    for model_name, result in payload["results"].items():
        checks = result["checks"]
        units = ", ".join(f"{name} {count['before']}->{count['after']}" for name, count in result["units"].items())
        check_rows.append([
            model_name, units, f"{result['params_masked_model']:,}", f"{checks['params_compact']:,}", f"{checks['params_from_masks']:,}",
            "yes" if checks["params_equal"] else "NO", f"{checks['max_abs_output_difference']:.1e}", "yes" if checks["outputs_equal"] else "NO",
            f"{result['flops_ratio']:.2f}x",
        ])
        for timing in result["timings"]:
            timing_rows.append([model_name, timing["batch_size"], f"{timing['masked_ms']:.4f}", f"{timing['compact_ms']:.4f}", f"{timing['speedup']:.2f}x"])
    lines.append(table(check_rows, ["model", "units kept", "params (masked)", "params (compact)", "from masks", "equal", "max |diff|", f"< {EQUIVALENCE_TOLERANCE:g}", "FLOPs ratio"]))
    lines += ["", table(timing_rows, ["model", "batch", "masked ms", "compact ms", "speed-up"])]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; see --help."""
    parser = argparse.ArgumentParser(description="Time neuron-pruned models, masked and physically compacted, side by side on one device.")
    parser.add_argument("--models", default="fcnn,cnn", help="comma-separated: fcnn (MNIST-shaped input), cnn (CIFAR-10-shaped) [default: fcnn,cnn]")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda [default: auto]")
    parser.add_argument("--fraction", type=float, default=0.5, help="fraction of each hidden layer's units removed [default: 0.5]")
    parser.add_argument("--criterion", default="magnitude", help="registered pruner that picks the units [default: magnitude]")
    parser.add_argument("--batch-sizes", default=f"1,64,{THROUGHPUT_BATCH_SIZE},8192", help=f"comma-separated batch sizes [default: 1,64,{THROUGHPUT_BATCH_SIZE},8192]")
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds per batch size [default: 5]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model's initialisation [default: 0]")
    parser.add_argument("--output", type=Path, default=None, help="JSON file for every figure [default: benchmarks/results/compaction-<device>-<date>.json]")
    args = parser.parse_args(argv)
    args.models = model_list(parser, args.models, INPUT_SHAPES)
    try:
        args.batch_sizes = [int(size) for size in args.batch_sizes.split(",") if size.strip()]
    except ValueError:
        parser.error(f"--batch-sizes takes whole numbers separated by commas, got {args.batch_sizes!r}")
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        parser.error("--batch-sizes must list at least one size, each at least 1")
    if not 0.0 < args.fraction < 1.0:
        parser.error(f"--fraction must be between 0 and 1, got {args.fraction}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.criterion not in registries().pruners.names():
        parser.error(f"--criterion must be a registered pruner ({', '.join(registries().pruners.names())}), got {args.criterion!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure, print the tables, write the JSON; exit 1 if a check failed."""
    args = parse_args(argv)
    device = resolve_device(args.device)
    environment = describe_environment(device)  # read before measuring: the commit measured, not the one at the end
    results = {name: benchmark_model(name, device, args) for name in args.models}
    payload = {
        "benchmark": "bench-harness compaction: masked vs physically compacted neuron-pruned models",
        "environment": environment,
        "settings": {
            "fraction": args.fraction, "criterion": args.criterion, "batch_sizes": args.batch_sizes, "rounds": args.rounds,
            "timing_warmup": timing_repeats(device)[0], "timing_repeats": timing_repeats(device)[1], "seed": args.seed,
            "weights": "freshly initialised (speed depends on shapes only)",
        },
        "results": results,
    }
    print(report(payload))
    output = args.output or default_output("compaction", device)
    publish(payload, output)
    failed = [name for name, result in results.items() if not (result["checks"]["params_equal"] and result["checks"]["outputs_equal"])]
    if failed:
        print(f"PROBLEM: the compact model of {', '.join(failed)} does not match the masked one.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
