"""Figures of a results folder, as the pruning literature reads results.

* accuracy against the fraction of weights left, one curve per pruner with its 95% band, on a log
  axis (the way ShrinkBench and most pruning papers plot it), the dense reference as a band;
* validation accuracy and sparsity per epoch, mean and 95% band over seeds;
* the damage of each pruning event: validation accuracy before the cut, right after it and after the
  pruner's compensation (when it has one), from the records' event entries.

Figures are built on matplotlib ``Figure`` objects with no pyplot and no display, so they render
the same on a headless server. Every pruner keeps one colour, marker and line style in every figure,
and markers and line styles differ, so the figures read in black-and-white print too.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from bench_harness.leaderboard import Leaderboard, Sweep, find_sweeps, is_dense_reference
from bench_harness.significance import mean_interval
from bench_harness.store import write_bytes_atomically

__all__ = ["FIGURE_FORMATS", "Plot", "build_plots", "write_plots"]

FIGURE_FORMATS = ("png", "svg")
"""Every plot is written in each of these formats."""

# Okabe & Ito's palette: distinguishable with every common colour-vision deficiency.
_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
_DENSE_COLOUR = "#555555"
_PNG_DPI = 200
_DODGE = 0.012
"""Sideways nudge between pruners at one sparsity, in decades of the log axis (0.012: about 3%)."""


@dataclass(frozen=True)
class _Style:
    colour: str
    marker: str
    line: object


@dataclass
class Plot:
    """One figure: a file stem, a caption that says what it shows, and the matplotlib figure."""

    name: str
    caption: str
    figure: Figure
    subject: str
    """The title of the table or sweep the figure shows."""

    def render(self, fmt: str) -> bytes:
        """The figure as PNG or SVG bytes."""
        buffer = io.BytesIO()
        # metadata: no creation date, so the same results give byte-identical SVG files.
        metadata = {"Date": None} if fmt == "svg" else {}
        self.figure.savefig(buffer, format=fmt, dpi=_PNG_DPI, bbox_inches="tight", metadata=metadata)
        return buffer.getvalue()



def _band(means: Sequence[float], halves: Sequence[float]) -> tuple[list[float], list[float]]:
    """Interval ends of percentages, clipped to [0, 100]: with few seeds Student's t makes intervals
    wider than the scale, and a bar past 100% would only mislead."""
    lows = [max(0.0, m - (0.0 if math.isnan(h) else h)) for m, h in zip(means, halves)]
    highs = [min(100.0, m + (0.0 if math.isnan(h) else h)) for m, h in zip(means, halves)]
    return lows, highs


def _error_bars(means: Sequence[float], halves: Sequence[float]) -> list[list[float]]:
    """``yerr`` for matplotlib: distances down and up to the clipped interval ends."""
    lows, highs = _band(means, halves)
    return [[m - low for m, low in zip(means, lows)], [high - m for m, high in zip(means, highs)]]

def _styles(boards: Sequence[Leaderboard]) -> dict[str, _Style]:
    """One style per pruner, the same in every figure of the folder (pruners in alphabetical order)."""
    names = sorted({str(p) for b in boards for p, dense in zip(b.stats["pruner"], b.stats["dense_reference"]) if not dense})
    return {
        name: _Style(_COLOURS[i % len(_COLOURS)], _MARKERS[i % len(_MARKERS)], _LINES[i % len(_LINES)])
        for i, name in enumerate(names)
    }


def _slug(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")[:100].strip("-")


def _title(figure: Figure, text: str) -> None:
    figure.suptitle("\n".join(textwrap.wrap(text, 80)), fontsize=9)


def _finite(values: Iterable) -> list[float]:
    found = []
    for value in values:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            found.append(float(value))
    return found


def _accuracy_vs_sparsity(sweep: Sweep, styles: dict[str, _Style]) -> Plot:
    """Test accuracy against weights left (log axis, sparser to the right), one curve per pruner."""
    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    axes = figure.add_subplot()
    points: dict[str, list[tuple[float, float, float]]] = {}
    for board in sweep.boards:
        for _, row in board.stats.iterrows():
            left = 100.0 - row["sparsity_pct"]
            if row["dense_reference"] or not row["n"] or not left > 0:
                continue
            half = row["test_accuracy_ci95_pct"]
            points.setdefault(row["pruner"], []).append(
                (left, row["test_accuracy_mean_pct"], 0.0 if math.isnan(half) else half))
    dense_board = next((b for b in sweep.boards if b.dense is not None), None)
    if dense_board is not None:
        dense = dense_board.stats.set_index("pruner").loc[dense_board.dense]
        mean, half = dense["test_accuracy_mean_pct"], dense["test_accuracy_ci95_pct"]
        axes.axhline(mean, color=_DENSE_COLOUR, linestyle=(0, (1, 1)), linewidth=1.2,
                     label=f"{dense_board.dense} (dense), n={int(dense['n'])}")
        if not math.isnan(half):
            axes.axhspan(*(end[0] for end in _band([mean], [half])), color=_DENSE_COLOUR, alpha=0.12, linewidth=0)
    drawn = sorted(points, key=lambda p: list(styles).index(p))
    for index, pruner in enumerate(drawn):
        style = styles[pruner]
        # Pruners that end at one sparsity would hide each other's bars: each is nudged sideways by a
        # few percent of its weights left (the log axis keeps the nudge the same width everywhere).
        nudge = 10 ** (_DODGE * (index - (len(drawn) - 1) / 2))
        xs, ys, halves = zip(*sorted(((x * nudge, y, h) for x, y, h in points[pruner]), reverse=True))
        axes.fill_between(xs, *_band(ys, halves), color=style.colour, alpha=0.12, linewidth=0)
        axes.errorbar(xs, ys, yerr=_error_bars(ys, halves), color=style.colour, marker=style.marker, linestyle=style.line,
                      markersize=6, markerfacecolor="white", markeredgewidth=1.4, capsize=3, linewidth=1.4,
                      label=pruner)
    axes.set_xscale("log")
    lefts = [x for curve in points.values() for x, _, _ in curve]
    if lefts:
        low = min(lefts)
        ticks = [t for t in (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01) if t >= low / 1.5]
        axes.set_xlim(max(lefts + [100.0]) * 1.15, low / 1.3)  # inverted: sparser to the right
        axes.xaxis.set_major_locator(FixedLocator(ticks))
        axes.xaxis.set_minor_locator(NullLocator())
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.set_xlabel("weights left (%, log scale)  →  sparser")
    axes.set_ylabel("test accuracy (%)")
    axes.grid(True, which="major", color="#dddddd", linewidth=0.6)
    axes.legend(fontsize=8, frameon=False)
    _title(figure, f"Test accuracy vs sparsity · {sweep.title}")
    caption = (f"Test accuracy against the fraction of weights left, {sweep.title}: mean over seeds with its 95% "
               f"interval (bars and band), pruners nudged apart sideways; the dotted line and grey band are the "
               f"dense reference.")
    return Plot(f"accuracy-vs-sparsity-{_slug(sweep.title)}", caption, figure, sweep.title)


def _epoch_series(runs: list[dict], key: str, scale: float) -> tuple[list[int], list[float], list[float]]:
    """Per epoch: the mean of ``history[key]`` over runs, and its 95% half-width (0 with one run)."""
    by_epoch: dict[int, list[float]] = {}
    for record in runs:
        for entry in record.get("history") or []:
            if not isinstance(entry, dict) or not isinstance(entry.get("epoch"), int):
                continue
            for value in _finite([entry.get(key)]):
                by_epoch.setdefault(entry["epoch"], []).append(value * scale)
    epochs = sorted(by_epoch)
    intervals = [mean_interval(by_epoch[e]) for e in epochs]
    return epochs, [i.mean for i in intervals], [0.0 if math.isnan(i.half_width) else i.half_width for i in intervals]


def _usable(runs: list[dict]) -> list[dict]:
    return [r for r in runs if r.get("status") == "ok"]


def _training_curves(board: Leaderboard, styles: dict[str, _Style]) -> Plot | None:
    """Validation accuracy and sparsity per epoch, one line per pruner, mean and 95% band over seeds."""
    figure = Figure(figsize=(6.4, 5.6), layout="constrained")
    accuracy_axes, sparsity_axes = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    drawn = False
    for pruner in board.stats["pruner"]:
        runs = _usable(board.runs_of(pruner))
        dense = bool(runs) and all(is_dense_reference(r) for r in runs)
        style = styles.get(pruner, _Style(_DENSE_COLOUR, "", (0, (1, 1))))
        label = f"{pruner} (dense)" if dense else pruner
        for axes, key in ((accuracy_axes, "val_accuracy"), (sparsity_axes, "sparsity")):
            epochs, means, halves = _epoch_series(runs, key, 100.0)
            if not epochs:
                continue
            drawn = True
            axes.fill_between(epochs, *_band(means, halves), color=style.colour, alpha=0.15, linewidth=0)
            axes.plot(epochs, means, color=style.colour, marker=style.marker or None, linestyle=style.line,
                      markersize=4, markerfacecolor="white", markevery=max(1, len(epochs) // 12), linewidth=1.3,
                      label=label)
    if not drawn:
        return None
    accuracy_axes.set_ylabel("validation accuracy (%)")
    sparsity_axes.set_ylabel("sparsity (%)")
    sparsity_axes.set_xlabel("epoch")
    sparsity_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axes in (accuracy_axes, sparsity_axes):
        axes.grid(True, color="#dddddd", linewidth=0.6)
    accuracy_axes.legend(fontsize=8, frameon=False)
    _title(figure, f"Training · {board.title}")
    caption = (f"Validation accuracy and sparsity at the end of each epoch (after that epoch's pruning event), "
               f"{board.title}: mean over seeds with its 95% band.")
    return Plot(f"training-{_slug(board.title)}", caption, figure, board.title)


# Each stage of an event: its record field, legend label, marker, marker face, and a small offset
# along the epoch axis so that the three stages of one event stand side by side.
_EVENT_STAGES = (
    ("val_accuracy_before", "before the cut", "o", "white", -0.12),
    ("val_accuracy_after_cut", "after the cut", "v", None, 0.0),
    ("val_accuracy_after_compensation", "after compensation", "s", "#bbbbbb", 0.12),
)


def _event_series(runs: list[dict]) -> dict[str, dict[int, list[float]]]:
    """Validation accuracy (%) per stage and event epoch over the runs' pruning events."""
    series: dict[str, dict[int, list[float]]] = {key: {} for key, *_ in _EVENT_STAGES}
    for record in runs:
        for event in record.get("events") or []:
            if not isinstance(event, dict) or event.get("kind", "prune") != "prune" or not isinstance(event.get("epoch"), int):
                continue
            for key, *_ in _EVENT_STAGES:
                for value in _finite([event.get(key)]):
                    series[key].setdefault(event["epoch"], []).append(100.0 * value)
    return series


def _event_damage(board: Leaderboard, styles: dict[str, _Style]) -> Plot | None:
    """One panel per pruner: validation accuracy before and after each cut (and after compensation)."""
    panels = []
    for pruner in board.stats["pruner"]:
        series = _event_series(_usable(board.runs_of(pruner)))
        if series["val_accuracy_before"] and series["val_accuracy_after_cut"]:
            panels.append((pruner, series))
    if not panels:
        return None
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(3.3 * columns, 2.9 * rows + 0.6), layout="constrained")
    grid = figure.subplots(rows, columns, sharey=True, squeeze=False)
    for index, axes in enumerate(grid.flat):
        if index >= len(panels):
            axes.set_visible(False)
            continue
        pruner, series = panels[index]
        colour = styles.get(pruner, _Style(_DENSE_COLOUR, "o", "-")).colour
        before = {e: mean_interval(v).mean for e, v in series["val_accuracy_before"].items()}
        after = {e: mean_interval(v).mean for e, v in series["val_accuracy_after_cut"].items()}
        offset = {key: shift for key, *_, shift in _EVENT_STAGES}
        for epoch in sorted(set(before) & set(after)):  # the drop the cut caused
            axes.plot([epoch + offset["val_accuracy_before"], epoch + offset["val_accuracy_after_cut"]],
                      [before[epoch], after[epoch]], color=colour, linewidth=1.4)
        for key, label, marker, face, shift in _EVENT_STAGES:
            points = series[key]
            if not points:
                continue
            epochs = sorted(points)
            stats = [mean_interval(points[e]) for e in epochs]
            axes.errorbar([e + shift for e in epochs], [s.mean for s in stats],
                          yerr=_error_bars([s.mean for s in stats], [s.half_width for s in stats]),
                          linestyle="none", marker=marker, markersize=6, color=colour, capsize=2, elinewidth=0.7,
                          ecolor="#777777", markerfacecolor=face or colour, markeredgecolor=colour, label=label)
        axes.set_title(pruner, fontsize=9)
        axes.grid(True, color="#dddddd", linewidth=0.6)
        axes.set_xlabel("pruning event after epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if index % columns == 0:
            axes.set_ylabel("validation accuracy (%)")
    grid.flat[0].legend(fontsize=7, frameon=False)
    _title(figure, f"Damage of each pruning event · {board.title}")
    caption = (f"Validation accuracy just before each pruning event, right after the cut and after the pruner's "
               f"compensation where it has one, {board.title}: mean over seeds with 95% bars.")
    return Plot(f"damage-{_slug(board.title)}", caption, figure, board.title)


def build_plots(boards: Sequence[Leaderboard]) -> list[Plot]:
    """Every figure the tables support: accuracy vs sparsity per sweep (or single pruning table), then
    training curves and event damage per table (damage only where records hold event entries)."""
    styles = _styles(boards)
    sweeps, _ = find_sweeps(boards, minimum=1)
    plots = [_accuracy_vs_sparsity(sweep, styles) for sweep in sweeps]
    for board in boards:
        plots += [p for p in (_training_curves(board, styles), _event_damage(board, styles)) if p is not None]
    taken: dict[str, int] = {}
    for plot in plots:  # two titles may share a slug once cut short; number the repeats
        count = taken[plot.name] = taken.get(plot.name, 0) + 1
        if count > 1:
            plot.name = f"{plot.name}-{count}"
    return plots


def write_plots(plots: Sequence[Plot], folder: Path) -> list[Path]:
    """Write every plot as PNG and SVG into ``folder`` (created if missing); return the paths written."""
    written = []
    for plot in plots:
        for fmt in FIGURE_FORMATS:
            path = Path(folder) / f"{plot.name}.{fmt}"
            write_bytes_atomically(path, plot.render(fmt))
            written.append(path)
    return written
