"""Tests for the leaderboard: seed statistics, paired comparisons, grouping, sweeps and every format."""

from __future__ import annotations

import io
import json
import math
import shutil
import subprocess

import pandas as pd
import pytest
from html_check import well_formed
from record_factory import make_record, seeds
from scipy import stats as scipy_stats

from bench_harness.errors import UserError
from bench_harness.leaderboard import (
    DEFAULT_COLUMNS,
    FORMATS,
    build_leaderboards,
    find_sweeps,
    leaderboard_text,
    per_seed_sections,
    render,
    sweep_sections,
    table_sections,
)

ACCURACY = "test acc (%) ↑"
DELTA_BEST = "Δ vs best (pp) ↑"
DELTA_DENSE = "Δ vs dense (pp)"


def row(board, pruner: str) -> pd.Series:
    """The numeric stats row of one pruner."""
    return board.stats.set_index("pruner").loc[pruner]


def shown(board, pruner: str) -> pd.Series:
    """The displayed row of one pruner (its name cell may carry a mark)."""
    table = board.table
    names = table["pruner"].str.split(" ").str[0]
    return table.loc[names == pruner].iloc[0]


def only_board(records: list[dict], **kwargs):
    """Build leaderboards and check that exactly one table came out."""
    boards = build_leaderboards(records, **kwargs)
    assert len(boards) == 1
    return boards[0]


# --- seed statistics -------------------------------------------------------------------------------

def test_mean_std_and_confidence_interval_for_known_accuracies():
    board = only_board(seeds("magnitude"))
    stats = row(board, "magnitude")
    assert stats["n"] == 3
    assert stats["test_accuracy_mean_pct"] == pytest.approx(89.0)
    assert stats["test_accuracy_std_pct"] == pytest.approx(1.0)  # sample std of 88, 89, 90
    # t(0.975, df=2) = 4.303; half-width = t * std / sqrt(n)
    assert stats["test_accuracy_ci95_pct"] == pytest.approx(4.303 / math.sqrt(3), abs=1e-3)
    assert shown(board, "magnitude")[ACCURACY] == "89.00 ± 2.48"


def test_single_seed_leaves_spread_empty():
    board = only_board([make_record("magnitude", 0, 0.8878)])
    stats = row(board, "magnitude")
    assert stats["test_accuracy_mean_pct"] == pytest.approx(88.78)
    assert math.isnan(stats["test_accuracy_std_pct"]) and math.isnan(stats["test_accuracy_ci95_pct"])
    assert shown(board, "magnitude")[ACCURACY] == "88.78"


def test_rows_sorted_by_mean_accuracy_best_first():
    records = (seeds("random", (0.70, 0.71, 0.72)) + seeds("taylor", (0.90, 0.91, 0.92))
               + seeds("magnitude", (0.85, 0.86, 0.87)))
    board = only_board(records)
    assert list(board.stats["pruner"]) == ["taylor", "magnitude", "random"]
    assert list(board.table["pruner"].str.split(" ").str[0]) == ["taylor", "magnitude", "random"]


def test_a_run_without_a_test_accuracy_is_not_counted_in_n():
    broken = make_record("magnitude", 3, None)
    board = only_board(seeds("magnitude") + [broken])
    assert row(board, "magnitude")["n"] == 3
    assert row(board, "magnitude")["test_accuracy_mean_pct"] == pytest.approx(89.0)
    assert board.errors[broken["run_id"]] == "finished without a test accuracy"
    assert broken["run_id"] in render(table_sections([board]), "markdown")


def test_failed_runs_excluded_from_statistics_and_listed():
    failed = make_record("magnitude", 3, 0.10, status="failed")
    failed["metrics"]["train_seconds"] = 9999.0
    board = only_board(seeds("magnitude") + [failed])
    stats = row(board, "magnitude")
    assert stats["n"] == 3 and stats["failed"] == 1
    assert stats["test_accuracy_mean_pct"] == pytest.approx(89.0)
    assert stats["train_seconds"] == pytest.approx(12.3)
    assert board.failed == [failed["run_id"]]
    text = render(table_sections([board]), "markdown")
    assert failed["run_id"] in text and "ValueError: scores contain NaN" in text


def test_table_of_only_failed_runs_still_reports_them():
    board = only_board([make_record("taylor", 0, None, status="failed")])
    assert row(board, "taylor")["n"] == 0 and board.failed


def test_pruning_time_is_a_default_column():
    board = only_board(seeds("magnitude", metrics={"prune_seconds": 0.25}))
    assert "prune_seconds" in DEFAULT_COLUMNS
    assert shown(board, "magnitude")["prune (s) ↓"] == "0.25"
    assert row(board, "magnitude")["prune_seconds"] == pytest.approx(0.25)


# --- paired comparisons ------------------------------------------------------------------------------

def test_the_comparison_is_paired_by_seed():
    # Seeds differ by several points, taylor beats magnitude by 0.5 on every seed: paired, that is
    # clear, although the two means' own intervals overlap widely.
    base = (0.80, 0.85, 0.90, 0.83)
    board = only_board(seeds("magnitude", base) + seeds("taylor", [a + 0.005 + 0.001 * (i % 2) for i, a in enumerate(base)]))
    taylor, magnitude = row(board, "taylor"), row(board, "magnitude")
    assert taylor["mark"] == "best" and magnitude["mark"] == ""
    assert magnitude["baseline"] == "taylor" and taylor["baseline"] == "magnitude"  # the best faces the runner-up
    assert magnitude["delta_vs_baseline_pp"] == pytest.approx(-0.55)
    differences = [-0.5, -0.6, -0.5, -0.6]
    expected = scipy_stats.ttest_1samp(differences, 0.0)
    assert magnitude["p_value"] == pytest.approx(expected.pvalue)
    half = scipy_stats.t.ppf(0.975, 3) * pd.Series(differences).std() / 2
    assert magnitude["delta_vs_baseline_ci95_pp"] == pytest.approx(half)
    assert magnitude["p_holm"] < 0.05
    assert magnitude["test_accuracy_ci95_pct"] > abs(magnitude["delta_vs_baseline_pp"])  # unpaired, it would look tied
    assert shown(board, "magnitude")[DELTA_BEST] == f"-0.55 ± {half:.2f}"
    assert shown(board, "taylor")["pruner"] == "taylor ★"


def test_holm_correction_across_the_rows_and_ties_with_the_best():
    noise = (0.0, 0.004, -0.003, 0.002, -0.001)
    base = (0.85, 0.86, 0.84, 0.87, 0.85)
    records = (seeds("taylor", [b + 0.01 for b in base])
               + seeds("magnitude", [b + 0.01 + n for b, n in zip(base, noise)])  # the same, up to noise
               + seeds("random", [b - 0.03 + n / 2 for b, n in zip(base, noise)]))
    board = only_board(records)
    magnitude, random_ = row(board, "magnitude"), row(board, "random")
    best = board.best
    assert best in ("taylor", "magnitude")
    tied = "magnitude" if best == "taylor" else "taylor"
    assert row(board, tied)["mark"] == "tied"
    assert random_["mark"] == "" and random_["p_holm"] < 0.05
    # Holm over the two distinct tests (best vs runner-up, best vs random): the smaller p doubles.
    raw = sorted([magnitude["p_value"], random_["p_value"]])
    assert random_["p_holm"] == pytest.approx(min(1.0, 2 * raw[0]))
    assert shown(board, tied)["pruner"] == f"{tied} ≈"


def test_a_named_baseline_is_compared_with_every_row():
    records = seeds("magnitude", (0.85, 0.86, 0.87)) + seeds("taylor", (0.90, 0.91, 0.92)) + seeds("random", (0.70, 0.71, 0.72))
    board = only_board(records, baseline="random")
    assert set(board.stats["baseline"].dropna()) == {"random"}
    assert row(board, "taylor")["delta_vs_baseline_pp"] == pytest.approx(20.0)
    assert math.isnan(row(board, "random")["delta_vs_baseline_pp"])
    assert shown(board, "random")["Δ vs random (pp) ↑"] == "ref"
    assert row(board, "taylor")["mark"] == "best"  # ties and the best do not depend on the baseline


def test_an_unknown_baseline_is_a_user_error():
    with pytest.raises(UserError, match="--baseline magnitde names no pruner"):
        build_leaderboards(seeds("magnitude"), baseline="magnitde")


def test_delta_vs_dense_uses_the_seeds_both_have_and_says_so():
    dense = seeds("none", (0.90, 0.91, 0.92))
    pruned = [make_record("magnitude", 1, 0.89), make_record("magnitude", 2, 0.90), make_record("magnitude", 7, 0.50)]
    board = only_board(dense + pruned)
    magnitude = row(board, "magnitude")
    # seeds 1 and 2 only: (89 - 91 + 90 - 92) / 2; the unpaired means would give 76.33 - 91 = -14.67
    assert magnitude["delta_vs_dense_pp"] == pytest.approx(-2.0)
    assert magnitude["delta_vs_dense_pairs"] == 2
    assert shown(board, "magnitude")[DELTA_DENSE] == "-2.00 (n=2)"
    assert shown(board, "none")[DELTA_DENSE] == "ref"


def test_delta_vs_dense_blank_without_reference():
    board = only_board(seeds("magnitude"))
    assert math.isnan(row(board, "magnitude")["delta_vs_dense_pp"])
    assert shown(board, "magnitude")[DELTA_DENSE] == "-"


def test_the_dense_reference_is_recognised_by_its_flag_not_its_name():
    dense = seeds("unpruned", (0.90, 0.91, 0.92), dense=True, granularity="neurons")
    named_none = seeds("none", (0.80, 0.81, 0.82), dense=False)  # a pruner that happens to be called none
    board = only_board(seeds("magnitude") + dense + named_none)
    assert board.dense == "unpruned"
    assert row(board, "unpruned")["dense_reference"] and not row(board, "none")["dense_reference"]
    assert row(board, "none")["delta_vs_dense_pp"] == pytest.approx(-10.0)
    assert board.best == "magnitude"  # the dense reference is not ranked among the pruners


def test_schema_1_records_fall_back_to_the_name_none_and_join_newer_tables():
    old_dense = seeds("none", (0.90, 0.91, 0.92), schema=1)
    old = seeds("magnitude", schema=1)
    new = seeds("taylor", (0.87, 0.88, 0.89))  # newer records carry settings the old ones lack, at their defaults
    board = only_board(old + old_dense + new)
    assert board.dense == "none"
    assert set(board.stats["pruner"]) == {"magnitude", "taylor", "none"}


# --- grouping and titles -----------------------------------------------------------------------------

def test_grouping_separates_protocols_and_repeats_the_dense_row():
    records = (
        seeds("magnitude")
        + seeds("magnitude", (0.80, 0.81, 0.82), scope="global")
        + seeds("magnitude", (0.70, 0.71, 0.72), prune_rate=0.2)
        + seeds("magnitude", (0.60, 0.61, 0.62), schedule="cubic", target_sparsity=0.9)
        # the dense reference's pruning settings are irrelevant: it joins every table
        + seeds("none", (0.90, 0.91, 0.92), scope="global", granularity="neurons", regrow_every=2)
        # a different training length is a different protocol, with no pruning table to join
        + [make_record("none", 0, 0.85, epochs=10)]
    )
    boards = build_leaderboards(records)
    assert len(boards) == 5
    pruning = [b for b in boards if "magnitude" in set(b.stats["pruner"])]
    assert len(pruning) == 4
    means = sorted(row(b, "magnitude")["test_accuracy_mean_pct"] for b in pruning)
    assert means == pytest.approx([61.0, 71.0, 81.0, 89.0])  # no table mixes scopes, rates or schedules
    for board in pruning:
        assert row(board, "none")["n"] == 3
    titles = {b.title for b in pruning}
    assert "fashion-mnist · fcnn · connections, layer scope · 50 epochs, 10% per event, every 5 epochs" in titles
    assert "fashion-mnist · fcnn · connections, global scope · 50 epochs, 10% per event, every 5 epochs" in titles
    assert "fashion-mnist · fcnn · connections, layer scope · 50 epochs, 20% per event, every 5 epochs" in titles
    assert any("target 90% sparsity (cubic schedule" in t for t in titles)
    (dense,) = [b for b in boards if b not in pruning]
    assert list(dense.stats["pruner"]) == ["none"] and dense.settings["epochs"] == 10
    assert dense.title == "fashion-mnist · fcnn · dense · 10 epochs" and "scope" not in dense.settings


def test_a_target_sparsity_table_is_titled_by_the_target_and_the_rate_it_used():
    board = only_board(seeds("magnitude", target_sparsity=0.5, prune_rate=0.1))
    rate = 1 - 0.5 ** (1 / 9)
    assert board.title.endswith(f"target 50% sparsity ({rate * 100:.3g}% per event, every 5 epochs)")
    assert "10%" not in board.title  # the rate the target overrode is not what ran
    assert "prune_rate" not in board.settings


def test_colliding_titles_name_the_setting_that_differs():
    boards = build_leaderboards(seeds("magnitude") + seeds("magnitude", lr=0.01))
    assert len(boards) == 2
    assert boards[0].title != boards[1].title
    assert any("lr 0.01" in b.title for b in boards)


def test_empty_input_raises_user_error():
    with pytest.raises(UserError, match="bench run") as caught:
        build_leaderboards([], where="results/runs")
    assert "results/runs" in str(caught.value)


# --- sweeps --------------------------------------------------------------------------------------------

def sweep_records() -> list[dict]:
    records = seeds("none", (0.90, 0.91, 0.92))
    for target, drop in ((0.5, 0.0), (0.9, 0.02), (0.98, 0.08)):
        records += seeds("magnitude", [a - drop for a in (0.89, 0.90, 0.91)], target_sparsity=target)
        records += seeds("taylor", [a - drop / 2 for a in (0.885, 0.895, 0.905)], target_sparsity=target)
    return records


def test_a_sweep_is_found_and_summarised_by_final_sparsity():
    boards = build_leaderboards(sweep_records() + seeds("random", lr=0.01))
    sweeps, others = find_sweeps(boards)
    assert len(sweeps) == 1 and len(sweeps[0].boards) == 3 and len(others) == 1
    (section,) = sweep_sections(sweeps)
    assert list(section.display.columns) == ["pruner", "50.0% sparse", "90.0% sparse", "98.0% sparse"]
    cells = section.display.set_index("pruner")
    assert cells.loc["magnitude", "50.0% sparse"].endswith("★")
    assert cells.loc["taylor", "98.0% sparse"].startswith("85.50 ± ") and cells.loc["taylor", "98.0% sparse"].endswith("★")
    assert "none" not in cells.index
    assert any("Dense reference (none): 91.00" in note for note in section.notes)
    tidy = section.tidy
    best = tidy[(tidy["pruner"] == "taylor") & (tidy["target_sparsity"] == 0.98)].iloc[0]
    assert best["mark"] == "best" and best["final_sparsity_pct"] == pytest.approx(98.0)


def test_the_default_view_of_a_folder_with_a_sweep_is_the_summary():
    text = leaderboard_text(sweep_records(), "markdown")
    assert "sweep of final sparsity" in text and "98.0% sparse" in text
    assert "target 50% sparsity" not in text  # per-target tables only with --no-sweep
    tables = leaderboard_text(sweep_records(), "markdown", sweep=False)
    assert tables.count("## ") == 3 and "target 50% sparsity" in tables
    with pytest.raises(UserError, match="no sweep"):
        leaderboard_text(seeds("magnitude"), "markdown", sweep=True)


# --- formats ----------------------------------------------------------------------------------------------

@pytest.fixture
def boards():
    """Magnitude (89.00 %) against a dense reference (91.00 %), one table."""
    return build_leaderboards(seeds("magnitude") + seeds("none", (0.90, 0.91, 0.92)))


@pytest.mark.parametrize("fmt, accuracy_text, heading", [
    ("markdown", "89.00 ± 2.48", "## fashion-mnist"),
    ("github", "89.00 ± 2.48", "## fashion-mnist"),
    ("latex", r"89.00\,$\pm$\,2.48", r"\caption{fashion-mnist"),
    ("html", "89.00 ± 2.48", "<h2>fashion-mnist"),
])
def test_text_formats_show_title_and_numbers(boards, fmt, accuracy_text, heading):
    text = render(table_sections(boards), fmt)
    assert accuracy_text in text and heading in text
    assert "-2.00" in text


def test_csv_is_tidy_and_round_trips_through_pandas():
    records = seeds("magnitude", metrics={"sparsity": 0.09999999999999998}) + seeds("none", (0.90, 0.91, 0.92))
    boards = build_leaderboards(records)
    text = render(table_sections(boards), "csv")
    assert not any(line.startswith("#") for line in text.splitlines())
    frame = pd.read_csv(io.StringIO(text))
    assert len(frame) == 2 and {"table", "dataset", "epochs", "scope", "pruner", "n"} <= set(frame.columns)
    magnitude = frame.set_index("pruner").loc["magnitude"]
    assert magnitude["test_accuracy_mean_pct"] == 89.0 and magnitude["test_accuracy_std_pct"] == 1.0
    assert magnitude["delta_vs_dense_pp"] == -2.0
    assert magnitude["sparsity_pct"] == 10.0  # rounded: not 9.999999999999998
    assert "9.99999" not in text
    assert magnitude["dataset"] == "fashion-mnist" and magnitude["scope"] == "layer"


def test_json_holds_the_same_rows_as_the_csv(boards):
    rows = json.loads(render(table_sections(boards), "json"))
    frame = pd.read_csv(io.StringIO(render(table_sections(boards), "csv")))
    assert [r["pruner"] for r in rows] == list(frame["pruner"])
    magnitude = next(r for r in rows if r["pruner"] == "magnitude")
    assert magnitude["test_accuracy_mean_pct"] == 89.0 and magnitude["peak_memory_mb"] is None
    assert magnitude["scope"] == "layer" and magnitude["target_sparsity"] is None
    assert set(rows[0]) == set(frame.columns)


@pytest.mark.parametrize("fmt", FORMATS)
def test_columns_choose_the_columns_of_every_format(boards, fmt):
    text = leaderboard_text(boards[0].runs, fmt, columns=["pruner", "test_accuracy", "prune_seconds"])
    if fmt == "csv":
        assert list(pd.read_csv(io.StringIO(text)).columns) == [
            "pruner", "mark", "test_accuracy_mean_pct", "test_accuracy_ci95_pct", "prune_seconds"]
    elif fmt == "json":
        assert set(json.loads(text)[0]) == {"pruner", "mark", "test_accuracy_mean_pct", "test_accuracy_ci95_pct", "prune_seconds"}
    else:
        assert "prune" in text and "sparsity" not in text and "Δ vs dense" not in text


def test_unknown_column_is_a_user_error(boards):
    with pytest.raises(UserError, match="Unknown column 'acuracy'.*test_accuracy"):
        table_sections(boards, ["pruner", "acuracy"])


def test_all_columns_include_the_optional_metrics_present():
    extra = {"compression_ratio": 2.58, "latency_ms_batch1": 0.05, "train_energy_joules": None}
    board = only_board(seeds("magnitude") + [make_record("random", 0, 0.5, metrics=extra)])
    (section,) = table_sections([board], ["all"])
    assert {"compression (×) ↑", "latency b1 (ms) ↓", "prune (s) ↓"} <= set(section.display.columns)
    assert "train energy (J) ↓" not in section.display.columns  # present but null everywhere
    assert section.display.set_index(section.display["pruner"].str.split(" ").str[0]).loc["random", "compression (×) ↑"] == "2.58"


def test_latex_uses_booktabs_with_few_enough_columns(boards):
    text = render(table_sections(boards), "latex")
    assert r"\toprule" in text and r"\midrule" in text and r"\bottomrule" in text and r"\hline" not in text
    assert "booktabs" in text
    (spec,) = [line for line in text.splitlines() if line.startswith(r"\begin{tabular}{")]
    assert spec == r"\begin{tabular}{l" + "r" * (len(DEFAULT_COLUMNS) - 1) + "}"


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="needs pdflatex (and booktabs)")
def test_the_default_latex_table_fits_an_article_page(tmp_path):
    records = sweep_records()
    records += [make_record("contribution", s, 0.8812, target_sparsity=0.9) for s in (0, 1)]  # n=2 against n=3
    text = leaderboard_text(records, "latex", sweep=False)
    (tmp_path / "tables.tex").write_text(text)
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}"
                                      "\\input{tables}\\end{document}\n")
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "doc.tex"], cwd=tmp_path, capture_output=True, check=True)
    log = (tmp_path / "doc.log").read_text(errors="replace")
    assert "Overfull \\hbox" not in log


def test_html_is_a_complete_well_formed_page(boards):
    text = render(table_sections(boards), "html")
    assert text.startswith("<!DOCTYPE html>") and '<meta charset="utf-8" />' in text
    parser = well_formed(text)
    assert parser.seen[:3] == ["html", "head", "meta"] and "body" in parser.seen and "table" in parser.seen


def test_per_seed_view_lists_every_run_and_its_distance_from_the_mean():
    failed = make_record("magnitude", 3, None, status="failed")
    board = only_board(seeds("magnitude", (0.88, 0.89, 0.95)) + [failed])
    (section,) = per_seed_sections([board])
    assert list(section.display["seed"]) == ["0", "1", "2", "3"]
    assert list(section.display["status"]) == ["ok", "ok", "ok", "failed"]
    assert section.display["vs mean (pp)"].iloc[2] == "+4.33"  # the outlier
    assert section.tidy["deviation_pp"].iloc[2] == pytest.approx(4.333, abs=1e-3)
    assert section.tidy["error"].iloc[3] == "ValueError: scores contain NaN"
    assert any(failed["run_id"] in note for note in section.notes)


def test_unknown_format_raises_user_error(boards):
    assert "yaml" not in FORMATS
    with pytest.raises(UserError, match="markdown"):
        render(table_sections(boards), "yaml")
