"""Figures and the report page, from hand-built records: what each shows, and that both work headless."""

from __future__ import annotations

import base64
import html
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest
from html_check import well_formed
from record_factory import make_record, seeds, write_records

from bench_harness.leaderboard import build_leaderboards
from bench_harness.plots import build_plots, write_plots
from bench_harness.report import build_report


def sweep_with_events() -> list[dict]:
    records = seeds("none", (0.90, 0.91, 0.92), epochs=4, prune_every=1)
    for target in (0.5, 0.9):
        for pruner, accuracies in (("magnitude", (0.88, 0.89, 0.90)), ("taylor", (0.885, 0.895, 0.9))):
            records += seeds(pruner, accuracies, target_sparsity=target, epochs=4, prune_every=1)
    return records


def kinds(plots) -> list[str]:
    return sorted(p.name.split("-fashion")[0] for p in plots)


def test_each_figure_comes_from_what_the_records_hold():
    plots = build_plots(build_leaderboards(sweep_with_events()))
    # one accuracy-vs-sparsity curve for the sweep; per target: training curves and event damage
    assert kinds(plots) == ["accuracy-vs-sparsity", "damage", "damage", "training", "training"]
    without_events = [make_record(r["pruner"], r["seed"], r["metrics"]["test_accuracy"], events=False,
                                  **{k: r["config"][k] for k in ("target_sparsity", "epochs", "prune_every")})
                      for r in sweep_with_events()]
    assert "damage" not in kinds(build_plots(build_leaderboards(without_events)))


def test_the_accuracy_curve_shows_every_pruner_at_every_sparsity_with_its_interval():
    boards = build_leaderboards(sweep_with_events())
    (curve,) = [p for p in build_plots(boards) if p.name.startswith("accuracy-vs-sparsity")]
    axes = curve.figure.axes[0]
    lines = {c.get_label(): c.lines[0] for c in axes.containers}
    assert set(lines) == {"magnitude", "taylor"}
    x, y = lines["magnitude"].get_data()
    assert list(x) == pytest.approx([50.0, 10.0], rel=0.05) and list(y) == pytest.approx([89.0, 89.0])  # weights left, %
    assert axes.get_xscale() == "log"
    assert axes.get_xlim()[0] > axes.get_xlim()[1]  # sparser to the right
    # Readable in black and white: no two pruners share a marker or a line style.
    assert len({line.get_marker() for line in lines.values()}) == len(lines)
    assert len({str(line.get_linestyle()) for line in lines.values()}) == len(lines)
    dense_label = [line.get_label() for line in axes.lines if "dense" in line.get_label()]
    assert dense_label == ["none (dense), n=3"]


def test_figures_are_written_as_png_and_svg(tmp_path):
    plots = build_plots(build_leaderboards(sweep_with_events()))[:2]
    written = write_plots(plots, tmp_path / "figures")
    assert sorted(p.suffix for p in written) == [".png", ".png", ".svg", ".svg"]
    for path in written:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert ElementTree.parse(path).getroot().tag.endswith("svg")
    assert not [p for p in (tmp_path / "figures").iterdir() if p.name.startswith(".")]  # no temporary left


def test_plotting_needs_no_display(tmp_path):
    write_records(tmp_path, sweep_with_events())
    script = ("import sys; from bench_harness.cli import app; "
              f"app(['plot', '--results', {str(tmp_path)!r}], standalone_mode=False); "
              "assert 'matplotlib.pyplot' not in sys.modules")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["MPLBACKEND"] = "TkAgg"  # an interactive backend a user's configuration might choose: never started
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "plots").glob("*.png"))) == 5


def test_the_report_is_one_well_formed_page_that_embeds_every_plot():
    records = sweep_with_events() + [make_record("taylor", 7, None, status="failed", target_sparsity=0.9, epochs=4,
                                                 prune_every=1)]
    records[0]["environment"]["device_name"] = "Example GPU 80GB"
    page = build_report(records, "results", ["Skipping run record results/runs/x.json: it holds a JSON list, not an object."])
    parsed = well_formed(page)
    assert page.startswith("<!DOCTYPE html>")
    plots = build_plots(build_leaderboards(records))
    embedded = [img["src"] for img in parsed.images]
    assert len(embedded) == len(plots) == 5
    for source in embedded:
        prefix = "data:image/svg+xml;base64,"
        assert source.startswith(prefix)
        assert ElementTree.fromstring(base64.b64decode(source[len(prefix):])).tag.endswith("svg")
    for plot in plots:
        assert html.escape(plot.caption) in page
    # self-contained: nothing is fetched from anywhere
    assert "http://" not in page and "https://" not in page.replace("https://www.w3.org", "")
    assert "src=\"http" not in page and "<link" not in page and "<script" not in page
    # the failed run, the unreadable file, the protocol and the environment are all on the page
    failed = records[-1]["run_id"]
    assert failed in page and "ValueError: scores contain NaN" in page
    assert "x.json: it holds a JSON list" in page
    assert "Example GPU 80GB" in page and "bench_harness_plugins.taylor" in page
    assert "target_sparsity" in page and "pruning events after epochs" in page
    assert "sweep of final sparsity" in page and "★" in page
