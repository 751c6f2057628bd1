"""One self-contained HTML page of a results folder, for reading and for sharing.

The page holds the sweep summaries, every leaderboard with its figures and its per-run rows, the
protocol the runs followed, the software and hardware they ran on, and every run or file that was
left out and why. Figures are embedded as SVG data and the style sheet is inline, so the page opens
offline, from a mail attachment as well as from the results folder.
"""

from __future__ import annotations

import base64
import html
import json
import re
from datetime import datetime, timezone
from typing import Sequence

import pandas as pd

import bench_harness
from bench_harness.leaderboard import (
    PER_SEED_LEGEND,
    SWEEP_LEGEND,
    TABLE_LEGEND,
    Leaderboard,
    build_leaderboards,
    find_sweeps,
    html_page,
    html_table,
    per_seed_sections,
    render,
    sweep_sections,
    table_sections,
)
from bench_harness.plots import Plot, build_plots

__all__ = ["build_report"]

_STYLE = """
nav ol { columns: 2; font-size: 0.9rem; }
figure { margin: 1rem 0 1.5rem; } figure img { width: 100%; max-width: 46rem; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 0.85rem; color: #333; max-width: 60rem; }
details { margin: 0.5rem 0 1rem; } summary { cursor: pointer; color: #0b5394; }
.meta { color: #444; } td.error { white-space: normal; text-align: left; max-width: 40rem; }
td:first-child { white-space: normal; }  /* long table titles wrap instead of widening the page */
"""

# What the environment table shows of each record's ``environment``, in this order.
_ENVIRONMENT_KEYS = ("device", "device_name", "python", "torch", "torchvision", "cuda", "bench_harness", "platform")


def _anchor(text: str) -> str:
    return "t-" + re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _figure(plot: Plot) -> str:
    """The plot inline as SVG data, with its caption (and the caption as alternative text)."""
    data = base64.b64encode(plot.render("svg")).decode("ascii")
    caption = html.escape(plot.caption)
    return (f"<figure id=\"{html.escape(plot.name)}\"><img src=\"data:image/svg+xml;base64,{data}\" alt=\"{caption}\" />"
            f"<figcaption>{caption}</figcaption></figure>")


def _notes(notes: Sequence[str]) -> str:
    return "".join(f"<p class=\"note\">{html.escape(note)}</p>" for note in notes)


def _value(value) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else json.dumps(value)


def _protocol(boards: Sequence[Leaderboard]) -> str:
    """Settings every table shares as one list; the settings that differ as a row per table."""
    names = list(dict.fromkeys(name for board in boards for name in board.settings))
    shared = [n for n in names if len({_value(b.settings.get(n)) for b in boards}) == 1 and all(n in b.settings for b in boards)]
    differing = [n for n in names if n not in shared]
    parts = ["<h3>Shared by every table</h3>",
             html_table(pd.DataFrame([[n, _value(boards[0].settings.get(n))] for n in shared], columns=["setting", "value"]))]
    rows = []
    for board in boards:
        runs = [r for r in board.runs if (r.get("schedule") or {}).get("event_epochs") is not None]
        events = ", ".join(str(e) for e in runs[0]["schedule"]["event_epochs"]) if runs else "-"
        seeds = sorted({str((r.get("config") or {}).get("seed", r.get("seed"))) for r in board.runs})
        rows.append([board.title] + [_value(board.settings.get(n)) for n in differing] + [events, ", ".join(seeds)])
    parts += ["<h3>Per table</h3>",
              html_table(pd.DataFrame(rows, columns=["table"] + differing + ["pruning events after epochs", "seeds"]))]
    return "\n".join(parts)


def _environment(records: Sequence[dict]) -> str:
    """Each distinct environment and plugin set the runs reported, with how many runs had it."""
    environments: dict[tuple, int] = {}
    for record in records:
        environment = record.get("environment") if isinstance(record.get("environment"), dict) else {}
        key = tuple(_value(environment.get(k)) for k in _ENVIRONMENT_KEYS)
        environments[key] = environments.get(key, 0) + 1
    parts = [html_table(pd.DataFrame([list(k) + [n] for k, n in environments.items()],
                                     columns=list(_ENVIRONMENT_KEYS) + ["runs"]))]
    plugins: dict[tuple, int] = {}
    for record in records:
        for kind, plugin in (record.get("plugins") or {}).items():
            if isinstance(plugin, dict):
                key = (kind, *(_value(plugin.get(k)) for k in ("name", "distribution", "version", "module")))
                plugins[key] = plugins.get(key, 0) + 1
    if plugins:
        parts += ["<h3>Plugins</h3>", html_table(pd.DataFrame(
            [list(k) + [n] for k, n in sorted(plugins.items())],
            columns=["kind", "name", "distribution", "version", "module", "runs"]))]
    return "\n".join(parts)


def _left_out(boards: Sequence[Leaderboard], skipped_files: Sequence[str]) -> str:
    rows = [
        (str(run_id), next((str((r.get("config") or {}).get("pruner", r.get("pruner"))) for r in b.runs
                            if str(r.get("run_id")) == run_id), "-"), b.errors.get(run_id, ""))
        for b in boards for run_id in b.failed
    ]
    if not rows and not skipped_files:
        return "<p>None: every run finished and was averaged.</p>"
    parts = []
    if rows:
        body = "".join(
            f"<tr><td>{html.escape(r)}</td><td>{html.escape(p)}</td><td class=\"error\">{html.escape(e)}</td></tr>\n"
            for r, p, e in dict.fromkeys(rows)
        )
        parts.append(f"<table>\n<thead><tr><th>run</th><th>pruner</th><th>why</th></tr></thead>\n<tbody>\n{body}</tbody>\n</table>")
    if skipped_files:
        parts.append("<h3>Files that are not run records</h3><ul>"
                     + "".join(f"<li>{html.escape(message)}</li>" for message in skipped_files) + "</ul>")
    return "\n".join(parts)


def build_report(records: list[dict], where: str, skipped_files: Sequence[str] = ()) -> str:
    """The report page of the runs in ``records`` (read from ``where``); ``skipped_files`` are the
    warnings about files in the folder that were left out."""
    boards = build_leaderboards(records, where=where)
    sweeps, _ = find_sweeps(boards)
    plots = build_plots(boards)
    # The dense reference's runs sit in every table they serve: count each run once.
    left_out = len({run_id for b in boards for run_id in b.failed})
    finished = len({str(r.get("run_id")) for b in boards for r in b.runs}) - left_out
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    contents = []
    body = [f"<h1>Pruning benchmark: {html.escape(where)}</h1>",
            f"<p class=\"meta\">{len(records)} run records: {finished} averaged, {left_out} left out"
            f"{f', {len(skipped_files)} files not read' if skipped_files else ''}. {len(boards)} tables. "
            f"Generated {generated} by bench-harness {html.escape(bench_harness.__version__)}.</p>",
            ""]  # the table of contents, filled in once every heading is known

    def heading(text: str, level: int = 2) -> str:
        anchor = _anchor(text)
        if level == 2:
            contents.append(f"<li><a href=\"#{anchor}\">{html.escape(text)}</a></li>")
        return f"<h{level} id=\"{anchor}\">{html.escape(text)}</h{level}>"

    if sweeps:
        body.append(heading("Sweeps"))
        for sweep, section in zip(sweeps, sweep_sections(sweeps)):
            body += [f"<h3>{html.escape(section.title)}</h3>", html_table(section.display), _notes(section.notes)]
            body += [_figure(p) for p in plots if p.subject == sweep.title and p.name.startswith("accuracy-vs-sparsity")]
        body.append(f"<p class=\"legend\">{html.escape(SWEEP_LEGEND)}</p>")
    in_sweeps = {s.title for s in sweeps}
    single = [p for p in plots if p.name.startswith("accuracy-vs-sparsity") and p.subject not in in_sweeps]
    if single:
        body.append(heading("Accuracy vs sparsity"))
        body += [_figure(p) for p in single]

    body.append(heading("Leaderboards"))
    body.append(f"<p class=\"legend\">{html.escape(TABLE_LEGEND)}</p>")
    for board, section, runs in zip(boards, table_sections(boards), per_seed_sections(boards)):
        body += [heading(board.title, 3), html_table(section.display), _notes(section.notes)]
        body += [_figure(p) for p in plots if p.subject == board.title and not p.name.startswith("accuracy-vs-sparsity")]
        body.append(f"<details><summary>Every run of this table ({len(runs.display)})</summary>"
                    f"{html_table(runs.display)}<p class=\"note\">{html.escape(PER_SEED_LEGEND)}</p></details>")

    body += [heading("Protocol"), _protocol(boards)]
    body += [heading("Environment"), _environment(records)]
    body += [heading("Runs left out"), _left_out(boards, skipped_files)]
    csv = base64.b64encode(render(table_sections(boards), "csv").encode("utf-8")).decode("ascii")
    body += [heading("Data"),
             f"<p>Every table above as one tidy CSV file: <a download=\"leaderboard.csv\" "
             f"href=\"data:text/csv;base64,{csv}\">leaderboard.csv</a> (the same as "
             f"<code>bench leaderboard --format csv</code>).</p>"]
    body[2] = f"<nav><ol>{''.join(contents)}</ol></nav>"
    return html_page(f"Pruning benchmark: {where}", "\n".join(body), _STYLE)
