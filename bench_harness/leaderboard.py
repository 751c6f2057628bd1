"""Leaderboards: run records grouped by protocol, compared over seeds, rendered as tables.

A table compares pruners under one protocol: every config setting except the pruner, the seed and
where the run executed must match, so runs that differ in dataset, model, granularity, scope,
epochs, schedule or anything else never share a table. The dense reference (a record with
``dense_reference`` true; in records written before that flag existed, pruner ``none``) never
prunes, so its pruning settings (`bench_harness.config.PRUNING_FIELDS`) are ignored when it is
matched: its runs join every pruning table of the same dataset, model and training settings as the
reference row, and form a table of their own only when no pruning table wants them.

Statistics, per pruner and table, over its finished runs that recorded a test accuracy (``n``):

* test accuracy mean, sample standard deviation and 95% t-interval in percent;
* Δ versus a baseline (``--baseline``, or else the best other pruner of the table), paired by seed,
  with its 95% interval and the paired t-test p-value, Holm-corrected across the table's rows;
* a mark on the best pruner (★) and on those statistically tied with it (≈);
* Δ versus the dense reference, paired on the seeds both have;
* the means of the cost metrics (sparsity, parameters, seconds, memory, and the optional ones).

The comparisons come from `bench_harness.significance.compare_rows`, the one place that decides what
"better" and "tied" mean. With a single seed the spread, intervals and tests are left empty (NaN in
csv/json, "-" in text) rather than shown as 0: one run says nothing about the spread.

Three views of the same tables: the tables themselves; ``per_seed_sections`` (one row per run, so
an outlier is visible); ``sweep_sections`` (tables that differ only in their final sparsity, read
as one sweep: pruners by sparsity). Each view is a list of `Section` that `render` writes in every
format.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass, field, fields
from typing import Callable, Iterable, Sequence

import pandas as pd
from tabulate import tabulate

from bench_harness.config import EXECUTION_FIELDS, PRUNING_FIELDS, RunConfig
from bench_harness.errors import UserError
from bench_harness.significance import ALPHA, compare_rows, mean_interval, paired_difference

__all__ = [
    "DEFAULT_COLUMNS", "FORMATS", "Leaderboard", "Section", "Sweep", "build_leaderboards", "column_keys",
    "find_sweeps", "html_page", "is_dense_reference", "per_seed_sections", "render", "sweep_sections",
    "table_sections",
]

FORMATS = ("markdown", "github", "csv", "json", "latex", "html")
"""The output formats `render` accepts."""

DENSE_PRUNER = "none"
"""The dense reference's pruner in records that predate the ``dense_reference`` flag."""

DEFAULT_COLUMNS = (
    "pruner", "n", "test_accuracy", "delta_vs_baseline", "p_holm", "delta_vs_dense", "sparsity", "train_seconds",
    "prune_seconds",
)
"""Columns of the text formats when ``--columns`` is not given: few enough for a LaTeX page."""

BEST_MARK = "★"
TIED_MARK = "≈"
FLAG_MARK = "†"
"""On a row with a flagged run (a record's ``flags``: accuracy at chance while the dense reference is
far above, or weights changed outside the pruning event); the note under the table says which."""
NULL_TEXT = "-"
"""How a missing value looks in the text formats."""
REFERENCE_TEXT = "ref"
"""What a row shows in a Δ column when it is the row compared against."""

# What varies within one table: the pruner and seed, and settings that choose where and how a run
# executes without changing what it computes (the same fields the config hash leaves out).
_RUN_KEYS = frozenset({"pruner", "seed", *EXECUTION_FIELDS})
# Settings the title spells out; others are appended only where two titles would collide.
_TITLE_KEYS = frozenset({"dataset", "model", "epochs", "granularity", "scope", "schedule", "prune_every",
                         "prune_rate", "target_sparsity", "prune_start", "prune_end"})
# Settings in which the tables of one sweep differ: what final sparsity was asked for.
_SWEEP_KEYS = frozenset({"target_sparsity", "prune_rate"})
_CONFIG_ORDER = tuple(f.name for f in fields(RunConfig))
_CONFIG_DEFAULTS = RunConfig().to_dict()

TABLE_LEGEND = (
    f"test acc: mean ± 95% confidence interval over seeds. Δ: mean of the per-seed differences on the seeds both "
    f"rows have, ± its 95% interval; (n=k) when that is fewer seeds than a row has. Δ vs best compares each "
    f"pruner with the best other pruner (the best with the runner-up). p (Holm): paired t-test, Holm-corrected "
    f"across the rows of the table. {BEST_MARK} best mean; {TIED_MARK} tied with it (Holm-corrected p ≥ {ALPHA:g})."
)
"""The notes under the text leaderboards, defining their symbols."""

SWEEP_LEGEND = (
    f"Cells: mean test accuracy (%) ± 95% confidence interval over seeds, columns by mean final sparsity. "
    f"{BEST_MARK} best pruner of the column; {TIED_MARK} tied with it (paired t-test over the seeds both have, "
    f"Holm-corrected p ≥ {ALPHA:g}). The dense reference is not ranked."
)
"""The notes under a sweep summary."""

PER_SEED_LEGEND = "vs mean: the run's test accuracy minus its pruner's mean over the table's runs, in percentage points."
"""The note under the per-seed tables."""


# --- records -------------------------------------------------------------------------------------

def is_dense_reference(record: dict) -> bool:
    """Whether a record is the unpruned reference: its ``dense_reference`` flag, or for records
    written before the flag existed (schema version 1), the pruner name ``none``."""
    if "dense_reference" in record:
        return bool(record["dense_reference"])
    return _config(record).get("pruner") == DENSE_PRUNER


def _config(record: dict) -> dict:
    """The run's config, with the top-level identity fields filling any gaps in older records."""
    config = dict(record.get("config") or {})
    for key in ("pruner", "dataset", "model", "seed"):
        if config.get(key) is None and record.get(key) is not None:
            config[key] = record[key]
    return config


def _protocol(record: dict) -> dict:
    """The settings that must match for two runs to share a table.

    Settings an older record lacks take their defaults (a new setting's default is what older runs
    did); a rate that ``target_sparsity`` overrides is not a setting of the run, and the dense
    reference has no pruning settings at all.
    """
    config = {**{k: v for k, v in _CONFIG_DEFAULTS.items() if k not in ("pruner", "seed")}, **_config(record)}
    settings = {k: v for k, v in config.items() if k not in _RUN_KEYS}
    if is_dense_reference(record):
        return {k: v for k, v in settings.items() if k not in PRUNING_FIELDS}
    if settings.get("target_sparsity") is not None:
        settings.pop("prune_rate", None)
    return settings


def _accuracy_pct(record: dict) -> float:
    """The run's test accuracy in percent, or NaN when it did not finish or recorded none."""
    if record.get("status") != "ok":
        return math.nan
    value = (record.get("metrics") or {}).get("test_accuracy")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return math.nan
    return float(value) * 100.0


def _seed(record: dict):
    return _config(record).get("seed")


def _metric_values(runs: Iterable[dict], key: str) -> list[float]:
    """The finite numeric values of one metric over some runs."""
    found = []
    for record in runs:
        value = (record.get("metrics") or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            found.append(float(value))
    return found


def _by_seed(runs: Iterable[dict]) -> dict:
    """Test accuracy (%) per seed; two runs of one seed (dense runs from older versions that
    differ only in settings it ignores) count as their mean."""
    values: dict = {}
    for record in runs:
        accuracy = _accuracy_pct(record)
        if not math.isnan(accuracy):
            values.setdefault(_seed(record), []).append(accuracy)
    return {seed: sum(v) / len(v) for seed, v in values.items()}


def _key(settings: dict) -> tuple:
    """A hashable, order-free identity for a settings dict (values may be None or nested)."""
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in settings.items()))


# --- numbers and how they look -------------------------------------------------------------------

def _significant(digits: int) -> Callable[[float], float]:
    return lambda value: float(f"{value:.{digits}g}")


def _decimals(digits: int) -> Callable[[float], float]:
    return lambda value: round(value, digits)


def _quantity(value: float) -> str:
    """Three significant digits without scientific notation for everyday magnitudes."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _count(value: float) -> str:
    """A whole count with thousands separators (means of counts are rounded for display)."""
    return f"{round(value):,}"


def _p_text(value: float) -> str:
    """p-values to two significant digits, and '<0.001' below that."""
    return "<0.001" if value < 0.001 else f"{value:.2g}"


_PP = _decimals(3)  # percent and percentage points: a thousandth of a point is below any seed spread


@dataclass(frozen=True)
class _Metric:
    """A column averaged from one run metric: its key, csv/json field, header, scale, format and rounding."""

    key: str
    field: str
    header: str
    scale: float
    fmt: Callable[[float], str]
    rounding: Callable[[float], float]
    optional: bool = False


_METRICS = (
    _Metric("sparsity", "sparsity_pct", "sparsity (%) ↑", 100.0, "{:.1f}".format, _PP),
    _Metric("params_nonzero", "params_nonzero", "non-zero params ↓", 1.0, _count, _decimals(1)),
    _Metric("train_seconds", "train_seconds", "train (s) ↓", 1.0, _quantity, _significant(4)),
    _Metric("prune_seconds", "prune_seconds", "prune (s) ↓", 1.0, _quantity, _significant(4)),
    _Metric("inference_seconds", "inference_seconds", "inference (s) ↓", 1.0, _quantity, _significant(4)),
    _Metric("peak_memory_mb", "peak_memory_mb", "peak mem (MB) ↓", 1.0, "{:.1f}".format, _decimals(1)),
    # Added by later features, so absent from older records: available only where some run has them.
    _Metric("compression_ratio", "compression_ratio", "compression (×) ↑", 1.0, "{:.2f}".format, _significant(4), True),
    _Metric("flops_effective", "flops_effective", "FLOPs effective (MAC/sample) ↓", 1.0, _count, _decimals(1), True),
    _Metric("latency_ms_batch1", "latency_ms_batch1", "latency b1 (ms) ↓", 1.0, _quantity, _significant(4), True),
    _Metric("throughput_per_second", "throughput_per_second", "throughput (img/s) ↑", 1.0, _quantity, _significant(4), True),
    _Metric("compact_speedup", "compact_speedup", "compact speedup (×) ↑", 1.0, "{:.2f}".format, _significant(4), True),
    _Metric("train_energy_joules", "train_energy_joules", "train energy (J) ↓", 1.0, _quantity, _significant(4), True),
    _Metric("inference_energy_joules", "inference_energy_joules", "inference energy (J) ↓", 1.0, _quantity, _significant(4), True),
)

# How the csv/json fields of the statistics are rounded (metric fields round by their _Metric).
_ROUNDING = {
    "test_accuracy_mean_pct": _PP, "test_accuracy_std_pct": _PP, "test_accuracy_ci95_pct": _PP,
    "delta_vs_baseline_pp": _PP, "delta_vs_baseline_ci95_pp": _PP, "delta_vs_dense_pp": _PP,
    "delta_vs_dense_ci95_pp": _PP, "p_value": _significant(4), "p_holm": _significant(4),
    "deviation_pp": _PP, "test_accuracy_pct": _PP, "val_accuracy_pct": _PP,
    **{m.field: m.rounding for m in _METRICS},
}


def _tidy_value(name: str, value):
    """A csv/json-ready value: numpy types unwrapped, NaN as None, floats rounded for their field."""
    if value is pd.NA:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        rounding = _ROUNDING.get(name)
        if rounding is not None and math.isfinite(value):
            value = rounding(value)
    return value


def _show(value, fmt: Callable[[float], str]) -> str:
    return NULL_TEXT if value is None or pd.isna(value) else fmt(value)


def _percent(fraction: float, digits: int | None = None) -> str:
    """0.1 -> '10%', 0.025 -> '2.5%'; with ``digits``, that many significant digits (0.2929 -> '29.3%')."""
    return f"{fraction * 100:g}%" if digits is None else f"{fraction * 100:.{digits}g}%"


# --- one table -----------------------------------------------------------------------------------

@dataclass
class Leaderboard:
    """One table: the runs of one protocol, one row per pruner, best test accuracy first."""

    title: str
    """A one-line summary of the protocol, e.g. ``fashion-mnist · fcnn · connections, layer scope · …``."""
    settings: dict
    """The protocol settings every run of the table shares (config minus pruner, seed, execution)."""
    stats: pd.DataFrame
    """One row per pruner, the numbers behind every column, unformatted (NaN where missing)."""
    runs: list[dict]
    """Every record of the table, finished or not, the dense reference's included."""
    failed: list[str]
    """Run ids of the runs left out of the statistics (failed, or finished without a test accuracy)."""
    errors: dict[str, str] = field(default_factory=dict)
    """Why each run in `failed` was left out, by run id."""
    metrics: tuple[_Metric, ...] = ()
    """The metric columns this table can show (an optional metric only where some run has it)."""
    baseline: str | None = None
    """The pruner every row is compared with; None compares each with the best other pruner."""
    dense: str | None = None
    """The dense reference row's pruner, if the table has one."""

    @property
    def table(self) -> pd.DataFrame:
        """The default columns, formatted for reading."""
        return self.section().display

    @property
    def best(self) -> str | None:
        """The pruner with the best mean test accuracy (the dense reference is not ranked), if any."""
        marked = self.stats.loc[self.stats["mark"] == "best", "pruner"]
        return str(marked.iloc[0]) if len(marked) else None

    def runs_of(self, pruner: str) -> list[dict]:
        """The records of one row, finished or not."""
        return [r for r in self.runs if str(_config(r).get("pruner")) == pruner]

    def section(self, columns: Sequence[str] | None = None, tidy_columns: Sequence[str] | None = None) -> "Section":
        """This table as a `Section`: ``columns`` for people, ``tidy_columns`` (default: all) for csv/json."""
        available = _columns(self)
        shown = [available[k] for k in (columns or DEFAULT_COLUMNS) if k in available]
        display = pd.DataFrame(
            [[column.show(self, row) for column in shown] for _, row in self.stats.iterrows()],
            columns=[column.header.format(baseline=self.baseline or "best") for column in shown], dtype=object,
        )
        identity = {"table": self.title, **{k: self.settings.get(k) for k in _settings_order([self.settings])}}
        tidy_rows = []
        for _, row in self.stats.iterrows():
            values = {**identity, **row.to_dict()}
            if tidy_columns is None:
                wanted = list(identity) + list(self.stats.columns)
            else:
                wanted = [name for key in tidy_columns if key in available for name in available[key].fields]
            tidy_rows.append({name: _tidy_value(name, values.get(name)) for name in wanted})
        notes = []
        if self.failed:
            notes.append("Not averaged: " + "; ".join(f"{rid} ({_one_line(self.errors.get(rid, ''))})" for rid in self.failed))
        flagged = _flag_notes(self.runs)
        if flagged:
            notes.append(f"{FLAG_MARK} Flagged: " + "; ".join(flagged))
        return Section(self.title, display, pd.DataFrame(tidy_rows), notes)


@dataclass(frozen=True)
class _Column:
    """A column of the leaderboard: its ``--columns`` key, header, csv/json fields and cell text.

    ``{baseline}`` in a header names the table's baseline.
    """

    key: str
    header: str
    fields: tuple[str, ...]
    show: Callable[[Leaderboard, pd.Series], str]


def _pairs_note(pairs, *ns) -> str:
    """' (n=2)' when a paired difference rests on fewer seeds than one of the rows has."""
    if pd.isna(pairs) or all(pd.isna(n) or int(n) == int(pairs) for n in ns):
        return ""
    return f" (n={int(pairs)})"


def _delta_text(delta, half_width, pairs, *ns) -> str:
    if pd.isna(delta):
        return NULL_TEXT
    text = f"{delta:+.2f}"
    if not pd.isna(half_width):
        text += f" ± {half_width:.2f}"
    return text + _pairs_note(pairs, *ns)


def _n_of(board: Leaderboard, pruner) -> float:
    rows = board.stats.loc[board.stats["pruner"] == pruner, "n"]
    return float(rows.iloc[0]) if len(rows) else math.nan


def _flags(record: dict) -> list[dict]:
    """A record's flags (see ``bench_harness.record.add_flags``), ignoring anything malformed."""
    flags = record.get("flags")
    return [flag for flag in flags if isinstance(flag, dict)] if isinstance(flags, list) else []


def _flag_notes(runs: Iterable[dict]) -> list[str]:
    return [f"{r.get('run_id')} ({_one_line(str(flag.get('message') or flag.get('kind')))})" for r in runs for flag in _flags(r)]


def _show_pruner(board: Leaderboard, row: pd.Series) -> str:
    mark = {"best": f" {BEST_MARK}", "tied": f" {TIED_MARK}"}.get(row["mark"], "")
    flag = f" {FLAG_MARK}" if row.get("flagged", 0) else ""
    return f"{row['pruner']}{mark}{flag}"


def _mean_and_interval(mean, half_width) -> str:
    """'89.36 ± 0.40', or the mean alone when there is no interval."""
    text = _show(mean, "{:.2f}".format)
    if not pd.isna(mean) and not pd.isna(half_width):
        text += f" ± {half_width:.2f}"
    return text


def _show_delta_vs_baseline(board: Leaderboard, row: pd.Series) -> str:
    if board.baseline is not None and row["pruner"] == board.baseline:
        return REFERENCE_TEXT
    return _delta_text(row["delta_vs_baseline_pp"], row["delta_vs_baseline_ci95_pp"], row["delta_vs_baseline_pairs"],
                       row["n"], _n_of(board, row["baseline"]))


def _show_delta_vs_dense(board: Leaderboard, row: pd.Series) -> str:
    if row["pruner"] == board.dense:
        return REFERENCE_TEXT
    # Only the difference: its interval is in csv/json, and the column must leave room on a page.
    return _delta_text(row["delta_vs_dense_pp"], math.nan, row["delta_vs_dense_pairs"], row["n"], _n_of(board, board.dense))


def _cell(field_: str, fmt: Callable[[float], str]) -> Callable[[Leaderboard, pd.Series], str]:
    return lambda board, row: _show(row[field_], fmt)


_STAT_COLUMNS = (
    _Column("pruner", "pruner", ("pruner", "mark"), _show_pruner),
    _Column("n", "n", ("n",), _cell("n", "{:.0f}".format)),
    _Column("failed", "failed", ("failed",), _cell("failed", "{:.0f}".format)),
    _Column("flagged", "flagged", ("flagged",), _cell("flagged", "{:.0f}".format)),
    _Column("test_accuracy", "test acc (%) ↑", ("test_accuracy_mean_pct", "test_accuracy_ci95_pct"),
            lambda board, row: _mean_and_interval(row["test_accuracy_mean_pct"], row["test_accuracy_ci95_pct"])),
    _Column("test_accuracy_std", "std (pp)", ("test_accuracy_std_pct",), _cell("test_accuracy_std_pct", "{:.2f}".format)),
    _Column("delta_vs_baseline", "Δ vs {baseline} (pp) ↑",
            ("baseline", "delta_vs_baseline_pp", "delta_vs_baseline_ci95_pp", "delta_vs_baseline_pairs"),
            _show_delta_vs_baseline),
    _Column("p_value", "p", ("p_value",), _cell("p_value", _p_text)),
    _Column("p_holm", "p (Holm)", ("p_holm",), _cell("p_holm", _p_text)),
    _Column("delta_vs_dense", "Δ vs dense (pp)", ("delta_vs_dense_pp", "delta_vs_dense_ci95_pp", "delta_vs_dense_pairs"),
            _show_delta_vs_dense),
    _Column("dense_reference", "dense", ("dense_reference",), lambda board, row: "yes" if row["dense_reference"] else ""),
)


def _setting_cell(name: str) -> Callable[[Leaderboard, pd.Series], str]:
    return lambda board, row: NULL_TEXT if board.settings.get(name) is None else str(board.settings[name])


def _columns(board: Leaderboard) -> dict[str, _Column]:
    """Every column the table can show, by ``--columns`` key, in display order."""
    found = {c.key: c for c in _STAT_COLUMNS}
    for metric in board.metrics:
        found[metric.key] = _Column(metric.key, metric.header, (metric.field,), _cell(metric.field, metric.fmt))
    found["table"] = _Column("table", "table", ("table",), lambda b, row: b.title)
    for name in _settings_order([board.settings]):
        found.setdefault(name, _Column(name, name, (name,), _setting_cell(name)))
    return found


def column_keys(boards: Sequence[Leaderboard]) -> list[str]:
    """Every ``--columns`` key some table offers, in display order."""
    keys: dict[str, None] = {}
    for board in boards:
        keys.update(dict.fromkeys(_columns(board)))
    return list(keys)


def _row_stats(pruner: str, runs: list[dict], metrics: tuple[_Metric, ...]) -> dict:
    """Seed statistics of one pruner's runs, in the units of the csv/json fields."""
    usable = [r for r in runs if not math.isnan(_accuracy_pct(r))]
    accuracy = mean_interval([_accuracy_pct(r) for r in usable])
    row = {
        "pruner": pruner,
        "dense_reference": bool(runs) and all(is_dense_reference(r) for r in runs),
        "n": accuracy.n,
        "failed": len(runs) - len(usable),
        "flagged": sum(1 for r in runs if _flags(r)),
        "test_accuracy_mean_pct": accuracy.mean,
        "test_accuracy_std_pct": accuracy.std,
        "test_accuracy_ci95_pct": accuracy.half_width,
        "mark": "",
        "baseline": None,
        "delta_vs_baseline_pp": math.nan,
        "delta_vs_baseline_ci95_pp": math.nan,
        "delta_vs_baseline_pairs": math.nan,
        "p_value": math.nan,
        "p_holm": math.nan,
        "delta_vs_dense_pp": math.nan,
        "delta_vs_dense_ci95_pp": math.nan,
        "delta_vs_dense_pairs": math.nan,
    }
    for metric in metrics:
        values = _metric_values(usable, metric.key)
        row[metric.field] = sum(values) / len(values) * metric.scale if values else math.nan
    return row


def _board(settings: dict, runs: list[dict], baseline: str | None) -> Leaderboard:
    """Build one table from the runs (finished and failed) that belong to it."""
    usable = [r for r in runs if not math.isnan(_accuracy_pct(r))]
    metrics = tuple(m for m in _METRICS if not m.optional or _metric_values(usable, m.key))
    by_pruner: dict[str, list[dict]] = {}
    for record in runs:
        by_pruner.setdefault(str(_config(record).get("pruner")), []).append(record)
    stats = pd.DataFrame([_row_stats(p, rs, metrics) for p, rs in by_pruner.items()])
    # Ties (and rows without an accuracy) fall back to the pruner name so the order is stable.
    stats = stats.sort_values(
        ["test_accuracy_mean_pct", "pruner"], ascending=[False, True], na_position="last", kind="stable"
    ).reset_index(drop=True)

    per_seed = {p: _by_seed(rs) for p, rs in by_pruner.items()}
    dense_rows = [p for p, flag in zip(stats["pruner"], stats["dense_reference"]) if flag]
    dense = max(dense_rows, key=lambda p: len(per_seed[p])) if dense_rows else None
    candidates = [p for p in stats["pruner"] if p not in dense_rows]
    if baseline is not None and baseline not in by_pruner:
        baseline = None  # this table lacks the named pruner: compare with the best other instead
    comparisons, best, tied = compare_rows(per_seed, candidates, baseline)
    for index, pruner in enumerate(stats["pruner"]):
        mark = "best" if pruner == best else "tied" if pruner in tied else ""
        stats.loc[index, "mark"] = mark
        if pruner in comparisons:
            c = comparisons[pruner]
            stats.at[index, "baseline"] = c.baseline
            stats.loc[index, ["delta_vs_baseline_pp", "delta_vs_baseline_ci95_pp", "delta_vs_baseline_pairs",
                              "p_value", "p_holm"]] = [c.paired.delta, c.paired.half_width, c.paired.pairs,
                                                       c.paired.p_value, c.p_holm]
        if dense is not None and per_seed[pruner]:
            d = paired_difference(per_seed[pruner], per_seed[dense])
            stats.loc[index, ["delta_vs_dense_pp", "delta_vs_dense_ci95_pp", "delta_vs_dense_pairs"]] = [
                d.delta, d.half_width, d.pairs]
    for name in ("n", "failed", "flagged"):
        stats[name] = stats[name].astype(int)
    for name in ("delta_vs_baseline_pairs", "delta_vs_dense_pairs"):
        stats[name] = stats[name].astype("Int64")  # a count, or missing
    left_out = [r for r in runs if math.isnan(_accuracy_pct(r))]
    errors = {
        str(r.get("run_id")): str(r.get("error") or (
            "finished without a test accuracy" if r.get("status") == "ok" else f"status {r.get('status')!r}"))
        for r in left_out
    }
    board = Leaderboard("", settings, stats, runs, list(errors), errors, metrics, baseline, dense)
    board.title = _base_title(settings, runs, dense_only=not candidates and dense is not None)
    return board


def _rate_used(runs: list[dict]) -> float | None:
    """The fraction per event the pruning runs actually used, when they recorded one and agree."""
    rates = {
        round(float((r.get("schedule") or {}).get("rate")), 6)
        for r in runs
        if not is_dense_reference(r) and isinstance((r.get("schedule") or {}).get("rate"), (int, float))
    }
    return rates.pop() if len(rates) == 1 else None


def _base_title(settings: dict, runs: list[dict], dense_only: bool) -> str:
    """The title from the settings a reader compares first, the schedule as it was asked for."""
    parts = [str(settings[k]) for k in ("dataset", "model") if settings.get(k) is not None]
    if dense_only:
        parts.append("dense")
    else:
        shape = []
        if settings.get("granularity") is not None:
            shape.append(str(settings["granularity"]))
        if settings.get("scope") is not None:
            shape.append(f"{settings['scope']} scope")
        if shape:
            parts.append(", ".join(shape))
    schedule = []
    if settings.get("epochs") is not None:
        schedule.append(f"{settings['epochs']} epochs")
    if not dense_only:
        schedule.append(_schedule_title(settings, runs))
    parts.append(", ".join(s for s in schedule if s))
    return " · ".join(p for p in parts if p)


def _every(epochs) -> str:
    return "every epoch" if epochs == 1 else f"every {epochs} epochs"


def _schedule_title(settings: dict, runs: list[dict]) -> str:
    """What was asked: a target sparsity (with the rate per event it implied), or a rate per event."""
    target, kind, every = settings.get("target_sparsity"), settings.get("schedule") or "fixed", settings.get("prune_every")
    when = [_every(every)] if every is not None else []
    start, end = settings.get("prune_start"), settings.get("prune_end")
    if start is not None or end is not None:
        when.append(f"epochs {start if start is not None else every}–{end if end is not None else 'end'}")
    if kind != "fixed":
        when.insert(0, f"{kind} schedule")
    if target is not None:
        rate = _rate_used(runs) if kind == "fixed" else None
        detail = ([f"{_percent(rate, 3)} per event"] if rate is not None else []) + when
        return f"target {_percent(target)} sparsity" + (f" ({', '.join(detail)})" if detail else "")
    if settings.get("prune_rate") is not None:
        return ", ".join([f"{_percent(settings['prune_rate'])} per event"] + when)
    return ", ".join(f"events {w}" if w == _every(every) else w for w in when)  # a sweep: no one rate


def _disambiguate(boards: list) -> None:
    """Append the settings that tell apart tables (or sweeps) whose titles would otherwise be identical."""
    by_title: dict[str, list[Leaderboard]] = {}
    for board in boards:
        by_title.setdefault(board.title, []).append(board)
    for same in by_title.values():
        if len(same) < 2:
            continue
        keys = sorted({k for b in same for k in b.settings} - _TITLE_KEYS)
        differing = [k for k in keys if len({json.dumps(b.settings.get(k)) for b in same}) > 1]
        for board in same:
            extra = ", ".join(f"{k} {json.dumps(board.settings.get(k))}" for k in differing)
            if extra:
                board.title = f"{board.title} · {extra}"


def build_leaderboards(records: list[dict], where: str | None = None, baseline: str | None = None) -> list[Leaderboard]:
    """Group run records by protocol and return one leaderboard per protocol, sorted by title.

    ``where`` names the results folder for the error raised when ``records`` is empty; ``baseline``
    names the pruner every row is compared with (default: the best other pruner of each table).
    """
    if not records:
        place = f" in {where}" if where else ""
        raise UserError(f"No finished runs were found{place}; run `bench run` first to create some.")
    if baseline is not None:
        names = sorted({str(_config(r).get("pruner")) for r in records})
        if baseline not in names:
            raise UserError(f"--baseline {baseline} names no pruner of these runs; they have {', '.join(names)}.")

    pruning_groups: dict[tuple, tuple[dict, list[dict]]] = {}
    dense_groups: dict[tuple, tuple[dict, list[dict]]] = {}
    for record in records:
        settings = _protocol(record)
        groups = dense_groups if is_dense_reference(record) else pruning_groups
        groups.setdefault(_key(settings), (settings, []))[1].append(record)

    boards = []
    used_dense: set[tuple] = set()
    for settings, runs in pruning_groups.values():
        dense_key = _key({k: v for k, v in settings.items() if k not in PRUNING_FIELDS})
        reference = dense_groups.get(dense_key, ({}, []))[1]
        if reference:
            used_dense.add(dense_key)
        boards.append(_board(settings, runs + reference, baseline))
    for key, (settings, runs) in dense_groups.items():
        if key not in used_dense:
            boards.append(_board(settings, runs, baseline))

    _disambiguate(boards)
    boards.sort(key=lambda b: (b.title, _key(b.settings)))
    return boards


def _settings_order(settings: Iterable[dict]) -> list[str]:
    """Setting names in the order of RunConfig's fields, then any unknown ones alphabetically."""
    names = set().union(*[set(s) for s in settings]) if settings else set()
    return [n for n in _CONFIG_ORDER if n in names] + sorted(names - set(_CONFIG_ORDER))


# --- sections: what every view hands to `render` -------------------------------------------------

@dataclass
class Section:
    """One table of output: a title, the cells people read, the numbers csv/json write, notes below."""

    title: str
    display: pd.DataFrame
    """Display strings, headers with units and better-direction arrows."""
    tidy: pd.DataFrame
    """One row per displayed row: the table's identity, then plain numbers (rounded, None where missing)."""
    notes: list[str] = field(default_factory=list)


def table_sections(boards: Sequence[Leaderboard], columns: Sequence[str] | None = None) -> list[Section]:
    """Every table; ``columns`` (``--columns`` keys, or ``["all"]``) chooses the columns of every format."""
    if columns:
        offered = column_keys(boards)
        if list(columns) == ["all"]:
            columns = offered
        unknown = [c for c in columns if c not in offered]
        if unknown:
            raise UserError(f"Unknown column {unknown[0]!r}; choose from {', '.join(offered)} (or all).")
        return [b.section(columns, columns) for b in boards]
    return [b.section() for b in boards]


_RUN_FIELDS = (
    ("test_accuracy", "test_accuracy_pct", "test acc (%)", 100.0, "{:.2f}".format),
    ("val_accuracy", "val_accuracy_pct", "val acc (%)", 100.0, "{:.2f}".format),
    ("sparsity", "sparsity_pct", "sparsity (%)", 100.0, "{:.1f}".format),
    ("train_seconds", "train_seconds", "train (s)", 1.0, _quantity),
    ("prune_seconds", "prune_seconds", "prune (s)", 1.0, _quantity),
    ("inference_seconds", "inference_seconds", "inference (s)", 1.0, _quantity),
)


def per_seed_sections(boards: Sequence[Leaderboard]) -> list[Section]:
    """One row per run of every table, in the table's pruner order, then by seed: outliers stand out.

    ``deviation_pp`` is the run's test accuracy minus its pruner's mean, in percentage points.
    """
    sections = []
    for board in boards:
        display_rows, tidy_rows, notes = [], [], []
        identity = {"table": board.title, **{k: board.settings.get(k) for k in _settings_order([board.settings])}}
        for _, stat in board.stats.iterrows():
            runs = sorted(board.runs_of(stat["pruner"]), key=lambda r: (str(_seed(r)), str(r.get("run_id"))))
            for record in runs:
                metrics = record.get("metrics") or {}
                accuracy = _accuracy_pct(record)
                deviation = accuracy - stat["test_accuracy_mean_pct"]
                tidy = {**identity, "pruner": stat["pruner"], "seed": _seed(record), "run_id": record.get("run_id"),
                        "status": record.get("status"), "deviation_pp": deviation}
                flag = f" {FLAG_MARK}" if _flags(record) else ""
                display = {"pruner": str(stat["pruner"]), "seed": str(_seed(record)), "status": str(record.get("status")) + flag}
                for key, name, header, scale, fmt in _RUN_FIELDS:
                    value = metrics.get(key)
                    value = float(value) * scale if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
                    tidy[name] = value
                    display[header] = _show(value, fmt)
                    if key == "test_accuracy":
                        display["vs mean (pp)"] = _show(deviation, "{:+.2f}".format)
                tidy["error"] = record.get("error")
                tidy["flags"] = ",".join(str(flag.get("kind")) for flag in _flags(record))
                tidy_rows.append({k: _tidy_value(k, v) for k, v in tidy.items()})
                display_rows.append(display)
                if record.get("status") != "ok" or math.isnan(accuracy):
                    notes.append(f"{record.get('run_id')}: {_one_line(board.errors.get(str(record.get('run_id')), ''))}")
        flagged = _flag_notes(board.runs)
        sections.append(Section(board.title, pd.DataFrame(display_rows, dtype=object), pd.DataFrame(tidy_rows),
                                (["Not averaged: " + "; ".join(notes)] if notes else [])
                                + ([f"{FLAG_MARK} Flagged: " + "; ".join(flagged)] if flagged else [])))
    return sections


@dataclass
class Sweep:
    """Tables that differ only in the final sparsity asked for (a target, or a rate per event)."""

    title: str
    settings: dict
    """The settings the tables share."""
    boards: list[Leaderboard]
    """One table per final sparsity, sparsest last."""

    @staticmethod
    def final_sparsity_pct(board: Leaderboard) -> float:
        """The mean final sparsity of a table's averaged pruning runs, in percent."""
        pruning = board.stats.loc[~board.stats["dense_reference"].astype(bool)]
        runs = [r for p in pruning["pruner"] for r in board.runs_of(p) if not math.isnan(_accuracy_pct(r))]
        values = _metric_values(runs, "sparsity")
        return 100.0 * sum(values) / len(values) if values else math.nan


def find_sweeps(boards: Sequence[Leaderboard], minimum: int = 2) -> tuple[list[Sweep], list[Leaderboard]]:
    """Split tables into sweeps (``minimum`` or more pruning tables alike but for the final sparsity)
    and the rest; with ``minimum`` 1 every pruning table belongs to a sweep, perhaps of one point."""
    families: dict[tuple, list[Leaderboard]] = {}
    for board in boards:
        if board.stats["dense_reference"].all():
            continue
        shared = {k: v for k, v in board.settings.items() if k not in _SWEEP_KEYS}
        families.setdefault(_key(shared), []).append(board)
    sweeps = []
    for family in families.values():
        if len(family) < minimum:
            continue
        settings = {k: v for k, v in family[0].settings.items() if k not in _SWEEP_KEYS}
        family.sort(key=lambda b: (math.isnan(Sweep.final_sparsity_pct(b)), Sweep.final_sparsity_pct(b)))
        sweeps.append(Sweep(_base_title(settings, [], dense_only=False), settings, family))
    _disambiguate(sweeps)
    in_sweeps = {id(b) for s in sweeps for b in s.boards}
    return sorted(sweeps, key=lambda s: s.title), [b for b in boards if id(b) not in in_sweeps]


def _sparsity_label(sweep: Sweep, board: Leaderboard, taken: set[str]) -> str:
    value = sweep.final_sparsity_pct(board)
    label = f"{value:.1f}%" if not math.isnan(value) else NULL_TEXT
    if label in taken:  # two tables ended at the same sparsity: say what each asked for
        label += f" ({_schedule_title(board.settings, board.runs)})"
    taken.add(label)
    return label


def _sweep_comparison(board: Leaderboard) -> tuple[list[str], str | None, set[str]]:
    """A sweep column's pruners (dense reference left out, it is no point of the curve), best and tied."""
    pruners = [p for p, dense in zip(board.stats["pruner"], board.stats["dense_reference"]) if not dense]
    per_seed = {p: _by_seed(board.runs_of(p)) for p in pruners}
    _, best, tied = compare_rows(per_seed, pruners)
    return pruners, best, tied


def sweep_sections(sweeps: Sequence[Sweep]) -> list[Section]:
    """One summary per sweep: rows pruners, columns final sparsities, cells mean ± 95% interval.

    The best pruner of each column is marked ★ and those tied with it ≈, by the same paired test as
    the tables; the dense reference is left out of the ranking and named under the table.
    """
    sections = []
    for sweep in sweeps:
        cells: dict[str, dict[str, str]] = {}
        ranks: dict[str, list[float]] = {}
        tidy_rows, labels, taken = [], [], set()
        for board in sweep.boards:
            label = _sparsity_label(sweep, board, taken)
            labels.append(label)
            pruners, best, tied = _sweep_comparison(board)
            stats = board.stats.set_index("pruner")
            for rank, pruner in enumerate(pruners):
                s = stats.loc[pruner]
                mark = f" {BEST_MARK}" if pruner == best else f" {TIED_MARK}" if pruner in tied else ""
                mark += f" {FLAG_MARK}" if s.get("flagged", 0) else ""
                cells.setdefault(pruner, {})[label] = _mean_and_interval(s["test_accuracy_mean_pct"], s["test_accuracy_ci95_pct"]) + mark
                ranks.setdefault(pruner, []).append(rank)
            for pruner, s in stats.iterrows():
                dense = bool(s["dense_reference"])
                tidy_rows.append({
                    "table": sweep.title,
                    **{k: board.settings.get(k) for k in _settings_order([board.settings])},
                    "pruner": pruner, "dense_reference": dense,
                    "final_sparsity_pct": _tidy_value("sparsity_pct", s["sparsity_pct"]),
                    "n": int(s["n"]),
                    "test_accuracy_mean_pct": _tidy_value("test_accuracy_mean_pct", s["test_accuracy_mean_pct"]),
                    "test_accuracy_ci95_pct": _tidy_value("test_accuracy_ci95_pct", s["test_accuracy_ci95_pct"]),
                    "mark": "" if dense else ("best" if pruner == best else "tied" if pruner in tied else ""),
                })
        # Rows by mean rank over the columns (rank 0 = most accurate), so the steadiest pruner leads.
        order = sorted(cells, key=lambda p: (sum(ranks[p]) / len(ranks[p]), p))
        display = pd.DataFrame(
            [[p] + [cells[p].get(label, NULL_TEXT) for label in labels] for p in order],
            columns=["pruner"] + [f"{label} sparse" for label in labels], dtype=object,
        )
        notes = []
        dense_text = _dense_note(sweep.boards[0])
        if dense_text:
            notes.append(dense_text)
        left_out = sum(len(b.failed) for b in sweep.boards)
        if left_out:
            notes.append(f"{left_out} run(s) not averaged; `bench leaderboard --no-sweep` lists them.")
        flagged = sum(len(_flag_notes(b.runs)) for b in sweep.boards)
        if flagged:
            notes.append(f"{FLAG_MARK} {flagged} run(s) flagged; `bench leaderboard --no-sweep` says why.")
        sections.append(Section(f"{sweep.title} · sweep of final sparsity", display, pd.DataFrame(tidy_rows), notes))
    return sections


def _dense_note(board: Leaderboard) -> str:
    if board.dense is None:
        return ""
    s = board.stats.set_index("pruner").loc[board.dense]
    accuracy = _mean_and_interval(s["test_accuracy_mean_pct"], s["test_accuracy_ci95_pct"])
    return f"Dense reference ({board.dense}): {accuracy} % test accuracy (n={int(s['n'])})."


# --- rendering -----------------------------------------------------------------------------------

def _one_line(text: str) -> str:
    """Collapse an error message to one line so it cannot break a table."""
    return re.sub(r"\s+", " ", text).strip()


def _tabulate(table: pd.DataFrame, tablefmt: str) -> str:
    """Tabulate display strings as they are: numeric parsing would undo the chosen precision."""
    colalign = ["left"] + ["right"] * (len(table.columns) - 1)
    return tabulate(
        table.values.tolist(), headers=list(table.columns), tablefmt=tablefmt,
        disable_numparse=True, colalign=colalign,
    )


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}
# Symbols a plain pdflatex setup cannot typeset from Unicode; math mode has them all.
_LATEX_SYMBOLS = {
    "±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "Δ": r"$\Delta$", "×": r"$\times$",
    "·": r"$\cdot$", "≈": r"$\approx$", "★": r"$\star$", "†": r"$\dagger$", "≥": r"$\geq$", "–": "--", "<": r"$<$", ">": r"$>$",
}


def _latex(text: str) -> str:
    """Escape LaTeX specials, then swap Unicode symbols for their math-mode commands."""
    escaped = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))
    return "".join(_LATEX_SYMBOLS.get(ch, ch) for ch in escaped)


def _latex_cell(text: str) -> str:
    """A cell in LaTeX, set tight: thin spaces around ±, and a '(n=2)' note as a superscript."""
    text = re.sub(r" \(n=(\d+)\)", r"$^{n=\1}$", _latex(text))
    return text.replace(r" $\pm$ ", r"\,$\pm$\,")


def _latex_header(header: str) -> str:
    """A header on two lines (name over unit), so a column is as wide as its numbers, not its header."""
    name, _, unit = header.partition(" (")
    if unit:
        unit = "(" + unit
    else:
        name, _, unit = header.partition(" ")
    if not unit:
        return _latex(header)
    return rf"\begin{{tabular}}[b]{{@{{}}c@{{}}}}{_latex(name)}\\{_latex(unit)}\end{{tabular}}"


def _render_latex(section: Section) -> str:
    """A booktabs table environment, small type and tight columns, so the default columns fit a page."""
    align = "l" + "r" * (len(section.display.columns) - 1)
    lines = [
        r"\begin{table}[htbp]", r"\centering", r"\footnotesize", r"\setlength{\tabcolsep}{2.5pt}",
        rf"\caption{{{_latex(section.title)}}}", rf"\begin{{tabular}}{{{align}}}", r"\toprule",
        " & ".join(_latex_header(h) for h in section.display.columns) + r" \\", r"\midrule",
    ]
    lines += [" & ".join(_latex_cell(cell) for cell in row) + r" \\" for row in section.display.values.tolist()]
    lines += [r"\bottomrule", r"\end{tabular}"]
    for note in section.notes:
        lines.append(rf"\par\smallskip{{\footnotesize {_latex(note)}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines)


def html_table(frame: pd.DataFrame) -> str:
    """An HTML table of display strings: first column left-aligned, the rest right-aligned numbers."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>\n"
        for row in frame.values.tolist()
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


PAGE_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 72rem;
       padding: 0 1rem; color: #111; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem; } h3 { font-size: 1.05rem; }
table { border-collapse: collapse; margin: 0.8rem 0; font-variant-numeric: tabular-nums; font-size: 0.9rem; }
th, td { padding: 0.25rem 0.6rem; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { border-top: 2px solid #111; border-bottom: 1px solid #111; }
tbody tr:last-child td { border-bottom: 2px solid #111; }
p.note, p.legend { font-size: 0.85rem; color: #333; max-width: 60rem; }
"""


def html_page(title: str, body: str, style: str = "") -> str:
    """A complete, self-contained HTML page (no external resources), as a browser opens it offline."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\" />\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\" />\n"
        f"<title>{html.escape(title)}</title>\n<style>{PAGE_STYLE}{style}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def html_section(section: Section, level: int = 2) -> str:
    """One section as HTML: heading, table, notes."""
    parts = [f"<h{level}>{html.escape(section.title)}</h{level}>", html_table(section.display)]
    parts += [f"<p class=\"note\">{html.escape(note)}</p>" for note in section.notes]
    return "\n".join(parts)


def render(sections: Sequence[Section], fmt: str, legend: Sequence[str] = (TABLE_LEGEND,)) -> str:
    """Render sections in one of `FORMATS`.

    Text formats (markdown, github, latex, html) show each table under its title with its notes, and
    ``legend`` once at the end; ``html`` is a complete page. ``csv`` and ``json`` are tidy: one row per
    table row, the table's title and settings as columns, plain rounded numbers, nothing else
    (``pandas.read_csv`` and ``json.load`` read them back as they are).
    """
    if fmt not in FORMATS:
        raise UserError(f"Unknown leaderboard format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    frames = [s.tidy for s in sections if not s.tidy.empty]
    if fmt in ("csv", "json"):
        tidy = pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame()
        if fmt == "csv":
            return tidy.to_csv(index=False)
        rows = [{k: _tidy_value(k, v) for k, v in row.items()} for row in tidy.to_dict("records")]
        return json.dumps(rows, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    if fmt == "latex":
        parts = ["% bench leaderboard: needs \\usepackage{booktabs} in the preamble"]
        parts += [_render_latex(s) for s in sections]
        parts += [rf"\noindent{{\footnotesize {_latex(text)}}}\par" for text in legend]
        return "\n\n".join(parts) + "\n"
    if fmt == "html":
        body = "\n".join(html_section(s) for s in sections)
        body += "".join(f"\n<p class=\"legend\">{html.escape(text)}</p>" for text in legend)
        return html_page(sections[0].title if len(sections) == 1 else "Leaderboard", body)
    parts = []
    for s in sections:
        parts.append(f"## {s.title}\n\n{_tabulate(s.display, 'pipe' if fmt == 'markdown' else 'github')}")
        parts += s.notes
    parts += legend
    return "\n\n".join(parts) + "\n"


def leaderboard_text(
    records: list[dict], fmt: str, where: str | None = None, columns: Sequence[str] | None = None,
    baseline: str | None = None, sweep: bool | None = None, per_seed: bool = False,
) -> str:
    """What `bench leaderboard` prints: the view its options choose, in format ``fmt``.

    ``sweep`` True prints only sweep summaries, False only tables; None (the default) prints, in the
    text formats, each sweep's summary in place of its tables, unless an option that shapes the
    tables (``columns``, ``baseline``, ``per_seed``) was given. csv and json default to the tables,
    whose rows already hold every point of a sweep.
    """
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'.")
    if per_seed and sweep:
        raise UserError("--per-seed lists the runs of each table; it cannot be combined with --sweep.")
    if sweep and (columns or baseline):
        raise UserError("--columns and --baseline shape the tables; the --sweep summary has fixed columns.")
    if per_seed and columns:
        raise UserError("--columns chooses the columns of the tables; the --per-seed view has fixed columns.")
    boards = build_leaderboards(records, where=where, baseline=baseline)
    if per_seed:
        return render(per_seed_sections(boards), fmt, [PER_SEED_LEGEND])
    sweeps, others = find_sweeps(boards)
    if sweep is None and sweeps and not (columns or baseline) and fmt not in ("csv", "json"):
        sections = sweep_sections(sweeps)
        sections[-1].notes.append("Each sweep point's own table: `bench leaderboard --no-sweep`.")
        return render(sections + table_sections(others), fmt, [SWEEP_LEGEND] + ([TABLE_LEGEND] if others else []))
    if sweep:
        if not sweeps:
            raise UserError("These runs hold no sweep: no two pruning tables differ only in their target sparsity "
                            "or rate per event.")
        return render(sweep_sections(sweeps), fmt, [SWEEP_LEGEND])
    return render(table_sections(boards, columns), fmt, [TABLE_LEGEND])
