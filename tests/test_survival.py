"""Runs that survive anything: interruption inside a run, two commands on one folder, plugin faults,
sabotage, and a damaged results folder; with real processes where it matters (kill -9, two bench runs)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bench_harness import hookimpl, progress
from bench_harness.cli import app
from bench_harness.plugins import registered_plugin
from bench_harness.pruner import Pruner
from bench_harness_plugins.magnitude import MagnitudePruner

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent
QUICK = ["--dataset", "synthetic", "--device", "cpu", "--batch-size", "256", "--seeds", "1"]
RESUMABLE = [*QUICK, "--epochs", "5", "--prune-every", "2", "--checkpoint-every", "1"]  # events after 2 and 4; checkpoints between


def records(results):
    return {r["pruner"]: r for r in (json.loads(p.read_text()) for p in sorted((results / "runs").glob("*.json")))}


def without_times(record):
    """What a run computed: everything but clocks, dates, the environment and the resumption note."""
    timing = {"train_seconds", "prune_seconds", "inference_seconds", "capture_seconds", "latency_ms_batch1",
              "throughput_per_second", "compact_latency_ms_batch1", "compact_throughput_per_second", "compact_speedup",
              "compact_speedup_batch1", "dense_latency_ms_batch1", "dense_throughput_per_second"}
    metrics = {k: v for k, v in record["metrics"].items() if k not in timing and "latency" not in k and "throughput" not in k}
    events = [{k: v for k, v in event.items() if k != "seconds"} for event in record["events"]]
    return {"metrics": metrics, "history": record["history"], "events": events, "flags": record["flags"],
            "status": record["status"], "config_hash": record["config_hash"], "started_at": None}


def same_weights(first, second):
    a = torch.load(first["model_file"], weights_only=False).state_dict()
    b = torch.load(second["model_file"], weights_only=False).state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_an_interrupted_grid_resumes_inside_its_runs_bit_for_bit(tmp_path, monkeypatch):
    args = ["run", "-p", "contribution", "-p", "random", *RESUMABLE, "--concurrency", "2", "--augment", "--save-models"]
    assert runner.invoke(app, [*args, "--results", str(tmp_path / "whole")]).exit_code == 0
    shown = progress.GridProgress.epoch_done

    def ctrl_c_after(epoch):
        def epoch_done(self, report):
            shown(self, report)
            if report.epoch == epoch:
                raise KeyboardInterrupt

        return epoch_done

    folder = tmp_path / "interrupted"
    for epoch in (2, 4):  # Ctrl-C during epoch 2, then (resumed) during epoch 4
        monkeypatch.setattr(progress.GridProgress, "epoch_done", ctrl_c_after(epoch))
        stopped = runner.invoke(app, [*args, "--results", str(folder)])
        assert stopped.exit_code == 130 and "Traceback" not in stopped.output
        assert "run the same command again to resume" in stopped.stderr
        assert not list((folder / "runs").glob("*.json")) and len(list((folder / "checkpoints").glob("*.pt"))) == 2
    monkeypatch.setattr(progress.GridProgress, "epoch_done", shown)
    finished = runner.invoke(app, [*args, "--results", str(folder)])
    assert finished.exit_code == 0 and "2 run(s) completed (2 resumed from a checkpoint)" in finished.output
    assert list((folder / "checkpoints").iterdir()) == [] and list((folder / "claims").iterdir()) == []
    whole, resumed = records(tmp_path / "whole"), records(folder)
    for pruner in ("contribution", "random"):
        assert resumed[pruner]["resumed_from_epochs"] == [1, 3] and whole[pruner]["resumed_from_epochs"] == []
        assert without_times(resumed[pruner]) == without_times(whole[pruner])
        assert same_weights(resumed[pruner], whole[pruner])
        assert resumed[pruner]["started_at"] <= resumed[pruner]["finished_at"]


def bench(*args, **kwargs):
    """``bench`` in its own process, on one torch thread (so the results compare with one another)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "bench_harness.cli", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def checkpointed_epoch(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)["trainer"]["epochs_done"]
    except Exception:  # noqa: BLE001 - not there yet
        return 0


def test_kill_9_during_training_resumes_to_the_uninterrupted_result(tmp_path):
    args = ["run", "-p", "contribution", *RESUMABLE, "--epochs", "6", "--save-models"]
    folder = tmp_path / "killed"
    for at_least in (1, 3):  # killed once after epoch 1's checkpoint, then (resumed) after epoch 3's
        process = bench(*args, "--results", str(folder))
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            found = list((folder / "checkpoints").glob("*.pt"))
            if found and checkpointed_epoch(found[0]) >= at_least:
                break
            time.sleep(0.05)
        assert process.poll() is None, "the run finished before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        assert not list((folder / "runs").glob("*.json"))
    last = bench(*args, "--results", str(folder))
    output, errors = last.communicate(timeout=300)
    assert last.returncode == 0, errors
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert runner.invoke(app, [*args, "--results", str(tmp_path / "whole")]).exit_code == 0
    finally:
        torch.set_num_threads(threads)
    resumed, whole = records(folder)["contribution"], records(tmp_path / "whole")["contribution"]
    assert len(resumed["resumed_from_epochs"]) == 2 and resumed["resumed_from_epochs"][0] >= 1
    assert without_times(resumed) == without_times(whole) and same_weights(resumed, whole)
    assert not list((folder / "checkpoints").iterdir())


def test_two_bench_runs_on_one_folder_train_every_run_once(tmp_path):
    args = ["run", "-p", "none", "-p", "magnitude", "-p", "random", *QUICK, "--seeds", "2", "--epochs", "2", "--prune-every", "1",
            "--results", str(tmp_path)]
    processes = [bench(*args), bench(*args)]
    outputs = [process.communicate(timeout=400) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    trained = [line.split()[1].rstrip(":") for out, err in outputs for line in (out + err).splitlines() if line.startswith("done ")]
    assert len(trained) == len(set(trained)) == 6  # every run trained, none twice
    assert len(list((tmp_path / "runs").glob("*.json"))) == 6
    assert all(r["status"] == "ok" for r in records(tmp_path).values())


class Exiting(Pruner):
    """Calls sys.exit(3) where the test says, as a broken plugin might."""

    name = "exiting"
    description = "sys.exit(3) in the named method (for tests)."
    where = "score"

    def __init__(self, context):
        super().__init__(context)
        if self.where == "__init__":
            sys.exit(3)

    def observe(self, step):
        if self.where == "observe":
            sys.exit(3)

    def score(self, layer, granularity):
        sys.exit(3)


class Saboteur(MagnitudePruner):
    """Zeroes the weights every step: a run at chance that would otherwise look ok."""

    name = "saboteur"
    description = "Zeroes every weight in observe() (for tests)."

    @torch.no_grad()
    def observe(self, step):
        for layer in self.layers:
            layer.weight.zero_()


class Flaky(MagnitudePruner):
    """Magnitude, failing at its first event while ``fail`` is set."""

    name = "flaky"
    description = "Fails at its first event when told to (for tests)."
    fail = False

    def score(self, layer, granularity):
        if self.fail:
            raise RuntimeError("flaky this time")
        return super().score(layer, granularity)


class Unloadable(MagnitudePruner):
    """Magnitude whose load_state_dict() fails: its runs cannot resume, only start over."""

    name = "unloadable"
    description = "Cannot be restored from a checkpoint (for tests)."

    def load_state_dict(self, state):
        raise RuntimeError("cannot load")


class TestPlugins:
    __name__ = "survival_plugins"

    @hookimpl
    def register_pruners(self, register):
        for pruner in (Exiting, Saboteur, Flaky, Unloadable):
            register(pruner)


@pytest.fixture
def plugins():
    with registered_plugin(TestPlugins(), "survival"):
        yield


@pytest.mark.parametrize("where", ["__init__", "observe", "score"])
def test_sys_exit_in_a_plugin_fails_only_its_run_and_names_the_plugin(tmp_path, plugins, monkeypatch, where):
    monkeypatch.setattr(Exiting, "where", where)
    mates = ["-p", "magnitude"] if where == "observe" else []
    result = runner.invoke(app, ["run", "-p", "exiting", *mates, *QUICK, "--epochs", "2", "--prune-every", "1", "--concurrency", "2",
                                 "--results", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    found = records(tmp_path)
    failed = found["exiting"]
    assert failed["status"] == "failed" and failed["error"].startswith("SystemExit: the code called sys.exit(3)")
    assert "raised by the pruner plugin survival_plugins" in failed["error"] and failed["failed_plugin"]["kind"] == "pruner"
    if mates:
        assert found["magnitude"]["status"] == "ok"  # its group-mate trained on and was recorded
    assert "1 failed" in result.output and list((tmp_path / "checkpoints").iterdir()) == []


def test_a_saboteur_is_flagged_in_its_record_and_the_leaderboard_while_honest_runs_are_not(tmp_path, plugins):
    result = runner.invoke(app, ["run", "-p", "saboteur", "-p", "none", "-p", "magnitude", *QUICK, "--epochs", "2",
                                 "--prune-every", "1", "--results", str(tmp_path)])
    assert result.exit_code == 0, result.output
    found = records(tmp_path)
    assert {flag["kind"] for flag in found["saboteur"]["flags"]} == {"at_chance", "weights_changed"}
    assert "observe() at" in next(f["message"] for f in found["saboteur"]["flags"] if f["kind"] == "weights_changed")
    assert found["magnitude"]["flags"] == [] and found["none"]["flags"] == []
    board = runner.invoke(app, ["leaderboard", "--results", str(tmp_path)])
    assert "saboteur †" in board.output and "† Flagged: " in board.output and "magnitude †" not in board.output
    per_seed = runner.invoke(app, ["leaderboard", "--results", str(tmp_path), "--per-seed"])
    assert "ok †" in per_seed.output


def test_a_failed_rerun_keeps_the_earlier_ok_record(tmp_path, plugins, monkeypatch):
    args = ["run", "-p", "flaky", *QUICK, "--epochs", "2", "--prune-every", "1", "--results", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0
    (path,) = (tmp_path / "runs").glob("*.json")
    first = path.read_text()
    monkeypatch.setattr(Flaky, "fail", True)
    again = runner.invoke(app, [*args, "--force"])
    assert again.exit_code == 1 and "Kept the earlier ok record" in again.stderr
    assert path.read_text() == first
    failure = json.loads((tmp_path / "failures" / path.name).read_text())
    assert failure["status"] == "failed" and "flaky this time" in failure["error"]


BROKEN_RECORDS = [
    b"\xff\xfe not UTF-8",
    b"[1, 2, 3]",
    b"\"ok\"",
    b"{\"status\": \"ok\"}",
    None,  # an ok record without test_accuracy: built below
]


def test_damaged_records_are_named_once_and_their_runs_redone(tmp_path):
    args = ["run", "-p", "none", *QUICK, "--seeds", str(len(BROKEN_RECORDS)), "--epochs", "1", "--results", str(tmp_path)]
    assert runner.invoke(app, args).exit_code == 0
    paths = sorted((tmp_path / "runs").glob("*.json"))
    for path, content in zip(paths, BROKEN_RECORDS):
        if content is None:
            record = json.loads(path.read_text())
            del record["metrics"]["test_accuracy"]
            content = json.dumps(record).encode()
        path.write_bytes(content)
    orphan = tmp_path / "runs" / ".x.json.elsewhere-1.ab.tmp"
    orphan.write_bytes(b"half")
    os.utime(orphan, (0, 0))  # written by another machine long ago
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "Traceback" not in again.output
    assert f"{len(BROKEN_RECORDS)} run(s) completed, 0 already complete" in again.output
    warnings = [line for line in again.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == len(BROKEN_RECORDS) and all(any(p.name in w for w in warnings) for p in paths)
    assert "Removed 1 temporary file(s)" in again.stderr and not orphan.exists()
    assert all(json.loads(p.read_text())["status"] == "ok" for p in paths)


@pytest.mark.parametrize("budget, epochs", [(1e9, [1, 2]), (1e-9, [1])])
def test_by_default_checkpoints_are_as_frequent_as_their_time_budget_allows(tmp_path, monkeypatch, budget, epochs):
    from bench_harness import runner as runner_module
    from bench_harness.store import ResultsStore

    written = []
    write = ResultsStore.write_checkpoint
    monkeypatch.setattr(runner_module, "CHECKPOINT_BUDGET", budget)
    monkeypatch.setattr(ResultsStore, "write_checkpoint", lambda self, config, data: (
        written.append(torch.load(__import__("io").BytesIO(data), weights_only=True)["trainer"]["epochs_done"]), write(self, config, data)))
    result = runner.invoke(app, ["run", "-p", "none", *QUICK, "--epochs", "3", "--results", str(tmp_path)])
    assert result.exit_code == 0 and written == epochs  # the first one measures the cost; never after the last epoch


def test_a_checkpoint_that_cannot_be_used_is_named_and_its_run_starts_over(tmp_path, plugins, monkeypatch):
    args = ["run", "-p", "unloadable", "-p", "magnitude", *QUICK, "--epochs", "3", "--prune-every", "1", "--checkpoint-every", "1",
            "--results", str(tmp_path)]
    shown = progress.GridProgress.epoch_done

    def stop_at_2(self, report):
        shown(self, report)
        if report.epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(progress.GridProgress, "epoch_done", stop_at_2)
    assert runner.invoke(app, [*args, "--concurrency", "2"]).exit_code == 130
    monkeypatch.setattr(progress.GridProgress, "epoch_done", shown)
    checkpoints = {path.name.split("-")[2]: path for path in (tmp_path / "checkpoints").glob("*.pt")}
    checkpoints["magnitude"].write_bytes(b"not a checkpoint")
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Could not resume synthetic-fcnn-unloadable" in result.stderr and "raised by the pruner plugin survival_plugins" in result.stderr
    assert f"Ignoring checkpoint {checkpoints['magnitude']}: it is not a readable checkpoint" in result.stderr
    assert all(record["resumed_from_epochs"] == [] and record["status"] == "ok" for record in records(tmp_path).values())


def test_a_run_is_recorded_when_it_ends_not_when_its_group_does(tmp_path, plugins, monkeypatch):
    monkeypatch.setattr(Exiting, "where", "observe")
    shown = progress.GridProgress.epoch_done

    def stop_at_2(self, report):  # the progress follows the group's first run, magnitude
        shown(self, report)
        if report.epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(progress.GridProgress, "epoch_done", stop_at_2)
    result = runner.invoke(app, ["run", "-p", "magnitude", "-p", "exiting", *QUICK, "--epochs", "3", "--prune-every", "1",
                                 "--concurrency", "2", "--checkpoint-every", "1", "--results", str(tmp_path)])
    assert result.exit_code == 130
    assert set(records(tmp_path)) == {"exiting"}  # failed in its first epoch, recorded then
    assert [path.name.split("-")[2] for path in (tmp_path / "checkpoints").glob("*.pt")] == ["magnitude"]
