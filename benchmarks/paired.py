"""Compare two sets of runs seed by seed, across results folders.

`bench leaderboard` pairs the pruners of one table: the same settings, one results folder. Some
questions pair runs that differ in a setting, for example the same pruner under two allocations
(`--scope layer` in one folder, `--scope global` in another). This script takes two
``FOLDER:PRUNER`` selections, pairs their runs by seed (runs with the same seed share the
initialisation and the data order) and prints each seed's accuracies, the mean difference with its
95% interval and the paired t-test, computed by the same code as the leaderboard's columns::

    python benchmarks/paired.py results/grid-a-global:contribution results/grid-a-layer:contribution

More than one pair of selections pools them: each pair is one comparison (a cell of a grid, say),
its runs are paired by seed within it, for a question asked of several cells at once (is a variant
below the method on average?). Runs with the same seed share the initialisation and the data order
in every cell, so their differences are not independent: the pooled test first averages each
seed's differences over the comparisons that have it, then tests those per-seed means over the
seeds (5 seeds give 4 degrees of freedom, however many cells)::

    python benchmarks/paired.py results/grid-a-layer:contribution-window3 results/grid-a-layer:contribution \
        results/grid-d-layer:contribution-window3 results/grid-d-layer:contribution --metric val

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


def compare(a_selection: str, b_selection: str, metric: str) -> dict:
    """One comparison: the two selections' runs paired by seed."""
    a, b = per_seed(a_selection, metric), per_seed(b_selection, metric)
    paired = paired_difference(a, b)
    seeds = sorted(set(a) & set(b))
    return {
        "a": a_selection, "b": b_selection, "seeds": seeds,
        "a_per_seed": {seed: a[seed] for seed in seeds}, "b_per_seed": {seed: b[seed] for seed in seeds},
        "a_mean": mean_interval([a[s] for s in seeds]).mean, "b_mean": mean_interval([b[s] for s in seeds]).mean,
        "delta_pp": paired.delta, "delta_ci95_pp": paired.half_width, "p_value": paired.p_value, "pairs": paired.pairs,
        "unpaired_seeds": sorted(set(a) ^ set(b)),
    }


def per_seed_means(comparisons: list[dict], side: str) -> dict[int, float]:
    """Each seed's mean over the comparisons that pair it (``side``: "a" or "b")."""
    values: dict[int, list[float]] = {}
    for comparison in comparisons:
        for seed, value in comparison[f"{side}_per_seed"].items():
            values.setdefault(seed, []).append(value)
    return {seed: sum(v) / len(v) for seed, v in sorted(values.items())}


def summary(result: dict, what: str) -> str:
    """The one-line verdict: means, the paired difference with its interval, the t-test."""
    interval = "" if math.isnan(result["delta_ci95_pp"]) else f" ± {result['delta_ci95_pp']:.2f}"
    p_text = "no test (fewer than 2 pairs)" if math.isnan(result["p_value"]) else f"paired t-test p = {result['p_value']:.2g}"
    return f"mean {result['a_mean']:.2f} vs {result['b_mean']:.2f}: Δ {result['delta_pp']:+.2f}{interval} pp over {result['pairs']} {what}; {p_text}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("selections", nargs="+", metavar="FOLDER:PRUNER",
                        help="pairs of selections, A B [A B ...]: the runs compared, then the runs they are compared with (the difference is A - B)")
    parser.add_argument("--metric", choices=sorted(METRICS), default="test", help="test accuracy, or the validation accuracy at the end of training [default: test]")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_intermixed_args(argv)  # options may come between the selections
    try:
        if len(args.selections) % 2:
            raise BadInput(f"{len(args.selections)} selections: give them in pairs, A B [A B ...].")
        pairs = list(zip(args.selections[0::2], args.selections[1::2]))
        comparisons = [compare(a, b, args.metric) for a, b in pairs]
    except BadInput as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    # Pooled: each seed's differences averaged over the comparisons, then tested over the seeds.
    a_seeds, b_seeds = per_seed_means(comparisons, "a"), per_seed_means(comparisons, "b")
    pooled = paired_difference(a_seeds, b_seeds)
    result = {"metric": METRICS[args.metric], "comparisons": comparisons,
              "a_mean": mean_interval(list(a_seeds.values())).mean, "b_mean": mean_interval(list(b_seeds.values())).mean,
              "delta_pp": pooled.delta, "delta_ci95_pp": pooled.half_width, "p_value": pooled.p_value, "pairs": pooled.pairs,
              "runs_paired": sum(c["pairs"] for c in comparisons)}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for c in comparisons:
        print(f"{'seed':>4}  {c['a']:>30}  {c['b']:>30}  {'a - b':>7}")
        for seed in c["seeds"]:
            print(f"{seed:>4}  {c['a_per_seed'][seed]:>30.2f}  {c['b_per_seed'][seed]:>30.2f}  {c['a_per_seed'][seed] - c['b_per_seed'][seed]:>+7.2f}")
        print(summary(c, "seeds"))
        if c["unpaired_seeds"]:
            print(f"seeds in only one selection, left out: {', '.join(map(str, c['unpaired_seeds']))}")
    if len(comparisons) > 1:
        print(f"pooled over {len(comparisons)} comparisons ({result['runs_paired']} pairs of runs), each seed's differences averaged: "
              + summary(result, "seeds"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
