"""The researcher's path through the CLI, on synthetic data, on the CPU."""

import json

import pytest
from typer.testing import CliRunner

from bench_harness import hookimpl
from bench_harness.cli import app
from bench_harness.plugins import registered_plugin, registries
from bench_harness.pruner import Pruner

runner = CliRunner()
FAST = ["--dataset", "synthetic", "--epochs", "3", "--prune-every", "1", "--prune-rate", "0.3", "--device", "cpu"]


def records(results):
    return [json.loads(path.read_text()) for path in sorted((results / "runs").glob("*.json"))]


def test_run_all_writes_one_complete_record_per_run_and_a_leaderboard(tmp_path):
    result = runner.invoke(app, ["run", "--all", "--seeds", "2", *FAST, "--results", str(tmp_path)])
    assert result.exit_code == 0, result.output
    found = records(tmp_path)
    # --all runs the methods, not their ablation variants (those run when named).
    builtins = {name for name in registries().pruners.names() if registries().pruners.get(name).variant_of is None}
    assert {"contribution-taylor-drop", "contribution-grow-gradient"} <= set(registries().pruners.names()) - builtins
    assert len(found) == 2 * len(builtins)
    assert {r["pruner"] for r in found} == builtins
    for record in found:
        assert record["dense_reference"] == (record["pruner"] == "none")
        assert record["plugins"]["pruner"]["distribution"] == "bench-harness"
        assert len(record["events"]) == (0 if record["pruner"] == "none" else 2)
        assert record["status"] == "ok" and record["error"] is None
        assert record["config"]["epochs"] == 3 and record["config_hash"]
        metrics = record["metrics"]
        for key in ("test_accuracy", "params_total", "params_nonzero", "sparsity", "train_seconds", "inference_seconds", "peak_memory_mb"):
            assert key in metrics
        assert metrics["engine"] == "eager" and metrics["capture_seconds"] == 0.0  # the CPU captures nothing
        assert [h["epoch"] for h in record["history"]] == [1, 2, 3]
        assert set(record["history"][0]) >= {"train_loss", "val_accuracy", "sparsity"}
        assert set(record["telemetry"]) >= {"train", "inference"}
        assert record["environment"]["torch"] and record["environment"]["bench_harness"]
        expected_sparsity = 0.0 if record["pruner"] == "none" else 1 - 0.7**2
        assert metrics["sparsity"] == pytest.approx(expected_sparsity, abs=0.002)
        assert metrics["params_nonzero"] < metrics["params_total"] or record["pruner"] == "none"
    dense = [r["metrics"]["test_accuracy"] for r in found if r["pruner"] == "none"]
    assert min(dense) > 0.5  # synthetic data is learnable: the harness really trains

    board = runner.invoke(app, ["leaderboard", "--results", str(tmp_path), "--format", "markdown"])
    assert board.exit_code == 0, board.output
    for name in builtins:
        assert f"| {name}" in board.output
    output = tmp_path / "board.csv"
    assert runner.invoke(app, ["leaderboard", "--results", str(tmp_path), "--format", "csv", "--output", str(output)]).exit_code == 0
    assert "magnitude" in output.read_text()


def test_a_rerun_skips_complete_runs_and_force_redoes_them(tmp_path):
    args = ["run", "--pruner", "magnitude", "--seeds", "1", *FAST, "--results", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0
    (path,) = (tmp_path / "runs").glob("*.json")
    first = path.read_text()
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "1 already complete" in again.output
    assert path.read_text() == first
    forced = runner.invoke(app, [*args, "--force"])
    assert forced.exit_code == 0 and "1 run(s) completed" in forced.output
    assert json.loads(path.read_text())["started_at"] >= json.loads(first)["started_at"]
    changed = runner.invoke(app, [*args[:-2], "--lr", "0.002", "--results", str(tmp_path)])
    assert "1 run(s) completed" in changed.output  # another config hash is another run
    assert len(list((tmp_path / "runs").glob("*.json"))) == 2


class ExplodingPruner(Pruner):
    name = "exploding"
    description = "Fails at its first pruning event (for tests)."

    def score(self, layer, granularity):
        raise RuntimeError("boom at the first event")


class ExplodingPlugin:
    __name__ = "exploding_plugin"

    @hookimpl
    def register_pruners(self, register):
        register(ExplodingPruner)


def test_a_failing_run_is_recorded_and_the_others_go_on(tmp_path):
    with registered_plugin(ExplodingPlugin(), "exploding"):
        result = runner.invoke(app, ["run", "--pruner", "exploding", "--pruner", "magnitude", "--seeds", "1", *FAST, "--results", str(tmp_path)])
    assert result.exit_code == 1
    by_pruner = {r["pruner"]: r for r in records(tmp_path)}
    assert by_pruner["exploding"]["status"] == "failed"
    assert by_pruner["exploding"]["error"] == "RuntimeError: boom at the first event (raised by the pruner plugin exploding_plugin)"
    assert by_pruner["magnitude"]["status"] == "ok"
    assert "1 failed" in result.output
    board = runner.invoke(app, ["leaderboard", "--results", str(tmp_path)])
    assert "exploding" in board.output and "boom" in board.output  # reported, not averaged


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--pruner", "magnitde", "--dataset", "synthetic"], "Did you mean 'magnitude'"),
        (["run", "--pruner", "magnitude", "--dataset", "synthetic", "--scope", "galaxy"], "--scope must be one of"),
        (["run", "--pruner", "magnitude", "--dataset", "synthetic", "--prune-rate", "1.5"], "--prune-rate must be in"),
        (["run", "--pruner", "magnitude"], "Name a dataset"),
        (["leaderboard", "--results", "nowhere-at-all"], "No finished runs"),
        (["leaderboard", "--format", "docx"], "--format must be one of"),
        (["run", "--pruner", "magnitude", "--dataset", "synthetic", "--schedule", "linear"], "--schedule must be one of"),
        (["run", "--pruner", "magnitude", "--dataset", "synthetic", "--scope", "erk", "--granularity", "neurons"], "--scope erk"),
        (["run", "--pruner", "magnitude", "--dataset", "synthetic", "--epochs", "10", "--prune-start", "10"], "--prune-start must be"),
        (["run", "--pruner", "magnitude", "--dataset", "synthetic", "--prune-start", "20", "--prune-end", "10"], "--prune-end (10)"),
        (["run", "--pruner", "rigl", "--dataset", "synthetic", "--regrow-fraction", "1"], "--regrow-fraction must be"),
        (["run", "--pruner", "rigl", "--dataset", "synthetic", "--regrow-every", "-1"], "--regrow-every must not"),
        (["run", "--pruner", "magnitude", "--dataset", "synthetic", "--lr", "inf"], "--lr must be a positive finite"),
    ],
)
def test_user_mistakes_get_one_sentence_and_exit_code_2(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_offline_without_files_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_HARNESS_DATA", str(tmp_path / "cache"))
    import socket

    def no_network(*args, **kwargs):  # torchvision's real download code runs and fails as it would offline
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    result = runner.invoke(app, ["run", "--pruner", "none", "--dataset", "mnist", "--epochs", "1", "--device", "cpu", "--results", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert str(tmp_path / "cache") in result.output.replace("\n", "")


def test_same_seed_same_result(tmp_path):
    for folder in ("a", "b"):
        assert runner.invoke(app, ["run", "--pruner", "random", "--pruner", "contribution", "--seeds", "1", *FAST, "--results", str(tmp_path / folder)]).exit_code == 0
    first, second = records(tmp_path / "a"), records(tmp_path / "b")
    for one, two in zip(first, second):
        assert one["metrics"]["test_accuracy"] == two["metrics"]["test_accuracy"]
        assert [h["train_loss"] for h in one["history"]] == [h["train_loss"] for h in two["history"]]
        assert one["metrics"]["params_nonzero"] == two["metrics"]["params_nonzero"]


def test_neuron_pruning_records_a_measured_compact_model_and_saves_it(tmp_path):
    import torch

    args = ["run", "--pruner", "magnitude", "--seeds", "1", *FAST, "--granularity", "neurons", "--save-models", "--results", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0
    (record,) = records(tmp_path)
    metrics = record["metrics"]
    assert metrics["compact_params"] == metrics["compact_params_from_masks"] < metrics["params_total"]
    assert metrics["compact_flops"] == metrics["flops_effective"] < metrics["flops_dense"]
    assert metrics["compact_speedup"] > 0 and metrics["latency_ms_batch1"] > 0 and metrics["throughput_batch_size"] == 1024
    assert metrics["compression_ratio"] == pytest.approx(metrics["params_total"] / metrics["params_nonzero"])
    assert metrics["train_energy_joules"] is None and record["telemetry"] == {"train": None, "inference": None}  # no GPU here
    compact = torch.load(record["model_file"], weights_only=False)  # plain torch, no bench_harness class needed
    assert sum(p.numel() for p in compact.parameters()) == metrics["compact_params"]
    assert compact(torch.zeros(2, 1, 16, 16)).shape == (2, 10)


def test_a_diverging_run_is_recorded_as_failed_and_the_next_run_goes_on(tmp_path):
    result = runner.invoke(app, ["run", "--pruner", "none", "--pruner", "magnitude", "--seeds", "1", *FAST, "--lr", "1e20", "--results", str(tmp_path)])
    assert result.exit_code == 1
    found = records(tmp_path)
    assert len(found) == 2 and all(r["status"] == "failed" for r in found)
    assert all("diverged" in r["error"] for r in found)


def test_the_dense_reference_is_trained_once_whatever_the_pruning_settings(tmp_path):
    base = ["run", "--pruner", "none", "--pruner", "magnitude", "--seeds", "2", *FAST, "--results", str(tmp_path)]
    assert runner.invoke(app, base).exit_code == 0
    again = runner.invoke(app, [*base, "--granularity", "neurons", "--scope", "global"])
    assert "2 already complete" in again.output  # the two dense seeds
    board = runner.invoke(app, ["leaderboard", "--results", str(tmp_path), "--format", "json"])
    rows = json.loads(board.stdout)
    dense_rows = [row for row in rows if row["pruner"] == "none"]
    assert len({row["table"] for row in rows}) == 2 and len(dense_rows) == 2 and all(row["n"] == 2 for row in dense_rows)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--pruner", "magnitude", "--epochs", "3", "--prune-every", "5"], "leaves no pruning event"),
        (["--pruner", "magnitude", "--epochs", "3", "--prune-every", "3", "--target-sparsity", "0.9"], "leaves no pruning event"),
    ],
)
def test_a_pruning_run_without_any_pruning_event_is_refused(args, message):
    result = runner.invoke(app, ["run", *args, "--dataset", "synthetic"])
    assert result.exit_code == 2 and message in result.output


def test_a_sparsity_sweep_gives_one_table_per_target_and_trains_the_dense_reference_once(tmp_path):
    result = runner.invoke(app, ["run", "--pruner", "none", "--pruner", "magnitude", "--seeds", "1", "--dataset", "synthetic",
                                 "--epochs", "3", "--prune-every", "1", "--device", "cpu", "--target-sparsity", "0.5",
                                 "--target-sparsity", "0.9", "--results", str(tmp_path)])
    assert result.exit_code == 0, result.output
    found = records(tmp_path)
    assert sorted(r["pruner"] for r in found) == ["magnitude", "magnitude", "none"]
    sparsities = sorted(r["metrics"]["sparsity"] for r in found if r["pruner"] == "magnitude")
    assert sparsities == [pytest.approx(0.5, abs=0.01), pytest.approx(0.9, abs=0.01)]
    rows = json.loads(runner.invoke(app, ["leaderboard", "--results", str(tmp_path), "--format", "json"]).stdout)
    tables = {row["table"] for row in rows}
    assert len(tables) == 2 and all({row["pruner"] for row in rows if row["table"] == table} == {"none", "magnitude"} for table in tables)


def test_the_default_validation_size_spelt_out_is_the_same_run(tmp_path):
    base = ["run", "--pruner", "none", "--seeds", "1", *FAST, "--results", str(tmp_path)]
    assert runner.invoke(app, base).exit_code == 0
    spelt_out = runner.invoke(app, [*base, "--val-size", "200"])  # synthetic: a tenth of 2,000 images
    assert spelt_out.exit_code == 0 and "1 already complete" in spelt_out.output
    different = runner.invoke(app, [*base, "--val-size", "300"])
    assert different.exit_code == 0 and "0 already complete" in different.output
    assert sorted(record["metrics"]["val_images"] for record in records(tmp_path)) == [200, 300]


def test_a_cubic_schedule_with_a_target_ends_exactly_there_under_every_allocation(tmp_path):
    for scope in ("global", "erk", "lamp"):
        args = ["run", "-p", "magnitude", "--seeds", "1", *FAST, "--schedule", "cubic", "--target-sparsity", "0.9",
                "--scope", scope, "--results", str(tmp_path / scope)]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        (record,) = records(tmp_path / scope)
        events = record["events"]
        assert [event["epoch"] for event in events] == [1, 2] and events[-1]["target_density"] == pytest.approx(0.1)
        prunable = sum(events[0]["alive_weights_before"].values())
        expected = round(0.1 * prunable) if scope != "erk" else sum(events[-1]["alive_weights_after"].values())
        assert sum(events[-1]["alive_weights_after"].values()) == expected
        assert record["metrics"]["sparsity"] == pytest.approx(0.9, abs=0.001)


def test_a_record_made_by_another_plugin_version_is_run_again(tmp_path):
    args = ["run", "--pruner", "magnitude", "--seeds", "1", *FAST, "--results", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0
    (path,) = (tmp_path / "runs").glob("*.json")
    record = json.loads(path.read_text())
    record["plugins"]["pruner"]["version"] = "0.0.1"
    path.write_text(json.dumps(record))
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "1 run(s) completed, 0 already complete" in again.output
    assert json.loads(path.read_text())["plugins"]["pruner"]["version"] == record["environment"]["bench_harness"]


def test_a_regrowing_pruner_swaps_between_events_and_records_it(tmp_path):
    args = ["run", "-p", "rigl", "-p", "magnitude", "--seeds", "1", "--dataset", "synthetic", "--epochs", "6", "--prune-every", "3",
            "--prune-start", "1", "--regrow-every", "1", "--device", "cpu", "--results", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0
    by_pruner = {r["pruner"]: r for r in records(tmp_path)}
    kinds = [(event["epoch"], event["kind"]) for event in by_pruner["rigl"]["events"]]
    assert kinds == [(1, "prune"), (2, "regrow"), (3, "regrow"), (4, "prune")]
    assert sum(by_pruner["rigl"]["events"][1]["regrown"].values()) > 0
    assert [event["kind"] for event in by_pruner["magnitude"]["events"]] == ["prune", "prune"]
    assert by_pruner["magnitude"]["config"]["regrow_every"] == 0  # a pruner that never regrows ignores it: one hash


def test_an_ablation_variant_runs_when_named_and_never_with_all(tmp_path):
    class WithoutSquares(Pruner):
        name = "magnitude-unsquared"
        description = "|w| instead of w² (an ablation for the test)"
        variant_of = "magnitude"

        def score(self, layer, granularity):
            return layer.weight.detach().abs()

    class Plugin:
        __name__ = "ablations_for_a_test"

        @hookimpl
        def register_pruners(self, register):
            register(WithoutSquares)

    with registered_plugin(Plugin(), "ablations"):
        listing = runner.invoke(app, ["list"])
        assert "variant of magnitude" in listing.output
        everything = runner.invoke(app, ["run", "--all", "--seeds", "1", *FAST, "--epochs", "2", "--results", str(tmp_path / "all")])
        assert everything.exit_code == 0, everything.output
        assert "magnitude-unsquared" not in {r["pruner"] for r in records(tmp_path / "all")}
        named = runner.invoke(app, ["run", "-p", "magnitude-unsquared", "--seeds", "1", *FAST, "--results", str(tmp_path / "named")])
        assert named.exit_code == 0 and [r["pruner"] for r in records(tmp_path / "named")] == ["magnitude-unsquared"]
