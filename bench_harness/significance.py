"""Seed statistics: the interval of a mean, and paired comparisons between pruners.

Runs that share a seed start from the same weights and see the training data in the same order, so
two pruners are compared seed by seed: the difference of their accuracies on each shared seed, then
a paired t-test on those differences. Pairing removes the spread the two runs of a seed have in
common (a lucky initialisation helps both), which an unpaired comparison of two means would count as
noise. Every table, sweep summary and report compares pruners through `compare_rows`, so they all
agree on what "better" and "tied" mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from scipy import stats

__all__ = [
    "ALPHA", "Comparison", "Interval", "Paired", "compare_rows", "holm", "mean_interval", "paired_difference",
    "t_critical_95",
]

ALPHA = 0.05
"""Significance level of every test; intervals are the matching 95% intervals."""


def t_critical_95(df: int) -> float:
    """Two-sided 95% Student t critical value for ``df`` degrees of freedom (``df >= 1``)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    return float(stats.t.ppf(1 - ALPHA / 2, df))


@dataclass(frozen=True)
class Interval:
    """Mean, sample standard deviation and 95% t-interval half-width of some runs' values."""

    mean: float
    std: float
    half_width: float
    n: int


def mean_interval(values: Sequence[float]) -> Interval:
    """The mean of ``values`` with its spread; std and interval are NaN below two values (one run says nothing about spread)."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = math.fsum(values) / n
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return Interval(mean, std, t_critical_95(n - 1) * std / math.sqrt(n), n)


@dataclass(frozen=True)
class Paired:
    """``a - b`` over the seeds both have: mean difference, its 95% half-width, the paired t-test p-value."""

    delta: float
    half_width: float
    p_value: float
    pairs: int


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> Paired:
    """Compare two pruners' per-seed values on the seeds both have.

    With fewer than two shared seeds there is a difference but no interval or test (NaN). Identical
    values on every seed give p = 1: no evidence of any difference.
    """
    seeds = sorted(set(a) & set(b))
    differences = [a[seed] - b[seed] for seed in seeds]
    spread = mean_interval(differences)
    if spread.n < 2:
        return Paired(spread.mean, math.nan, math.nan, spread.n)
    if spread.std == 0:
        p_value = 1.0 if spread.mean == 0 else 0.0
    else:
        t = spread.mean / (spread.std / math.sqrt(spread.n))
        p_value = float(2 * stats.t.sf(abs(t), spread.n - 1))
    return Paired(spread.mean, spread.half_width, p_value, spread.n)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order; NaN (no test) stays NaN and is not counted.

    Controls the chance of any false "significant" across the family of tests, without Bonferroni's
    loss of power: the i-th smallest of m p-values is multiplied by m - i + 1, then made monotone.
    """
    tested = sorted((p, index) for index, p in enumerate(p_values) if not math.isnan(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(tested):
        running = max(running, min(1.0, (len(tested) - rank) * p))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class Comparison:
    """One row against its baseline, paired by seed, with the Holm-adjusted p-value of its table."""

    baseline: str
    paired: Paired
    p_holm: float


def _best(means: Mapping[str, float], candidates: Sequence[str]) -> str | None:
    """The candidate with the highest mean (the first one on a tie), or None if no candidate has a mean."""
    ranked = [name for name in candidates if not math.isnan(means.get(name, math.nan))]
    return max(ranked, key=lambda name: means[name]) if ranked else None


def compare_rows(
    per_seed: Mapping[str, Mapping[int, float]], candidates: Sequence[str], baseline: str | None = None
) -> tuple[dict[str, Comparison], str | None, set[str]]:
    """Compare every candidate row with a baseline, paired by seed, Holm-corrected across the rows.

    ``per_seed`` maps each row name to its value per seed. With ``baseline`` None each row is
    compared with the best *other* candidate (so the best row is compared with the runner-up);
    otherwise every other row is compared with the named one. Each distinct pair of rows is one test
    of the Holm family, so the best row and the runner-up share their p-value rather than counting
    the same test twice.

    Returns the comparisons by row, the best candidate (highest mean over all its seeds), and the
    candidates statistically tied with it: compared with the best, Holm-corrected p >= `ALPHA`.
    Rows without a test (fewer than two shared seeds) are never marked tied.
    """
    means = {name: mean_interval(list(per_seed.get(name, {}).values())).mean for name in per_seed}
    best = _best(means, candidates)

    def against(reference: str | None, names: Sequence[str]) -> dict[str, Comparison]:
        opponents = {}
        for name in names:
            other = reference if reference is not None else _best(means, [c for c in candidates if c != name])
            if other is not None and other != name and name in per_seed and other in per_seed:
                opponents[name] = other
        pairs = sorted({tuple(sorted((name, other))) for name, other in opponents.items()})
        tests = {pair: paired_difference(per_seed[pair[0]], per_seed[pair[1]]) for pair in pairs}
        adjusted = dict(zip(pairs, holm([tests[pair].p_value for pair in pairs])))
        found = {}
        for name, other in opponents.items():
            pair = tuple(sorted((name, other)))
            found[name] = Comparison(other, paired_difference(per_seed[name], per_seed[other]), adjusted[pair])
        return found

    named_rows = [name for name in per_seed if name != baseline] if baseline is not None else list(candidates)
    comparisons = against(baseline, named_rows)
    versus_best = against(best, [c for c in candidates if c != best]) if best is not None else {}
    tied = {name for name, c in versus_best.items() if not math.isnan(c.p_holm) and c.p_holm >= ALPHA}
    return comparisons, best, tied
