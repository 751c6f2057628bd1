"""Leaderboards: run records grouped by protocol, averaged over seeds, rendered as tables.

A table compares pruners under one protocol: every config setting except ``pruner``, ``seed`` and
``device`` must match, so runs that differ in dataset, model, granularity, scope, epochs, rate or
anything else never share a table. The dense reference (pruner ``none``) never prunes, so its
pruning settings are ignored when it is matched: its runs join every pruning table of the same
dataset, model and training settings as the reference row, and form a table of their own only when
no pruning table wants them.

Statistics, per pruner and table, over its finished (``status == "ok"``) runs:

* test accuracy mean and sample standard deviation (``ddof=1``) in percent;
* the half-width of a 95% confidence interval for the mean, ``t * std / sqrt(n)`` with Student's t
  at ``n - 1`` degrees of freedom;
* the change of the mean versus the ``none`` row of the same table, in percentage points;
* the means of the cost metrics (sparsity, parameters, seconds, memory, and the optional ones).

With a single seed the standard deviation and interval are left empty (``NaN`` in csv/json, "-" in
text) rather than shown as 0: one run says nothing about the spread, and a 0 would claim it does.
Failed runs never enter the statistics; they are listed under the table they belong to.
"""

from __future__ import annotations

import functools
import html
import json
import math
import re
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd
from tabulate import tabulate

from bench_harness.config import EXECUTION_FIELDS
from bench_harness.errors import UserError

__all__ = ["FORMATS", "Leaderboard", "build_leaderboards", "render", "t_critical_95"]

FORMATS = ("markdown", "github", "csv", "json", "latex", "html")
"""The output formats `render` accepts."""

DENSE_PRUNER = "none"
"""The pruner whose runs are the unpruned reference of every table."""

# Settings that say who ran what where, not how: they never split tables.
# What varies within one table: the pruner and seed, and settings that choose where and how a run
# executes without changing what it computes (the same fields the config hash leaves out).
_RUN_KEYS = ("pruner", "seed", *sorted(EXECUTION_FIELDS))
# Settings that only matter to a pruner that prunes; the dense reference ignores them.
_PRUNING_KEYS = ("granularity", "scope", "prune_every", "prune_rate", "target_sparsity")
# Settings the title spells out; others are appended only where two titles would collide.
_TITLE_KEYS = ("dataset", "model", "epochs") + _PRUNING_KEYS

NULL_TEXT = "-"
"""How a missing value looks in the text formats."""

# Two-sided 95% Student t critical values for 1..30 degrees of freedom, used when scipy (not a
# dependency) is absent. Beyond 30 the normal 1.96 is used, which narrows the interval by under 4%.
_T_95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)
_Z_95 = 1.96


@functools.lru_cache(maxsize=1)
def _scipy_t():
    """Return ``scipy.stats.t`` when scipy is installed, else None (imported once, lazily)."""
    try:
        from scipy import stats
    except ImportError:
        return None
    return stats.t


def t_critical_95(df: int) -> float:
    """Two-sided 95% Student t critical value for ``df`` degrees of freedom (``df >= 1``)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    student_t = _scipy_t()
    if student_t is not None:
        return float(student_t.ppf(0.975, df))
    return _T_95[df - 1] if df <= len(_T_95) else _Z_95


@dataclass
class Leaderboard:
    """One table: the runs of one protocol, one row per pruner, best test accuracy first."""

    title: str
    """A one-line summary of the protocol, e.g. ``fashion-mnist · fcnn · connections, layer scope · …``."""
    settings: dict
    """The protocol settings every run of the table shares (config minus pruner, seed, device)."""
    table: pd.DataFrame
    """Display-ready rows: every cell a string, units and better-direction arrows in the headers."""
    failed: list[str]
    """Run ids of the table's failed runs, which are reported but not averaged."""
    stats: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The numbers behind `table`, unformatted (NaN where missing), as csv and json write them."""
    errors: dict[str, str] = field(default_factory=dict)
    """The error message of each failed run, by run id."""


@dataclass(frozen=True)
class _Metric:
    """A column averaged from one run metric: its csv/json field, header, scale and format."""

    key: str
    field: str
    header: str
    scale: float
    fmt: Callable[[float], str]
    optional: bool = False


def _quantity(value: float) -> str:
    """Three significant digits without scientific notation for everyday magnitudes."""
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _count(value: float) -> str:
    """A whole count with thousands separators (means of counts are rounded for display)."""
    return f"{round(value):,}"


_METRICS = (
    _Metric("sparsity", "sparsity_pct", "sparsity (%) ↑", 100.0, "{:.1f}".format),
    _Metric("params_nonzero", "params_nonzero", "non-zero params ↓", 1.0, _count),
    _Metric("train_seconds", "train_seconds", "train (s) ↓", 1.0, _quantity),
    _Metric("inference_seconds", "inference_seconds", "inference (s) ↓", 1.0, _quantity),
    _Metric("peak_memory_mb", "peak_memory_mb", "peak mem (MB) ↓", 1.0, "{:.1f}".format),
    # Added by a later feature, so absent from older records: shown only where some run has them.
    _Metric("compression_ratio", "compression_ratio", "compression (×) ↑", 1.0, "{:.2f}".format, True),
    _Metric("flops_effective", "flops_effective", "FLOPs effective (MAC/sample) ↓", 1.0, _count, True),
    _Metric("latency_ms_batch1", "latency_ms_batch1", "latency b1 (ms) ↓", 1.0, _quantity, True),
    _Metric("throughput_per_second", "throughput_per_second", "throughput (img/s) ↑", 1.0, _quantity, True),
    _Metric("compact_speedup", "compact_speedup", "compact speedup (×) ↑", 1.0, "{:.2f}".format, True),
    _Metric("train_energy_joules", "train_energy_joules", "train energy (J) ↓", 1.0, _quantity, True),
    _Metric("inference_energy_joules", "inference_energy_joules", "inference energy (J) ↓", 1.0, _quantity, True),
)

ACCURACY_HEADER = "test acc (%) ↑"
"""Header of the 'mean ± std' test accuracy column, in percent."""
CI_HEADER = "95% CI (± pp)"
"""Header of the confidence-interval half-width column, in percentage points."""
DELTA_HEADER = "Δ vs none (pp) ↑"
"""Header of the change in mean test accuracy versus the `none` row, in percentage points."""


def _config(record: dict) -> dict:
    """The run's config, with the top-level identity fields filling any gaps in older records."""
    config = dict(record.get("config") or {})
    for key in ("pruner", "dataset", "model", "seed"):
        if config.get(key) is None and record.get(key) is not None:
            config[key] = record[key]
    return config


def _key(settings: dict) -> tuple:
    """A hashable, order-free identity for a settings dict (values may be None or nested)."""
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in settings.items()))


def _percent(fraction: float) -> str:
    """0.1 -> '10%', 0.025 -> '2.5%'."""
    return f"{fraction * 100:g}%"


def _base_title(settings: dict, dense_only: bool) -> str:
    """The title from the settings a reader compares first; missing settings are left out."""
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
        rate = settings.get("prune_rate")
        every = settings.get("prune_every")
        if rate is not None:
            schedule.append(f"{_percent(rate)} per event" + (f" every {every}" if every is not None else ""))
        if settings.get("target_sparsity") is not None:
            schedule.append(f"to {_percent(settings['target_sparsity'])} sparsity")
    if schedule:
        parts.append(", ".join(schedule))
    return " · ".join(parts)


def _row_stats(pruner: str, runs: list[dict], metrics: tuple[_Metric, ...]) -> dict:
    """Seed statistics of one pruner's finished runs, in the units of the csv/json fields."""
    acc_pct = pd.to_numeric(
        pd.Series([r.get("metrics", {}).get("test_accuracy") for r in runs], dtype=object), errors="coerce"
    ).dropna() * 100.0
    k = len(acc_pct)
    std = float(acc_pct.std(ddof=1)) if k > 1 else math.nan
    row = {
        "pruner": pruner,
        "n": len(runs),
        "test_accuracy_mean_pct": float(acc_pct.mean()) if k else math.nan,
        "test_accuracy_std_pct": std,
        "test_accuracy_ci95_pct": t_critical_95(k - 1) * std / math.sqrt(k) if k > 1 else math.nan,
        "delta_vs_none_pp": math.nan,
    }
    for metric in metrics:
        values = pd.to_numeric(
            pd.Series([(r.get("metrics") or {}).get(metric.key) for r in runs], dtype=object), errors="coerce"
        ).dropna()
        row[metric.field] = float(values.mean()) * metric.scale if len(values) else math.nan
    return row


def _display(stats: pd.DataFrame, metrics: tuple[_Metric, ...]) -> pd.DataFrame:
    """Format the numeric rows for reading: 'mean ± std', units in headers, '-' for missing."""

    def show(value: float, fmt: Callable[[float], str]) -> str:
        return NULL_TEXT if value is None or pd.isna(value) else fmt(value)

    rows = []
    for _, s in stats.iterrows():
        mean, std = s["test_accuracy_mean_pct"], s["test_accuracy_std_pct"]
        accuracy = show(mean, "{:.2f}".format)
        if not pd.isna(mean) and not pd.isna(std):
            accuracy += f" ± {std:.2f}"
        row = {
            "pruner": str(s["pruner"]),
            "n": str(int(s["n"])),
            ACCURACY_HEADER: accuracy,
            CI_HEADER: show(s["test_accuracy_ci95_pct"], "{:.2f}".format),
            DELTA_HEADER: show(s["delta_vs_none_pp"], "{:+.2f}".format),
        }
        for metric in metrics:
            row[metric.header] = show(s[metric.field], metric.fmt)
        rows.append(row)
    headers = ["pruner", "n", ACCURACY_HEADER, CI_HEADER, DELTA_HEADER] + [m.header for m in metrics]
    return pd.DataFrame(rows, columns=headers, dtype=object)


def _board(settings: dict, runs: list[dict], dense_only: bool) -> Leaderboard:
    """Build one table from the runs (finished and failed) that belong to it."""
    ok = [r for r in runs if r.get("status") == "ok"]
    failed = [r for r in runs if r.get("status") != "ok"]
    metrics = tuple(
        m for m in _METRICS
        if not m.optional or any((r.get("metrics") or {}).get(m.key) is not None for r in ok)
    )
    by_pruner: dict[str, list[dict]] = {}
    for record in ok:
        by_pruner.setdefault(str(_config(record)["pruner"]), []).append(record)
    columns = ["pruner", "n", "test_accuracy_mean_pct", "test_accuracy_std_pct",
               "test_accuracy_ci95_pct", "delta_vs_none_pp"] + [m.field for m in metrics]
    stats = pd.DataFrame([_row_stats(p, rs, metrics) for p, rs in by_pruner.items()], columns=columns)
    if DENSE_PRUNER in by_pruner:
        reference_pct = stats.loc[stats["pruner"] == DENSE_PRUNER, "test_accuracy_mean_pct"].iloc[0]
        stats["delta_vs_none_pp"] = stats["test_accuracy_mean_pct"] - reference_pct
    # Ties (and rows without an accuracy) fall back to the pruner name so the order is stable.
    stats = stats.sort_values(
        ["test_accuracy_mean_pct", "pruner"], ascending=[False, True], na_position="last", kind="stable"
    ).reset_index(drop=True)
    errors = {str(r.get("run_id")): str(r.get("error") or f"status {r.get('status')!r}") for r in failed}
    return Leaderboard(
        title=_base_title(settings, dense_only),
        settings=settings,
        table=_display(stats, metrics),
        failed=list(errors),
        stats=stats,
        errors=errors,
    )


def _disambiguate(boards: list[Leaderboard]) -> None:
    """Append the settings that tell apart boards whose titles would otherwise be identical."""
    by_title: dict[str, list[Leaderboard]] = {}
    for board in boards:
        by_title.setdefault(board.title, []).append(board)
    for same in by_title.values():
        if len(same) < 2:
            continue
        keys = sorted({k for b in same for k in b.settings} - set(_TITLE_KEYS))
        differing = [k for k in keys if len({json.dumps(b.settings.get(k)) for b in same}) > 1]
        for board in same:
            extra = ", ".join(f"{k} {json.dumps(board.settings.get(k))}" for k in differing)
            if extra:
                board.title = f"{board.title} · {extra}"


def build_leaderboards(records: list[dict], where: str | None = None) -> list[Leaderboard]:
    """Group run records by protocol and return one leaderboard per protocol, sorted by title.

    ``where`` names the results folder for the error raised when ``records`` is empty.
    """
    if not records:
        place = f" in {where}" if where else ""
        raise UserError(f"No finished runs were found{place}; run `bench run` first to create some.")

    pruning_groups: dict[tuple, tuple[dict, list[dict]]] = {}
    dense_groups: dict[tuple, tuple[dict, list[dict]]] = {}
    for record in records:
        config = _config(record)
        settings = {k: v for k, v in config.items() if k not in _RUN_KEYS}
        if config.get("pruner") == DENSE_PRUNER:
            settings = {k: v for k, v in settings.items() if k not in _PRUNING_KEYS}
            dense_groups.setdefault(_key(settings), (settings, []))[1].append(record)
        else:
            pruning_groups.setdefault(_key(settings), (settings, []))[1].append(record)

    boards = []
    used_dense: set[tuple] = set()
    for settings, runs in pruning_groups.values():
        dense_key = _key({k: v for k, v in settings.items() if k not in _PRUNING_KEYS})
        reference = dense_groups.get(dense_key, ({}, []))[1]
        if reference:
            used_dense.add(dense_key)
        boards.append(_board(settings, runs + reference, dense_only=False))
    for key, (settings, runs) in dense_groups.items():
        if key not in used_dense:
            boards.append(_board(settings, runs, dense_only=True))

    _disambiguate(boards)
    boards.sort(key=lambda b: (b.title, _key(b.settings)))
    return boards


# --- rendering -----------------------------------------------------------------------------------

def _one_line(text: str) -> str:
    """Collapse an error message to one line so it cannot break a table or a comment."""
    return re.sub(r"\s+", " ", text).strip()


def _failed_line(board: Leaderboard) -> str:
    """'Failed runs (not averaged): id (error); …' in plain text, or '' when none failed."""
    if not board.failed:
        return ""
    listed = "; ".join(f"{rid} ({_one_line(board.errors.get(rid, ''))})" for rid in board.failed)
    return f"Failed runs (not averaged): {listed}"


def _tabulate(table: pd.DataFrame, tablefmt: str) -> str:
    """Tabulate display strings as they are: numeric parsing would undo the chosen precision."""
    colalign = ["left"] + ["right"] * (len(table.columns) - 1)
    return tabulate(
        table.values.tolist(), headers=list(table.columns), tablefmt=tablefmt,
        disable_numparse=True, colalign=colalign,
    )


def _plain(value):
    """A JSON-ready scalar: numpy types unwrapped, NaN as None."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}
# Symbols a plain pdflatex setup cannot typeset from Unicode; math mode has them all.
_LATEX_SYMBOLS = {
    "±": r"$\pm$", "↑": r"$\uparrow$", "↓": r"$\downarrow$", "Δ": r"$\Delta$",
    "×": r"$\times$", "·": r"$\cdot$",
}


def _latex(text: str) -> str:
    """Escape LaTeX specials, then swap Unicode symbols for their math-mode commands."""
    escaped = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))
    return "".join(_LATEX_SYMBOLS.get(ch, ch) for ch in escaped)


def _render_text(board: Leaderboard, fmt: str) -> str:
    """One board in a text format: heading, table, then the failed-runs line if any."""
    failed = _failed_line(board)
    if fmt in ("markdown", "github"):
        parts = [f"## {board.title}", _tabulate(board.table, "pipe" if fmt == "markdown" else "github")]
        if failed:
            parts.append(failed)
    elif fmt == "latex":
        table = board.table.map(_latex)
        table.columns = [_latex(c) for c in board.table.columns]
        parts = [rf"\subsection*{{{_latex(board.title)}}}", _tabulate(table, "latex_raw")]
        if failed:
            parts.append(rf"\noindent {_latex(failed)}\par")
    else:  # html; tabulate's "html" format escapes the cells itself
        parts = [f"<h2>{html.escape(board.title)}</h2>", _tabulate(board.table, "html")]
        if failed:
            parts.append(f"<p>{html.escape(failed)}</p>")
    return "\n\n".join(parts)


def render(boards: list[Leaderboard], fmt: str) -> str:
    """Render leaderboards in one of `FORMATS`.

    Text formats (markdown, github, latex, html) show the display table under a heading. ``csv``
    writes the raw numbers, one section per table after ``#`` comment lines (title, settings, failed
    runs). ``json`` is a list of ``{"title", "settings", "rows", "failed"}`` with numeric rows.
    """
    if fmt not in FORMATS:
        raise UserError(f"Unknown leaderboard format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    if fmt == "json":
        payload = [
            {
                "title": b.title,
                "settings": b.settings,
                "rows": [{k: _plain(v) for k, v in row.items()} for row in b.stats.to_dict("records")],
                "failed": [{"run_id": rid, "error": b.errors.get(rid)} for rid in b.failed],
            }
            for b in boards
        ]
        return json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    if fmt == "csv":
        sections = []
        for b in boards:
            lines = [f"# {b.title}", f"# settings: {json.dumps(b.settings, sort_keys=True)}"]
            lines += [f"# failed: {rid} ({_one_line(b.errors.get(rid, ''))})" for rid in b.failed]
            sections.append("\n".join(lines) + "\n" + b.stats.to_csv(index=False))
        return "\n".join(sections)
    return "\n\n".join(_render_text(b, fmt) for b in boards) + "\n"
