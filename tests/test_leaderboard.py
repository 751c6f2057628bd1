"""Tests for the leaderboard: seed statistics, grouping by protocol, failures, and every format."""

from __future__ import annotations

import io
import json
import math

import pandas as pd
import pytest

from bench_harness import leaderboard
from bench_harness.errors import UserError
from bench_harness.leaderboard import (
    ACCURACY_HEADER,
    CI_HEADER,
    DELTA_HEADER,
    FORMATS,
    build_leaderboards,
    render,
    t_critical_95,
)


def make_record(pruner: str, seed: int, accuracy: float | None, status: str = "ok", metrics: dict | None = None,
                **config_changes) -> dict:
    """A run record in the store's schema; config settings can be overridden by keyword."""
    config = {
        "pruner": pruner, "dataset": "fashion-mnist", "model": "fcnn", "seed": seed, "epochs": 50,
        "batch_size": 64, "lr": 0.001, "prune_every": 5, "prune_rate": 0.1, "target_sparsity": None,
        "granularity": "connections", "scope": "layer", "val_size": 5000, "augment": False, "device": "cpu",
    }
    config.update(config_changes)
    run_metrics = {
        "test_accuracy": accuracy, "val_accuracy": accuracy, "params_total": 266610, "params_nonzero": 103386,
        "sparsity": 0.0 if pruner == "none" else 0.613, "train_seconds": 12.3, "prune_seconds": 0.05,
        "inference_seconds": 0.01, "peak_memory_mb": None,
    }
    run_metrics.update(metrics or {})
    suffix = "-".join(f"{k}{v}" for k, v in sorted(config_changes.items()))
    return {
        "schema_version": 1,
        "run_id": f"{config['dataset']}-{pruner}-s{seed}-{suffix}",
        "pruner": pruner, "dataset": config["dataset"], "model": config["model"], "seed": seed,
        "config": config, "config_hash": "0" * 16, "status": status,
        "error": "ValueError: scores contain NaN" if status == "failed" else None,
        "metrics": run_metrics if status == "ok" else {**run_metrics, "test_accuracy": None},
        "history": [], "telemetry": {"train": None, "inference": None},
        "environment": {"python": "3.11.7", "device": "cpu"},
    }


def three_seeds(pruner: str, accuracies=(0.88, 0.89, 0.90), **config_changes) -> list[dict]:
    """One record per accuracy, seeds 0, 1, 2."""
    return [make_record(pruner, seed, acc, **config_changes) for seed, acc in enumerate(accuracies)]


def row(board, pruner: str) -> pd.Series:
    """The numeric stats row of one pruner."""
    return board.stats.set_index("pruner").loc[pruner]


def only_board(records: list[dict]):
    """Build leaderboards and check that exactly one table came out."""
    boards = build_leaderboards(records)
    assert len(boards) == 1
    return boards[0]


def test_mean_std_and_confidence_interval_for_known_accuracies():
    board = only_board(three_seeds("magnitude"))
    stats = row(board, "magnitude")
    assert stats["n"] == 3
    assert stats["test_accuracy_mean_pct"] == pytest.approx(89.0)
    assert stats["test_accuracy_std_pct"] == pytest.approx(1.0)  # sample std of 88, 89, 90
    # t(0.975, df=2) = 4.303; half-width = t * std / sqrt(n)
    assert stats["test_accuracy_ci95_pct"] == pytest.approx(4.303 / math.sqrt(3), abs=1e-3)
    shown = board.table.set_index("pruner").loc["magnitude"]
    assert shown[ACCURACY_HEADER] == "89.00 ± 1.00"
    assert shown[CI_HEADER] == "2.48"


def test_t_table_is_used_without_scipy(monkeypatch):
    monkeypatch.setattr(leaderboard, "_scipy_t", lambda: None)
    assert t_critical_95(1) == 12.706
    assert t_critical_95(10) == 2.228
    assert t_critical_95(30) == 2.042
    assert t_critical_95(31) == 1.96
    with pytest.raises(ValueError):
        t_critical_95(0)


def test_t_table_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df, value in enumerate(leaderboard._T_95, start=1):
        assert value == pytest.approx(stats.t.ppf(0.975, df), abs=5e-4)


def test_single_seed_leaves_spread_empty():
    board = only_board([make_record("magnitude", 0, 0.8878)])
    stats = row(board, "magnitude")
    assert stats["test_accuracy_mean_pct"] == pytest.approx(88.78)
    assert math.isnan(stats["test_accuracy_std_pct"]) and math.isnan(stats["test_accuracy_ci95_pct"])
    shown = board.table.set_index("pruner").loc["magnitude"]
    assert shown[ACCURACY_HEADER] == "88.78"
    assert shown[CI_HEADER] == "-"


def test_rows_sorted_by_mean_accuracy_best_first():
    records = (three_seeds("random", (0.70, 0.71, 0.72)) + three_seeds("taylor", (0.90, 0.91, 0.92))
               + three_seeds("magnitude", (0.85, 0.86, 0.87)))
    board = only_board(records)
    assert list(board.table["pruner"]) == ["taylor", "magnitude", "random"]
    assert list(board.stats["pruner"]) == ["taylor", "magnitude", "random"]


def test_change_vs_none_in_percentage_points():
    board = only_board(three_seeds("magnitude") + three_seeds("none", (0.90, 0.91, 0.92)))
    assert row(board, "magnitude")["delta_vs_none_pp"] == pytest.approx(-2.0)
    assert row(board, "none")["delta_vs_none_pp"] == pytest.approx(0.0)
    shown = board.table.set_index("pruner")
    assert shown.loc["magnitude", DELTA_HEADER] == "-2.00"
    assert shown.loc["none", DELTA_HEADER] == "+0.00"  # signed, so gains and losses read alike


def test_change_vs_none_blank_without_reference():
    board = only_board(three_seeds("magnitude"))
    assert math.isnan(row(board, "magnitude")["delta_vs_none_pp"])
    assert board.table.set_index("pruner").loc["magnitude", DELTA_HEADER] == "-"


def test_grouping_separates_protocols_and_repeats_the_none_row():
    records = (
        three_seeds("magnitude")
        + three_seeds("magnitude", (0.80, 0.81, 0.82), scope="global")
        + three_seeds("magnitude", (0.70, 0.71, 0.72), prune_rate=0.2)
        # the dense reference's pruning settings are irrelevant: it joins all three tables
        + three_seeds("none", (0.90, 0.91, 0.92), scope="global", granularity="neurons")
        # a different training length is a different protocol, with no pruning table to join
        + [make_record("none", 0, 0.85, epochs=10)]
    )
    boards = build_leaderboards(records)
    assert len(boards) == 4
    pruning = [b for b in boards if "magnitude" in set(b.stats["pruner"])]
    assert len(pruning) == 3
    means = sorted(row(b, "magnitude")["test_accuracy_mean_pct"] for b in pruning)
    assert means == pytest.approx([71.0, 81.0, 89.0])  # no table mixes scopes or rates
    for board in pruning:
        assert row(board, "none")["n"] == 3
        assert row(board, "none")["test_accuracy_mean_pct"] == pytest.approx(91.0)
    scopes = {b.settings["scope"] for b in pruning}
    assert scopes == {"layer", "global"}
    titles = {b.title for b in pruning}
    assert "fashion-mnist · fcnn · connections, layer scope · 50 epochs, 10% per event every 5" in titles
    assert "fashion-mnist · fcnn · connections, layer scope · 50 epochs, 20% per event every 5" in titles
    (dense,) = [b for b in boards if b not in pruning]
    assert list(dense.stats["pruner"]) == ["none"] and dense.settings["epochs"] == 10
    assert "dense" in dense.title and "scope" not in dense.settings


def test_only_none_runs_form_their_own_table():
    board = only_board(three_seeds("none"))
    assert list(board.stats["pruner"]) == ["none"]
    assert board.title == "fashion-mnist · fcnn · dense · 50 epochs"


def test_colliding_titles_name_the_setting_that_differs():
    boards = build_leaderboards(three_seeds("magnitude") + three_seeds("magnitude", lr=0.01))
    assert len(boards) == 2
    assert boards[0].title != boards[1].title
    assert any("lr 0.01" in b.title for b in boards)


def test_failed_runs_excluded_from_statistics_and_listed():
    failed = make_record("magnitude", 3, 0.10, status="failed")
    failed["metrics"]["train_seconds"] = 9999.0
    board = only_board(three_seeds("magnitude") + [failed])
    stats = row(board, "magnitude")
    assert stats["n"] == 3
    assert stats["test_accuracy_mean_pct"] == pytest.approx(89.0)
    assert stats["train_seconds"] == pytest.approx(12.3)
    assert board.failed == [failed["run_id"]]
    assert board.errors[failed["run_id"]] == "ValueError: scores contain NaN"
    text = render([board], "markdown")
    assert failed["run_id"] in text and "ValueError: scores contain NaN" in text
    assert failed["run_id"] in render([board], "csv")
    assert json.loads(render([board], "json"))[0]["failed"][0]["run_id"] == failed["run_id"]


def test_table_of_only_failed_runs_still_reports_them():
    board = only_board([make_record("taylor", 0, None, status="failed")])
    assert board.table.empty and board.failed


@pytest.fixture
def boards():
    """Magnitude (89.00 ± 1.00 %) against a dense reference (91.00 %), one table."""
    return build_leaderboards(three_seeds("magnitude") + three_seeds("none", (0.90, 0.91, 0.92)))


@pytest.mark.parametrize("fmt, accuracy_text", [
    ("markdown", "89.00 ± 1.00"),
    ("github", "89.00 ± 1.00"),
    ("latex", r"89.00 $\pm$ 1.00"),
    ("html", "89.00 ± 1.00"),
])
def test_text_formats_show_title_and_numbers(boards, fmt, accuracy_text):
    text = render(boards, fmt)
    assert accuracy_text in text
    assert "-2.00" in text and "103,386" in text
    heading = {"markdown": "## fashion-mnist", "github": "## fashion-mnist",
               "latex": r"\subsection*{fashion-mnist", "html": "<h2>fashion-mnist"}[fmt]
    assert heading in text


def test_markdown_is_a_pipe_table_with_units(boards):
    text = render(boards, "markdown")
    assert "|:--" in text  # pipe tables carry alignment colons
    assert "test acc (%) ↑" in text and "train (s) ↓" in text


def test_json_round_trips_with_numeric_rows(boards):
    payload = json.loads(render(boards, "json"))
    assert payload[0]["title"] == boards[0].title
    assert payload[0]["settings"]["scope"] == "layer"
    rows = {r["pruner"]: r for r in payload[0]["rows"]}
    assert rows["magnitude"]["test_accuracy_mean_pct"] == pytest.approx(89.0)
    assert rows["magnitude"]["test_accuracy_std_pct"] == pytest.approx(1.0)
    assert rows["magnitude"]["peak_memory_mb"] is None


def test_csv_round_trips_through_pandas(boards):
    text = render(boards, "csv")
    assert text.startswith(f"# {boards[0].title}\n")
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    frame = pd.read_csv(io.StringIO(body)).set_index("pruner")
    assert frame.loc["magnitude", "test_accuracy_mean_pct"] == pytest.approx(89.0)
    assert frame.loc["magnitude", "test_accuracy_std_pct"] == pytest.approx(1.0)
    assert frame.loc["magnitude", "delta_vs_none_pp"] == pytest.approx(-2.0)


def test_optional_columns_only_when_present():
    plain = only_board(three_seeds("magnitude"))
    assert "compression (×) ↑" not in plain.table.columns
    assert "compression_ratio" not in plain.stats.columns
    extra = {"compression_ratio": 2.58, "latency_ms_batch1": 0.05, "throughput_per_second": 1.5e5, "inference_energy_joules": 2.5,
             "train_energy_joules": None}
    records = three_seeds("magnitude") + [make_record("random", 0, 0.5, metrics=extra)]
    board = only_board(records)
    assert {"compression (×) ↑", "latency b1 (ms) ↓", "throughput (img/s) ↑", "inference energy (J) ↓"} <= set(board.table.columns)
    assert "train energy (J) ↓" not in board.table.columns  # present but null everywhere
    shown = board.table.set_index("pruner")
    assert shown.loc["random", "compression (×) ↑"] == "2.58"
    assert shown.loc["magnitude", "compression (×) ↑"] == "-"


def test_empty_input_raises_user_error():
    with pytest.raises(UserError, match="bench run") as caught:
        build_leaderboards([], where="results/runs")
    assert "results/runs" in str(caught.value)


def test_unknown_format_raises_user_error(boards):
    assert "yaml" not in FORMATS
    with pytest.raises(UserError, match="markdown"):
        render(boards, "yaml")
