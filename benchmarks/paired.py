"""Compare two sets of runs seed by seed, across results folders.

`bench leaderboard` pairs the pruners of one table: the same settings, one results folder. Some
questions pair runs that differ in a setting, for example the same pruner under two allocations
(`--scope layer` in one folder, `--scope global` in another). This script takes two
``FOLDER:PRUNER`` selections, pairs their runs by seed (runs with the same seed share the
initialisation and the data order) and prints each seed's accuracies, the mean difference with its
95% interval and the paired t-test, computed by the same code as the leaderboard's columns::

    python benchmarks/paired.py results/grid-a-global:contribution results/grid-a-layer:contribution

A selection must hold one configuration per seed; more than one (say, two prune rates in one folder)
is an error, because which to pair would be a guess.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from bench_harness.significance import mean_interval, paired_difference
from bench_harness.store import ResultsStore

METRICS = {"test": "test_accuracy", "val": "val_accuracy"}


class BadInput(Exception):
    """A selection that cannot be compared: one sentence for the user, exit code 2."""


def per_seed(selection: str, metric: str) -> dict[int, float]:
    """Accuracy (%) per seed of one ``FOLDER:PRUNER`` selection's completed runs."""
    folder, separator, pruner = selection.rpartition(":")
    if not separator or not folder or not pruner:
        raise BadInput(f"'{selection}' is not FOLDER:PRUNER.")
    if not Path(folder, "runs").is_dir():
        raise BadInput(f"{folder} holds no runs/ folder: not a results folder of `bench run`.")
    values: dict[int, float] = {}
    for record in ResultsStore(folder).records():
        config = record.get("config") or {}
        value = (record.get("metrics") or {}).get(METRICS[metric])
        if record.get("status") != "ok" or config.get("pruner") != pruner or not isinstance(value, (int, float)):
            continue
        seed = config.get("seed")
        if seed in values:
            raise BadInput(f"{selection}: two completed runs of seed {seed} with different settings; give each its own folder.")
        values[seed] = 100.0 * float(value)
    if not values:
        raise BadInput(f"{selection}: no completed run of pruner '{pruner}'.")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", help="FOLDER:PRUNER, the runs compared")
    parser.add_argument("b", help="FOLDER:PRUNER, the runs they are compared with (the difference is a - b)")
    parser.add_argument("--metric", choices=sorted(METRICS), default="test", help="test accuracy, or the validation accuracy at the end of training [default: test]")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    try:
        a, b = per_seed(args.a, args.metric), per_seed(args.b, args.metric)
    except BadInput as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    paired = paired_difference(a, b)
    seeds = sorted(set(a) & set(b))
    result = {
        "a": args.a, "b": args.b, "metric": METRICS[args.metric], "seeds": seeds,
        "a_per_seed": {seed: a[seed] for seed in seeds}, "b_per_seed": {seed: b[seed] for seed in seeds},
        "a_mean": mean_interval([a[s] for s in seeds]).mean, "b_mean": mean_interval([b[s] for s in seeds]).mean,
        "delta_pp": paired.delta, "delta_ci95_pp": paired.half_width, "p_value": paired.p_value, "pairs": paired.pairs,
        "unpaired_seeds": sorted(set(a) ^ set(b)),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'seed':>4}  {args.a:>30}  {args.b:>30}  {'a - b':>7}")
    for seed in seeds:
        print(f"{seed:>4}  {a[seed]:>30.2f}  {b[seed]:>30.2f}  {a[seed] - b[seed]:>+7.2f}")
    interval = "" if math.isnan(paired.half_width) else f" ± {paired.half_width:.2f}"
    p_text = "no test (fewer than 2 shared seeds)" if math.isnan(paired.p_value) else f"paired t-test p = {paired.p_value:.2g}"
    print(f"mean {result['a_mean']:.2f} vs {result['b_mean']:.2f}: Δ {paired.delta:+.2f}{interval} pp over {paired.pairs} seeds; {p_text}")
    if result["unpaired_seeds"]:
        print(f"seeds in only one selection, left out: {', '.join(map(str, result['unpaired_seeds']))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
