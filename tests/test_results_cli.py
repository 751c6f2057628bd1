"""The reading commands as a researcher meets them: leaderboard views, plot, report, and their errors."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from record_factory import seeds, write_records
from typer.testing import CliRunner

from bench_harness.cli import app

runner = CliRunner()


@pytest.fixture
def results(tmp_path):
    """A sweep (two targets) of magnitude and taylor with a dense reference, three seeds each."""
    records = seeds("none", (0.90, 0.91, 0.92), epochs=4, prune_every=1)
    for target in (0.5, 0.9):
        records += seeds("magnitude", (0.88, 0.89, 0.90), target_sparsity=target, epochs=4, prune_every=1)
        records += seeds("taylor", (0.87, 0.885, 0.90), target_sparsity=target, epochs=4, prune_every=1)
    write_records(tmp_path, records)
    return tmp_path


def bench(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_a_malformed_file_is_one_warning_line_and_the_board_still_prints(results):
    (results / "runs" / "broken.json").write_text("[1, 2]")
    (results / "runs" / "copy.json").write_text((next((results / "runs").glob("fashion-mnist-none-s0*.json"))).read_text())
    result = bench("leaderboard", "--results", results)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line]
    assert len(warnings) == 2 and all(line.startswith("Warning: Skipping run record") for line in warnings)
    assert any("broken.json" in line for line in warnings) and any("copy.json" in line for line in warnings)
    assert "Dense reference (none): 91.00" in result.stdout and "(n=3)" in result.stdout  # the copy counted once


def test_a_sweep_folder_prints_the_summary_and_no_sweep_the_tables(results):
    summary = bench("leaderboard", "--results", results)
    assert "sweep of final sparsity" in summary.stdout and "90.0% sparse" in summary.stdout
    tables = bench("leaderboard", "--results", results, "--no-sweep")
    assert tables.stdout.count("## ") == 2 and "target 90% sparsity" in tables.stdout


def test_csv_of_the_tables_and_of_the_sweep(results, tmp_path):
    output = tmp_path / "board.csv"
    assert bench("leaderboard", "--results", results, "-f", "csv", "-o", output).exit_code == 0
    frame = pd.read_csv(output)
    assert len(frame) == 6 and set(frame["target_sparsity"].dropna()) == {0.5, 0.9}  # tables are the csv default
    sweep = pd.read_csv(io.StringIO(bench("leaderboard", "--results", results, "-f", "csv", "--sweep").stdout))
    assert {"pruner", "final_sparsity_pct", "test_accuracy_mean_pct", "mark"} <= set(sweep.columns)


def test_columns_baseline_and_per_seed(results):
    chosen = bench("leaderboard", "--results", results, "--columns", "pruner,test_accuracy", "-c", "prune_seconds", "-f", "csv")
    assert list(pd.read_csv(io.StringIO(chosen.stdout)).columns) == [
        "pruner", "mark", "test_accuracy_mean_pct", "test_accuracy_ci95_pct", "prune_seconds"]
    versus = bench("leaderboard", "--results", results, "--baseline", "none")
    assert "Δ vs none (pp)" in versus.stdout
    runs = bench("leaderboard", "--results", results, "--per-seed")
    assert runs.exit_code == 0 and "vs mean (pp)" in runs.stdout and runs.stdout.count("| magnitude") == 6


@pytest.mark.parametrize("args, message", [
    (["--baseline", "magnitde"], "--baseline magnitde names no pruner"),
    (["--columns", "acuracy"], "Unknown column 'acuracy'"),
    (["--per-seed", "--sweep"], "cannot be combined"),
    (["--sweep", "--columns", "n"], "fixed columns"),
    (["--format", "docx"], "--format must be one of"),
])
def test_leaderboard_mistakes_are_one_sentence_and_exit_code_2(results, args, message):
    result = bench("leaderboard", "--results", results, *args)
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


def test_sweep_without_a_sweep_is_a_user_error(tmp_path):
    write_records(tmp_path, seeds("magnitude"))
    result = bench("leaderboard", "--results", tmp_path, "--sweep")
    assert result.exit_code == 2 and "no sweep" in result.stderr


def test_plot_and_report_write_into_the_results_folder_by_default(results):
    plotted = bench("plot", "--results", results)
    assert plotted.exit_code == 0, plotted.output
    pngs = sorted((results / "plots").glob("*.png"))
    assert len(pngs) == 5 and len(list((results / "plots").glob("*.svg"))) == 5
    assert all(path.endswith((".png", ".svg")) and (results / "plots").joinpath(path.rsplit("/", 1)[-1]).exists()
               for path in plotted.stdout.splitlines())
    reported = bench("report", "--results", results)
    assert reported.exit_code == 0, reported.output
    page = (results / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<img ") == 5


def test_plot_and_report_of_an_empty_folder_say_what_to_do(tmp_path):
    for command in ("plot", "report"):
        result = bench(command, "--results", tmp_path / "nothing")
        assert result.exit_code == 2 and "run `bench run` first" in result.stderr
    (tmp_path / "file").write_text("")
    write_records(tmp_path, seeds("magnitude"))
    result = bench("plot", "--results", tmp_path, "--output", tmp_path / "file")
    assert result.exit_code == 2 and "is a file" in result.stderr
