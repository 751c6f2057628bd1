"""``bench run --executor ray`` on a local Ray cluster started here (2 CPUs): the same records as a
local run, a worker killed mid-grid retried by Ray, resume, and the mistakes refused in one sentence."""

import json
import socket
import sys
from collections import Counter

import pytest
import torch
from typer.testing import CliRunner

from bench_harness import cluster, progress
from bench_harness.config import RunConfig
from bench_harness.cli import app
from bench_harness.record import computed
from bench_harness.store import ResultsStore

runner = CliRunner()
GRID = ["run", "-p", "magnitude", "-p", "none", "--dataset", "synthetic", "--device", "cpu", "--batch-size", "256",
        "--seeds", "2", "--epochs", "3", "--prune-every", "1"]


def records(folder):
    return {path.name: json.loads(path.read_text()) for path in sorted((folder / "runs").glob("*.json"))}


def test_ray_options_without_ray_or_with_the_local_executor_are_one_sentence(monkeypatch, tmp_path):
    local = runner.invoke(app, [*GRID, "--results", str(tmp_path), "--ray-address", "127.0.0.1:6379"])
    assert local.exit_code == 2 and "--ray-address only applies to --executor ray" in local.stderr
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    missing = runner.invoke(app, [*GRID, "--results", str(tmp_path), "--executor", "ray"])
    assert missing.exit_code == 2 and 'pip install "bench-harness[ray]"' in missing.stderr
    assert "Traceback" not in missing.output and not (tmp_path / "runs").exists()


def test_an_unreachable_ray_address_is_one_sentence(tmp_path):
    pytest.importorskip("ray")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = runner.invoke(app, [*GRID, "--results", str(tmp_path), "--executor", "ray", "--ray-address", f"127.0.0.1:{port}"])
    assert result.exit_code == 2 and f"Could not reach a Ray cluster at --ray-address 127.0.0.1:{port}" in result.stderr
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    ray = pytest.importorskip("ray")
    kill_file = tmp_path_factory.mktemp("hook") / "kill.json"
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {cluster.TEST_KILL_ENV: str(kill_file)}})
    try:
        yield kill_file
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def local_records(tmp_path_factory):
    """The grid trained locally with one thread: a Ray task asks for one CPU, so PyTorch uses one
    thread there, and on a CPU the thread count decides how sums are split (hence their last bits)."""
    folder = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert runner.invoke(app, [*GRID, "--results", str(folder)]).exit_code == 0
    finally:
        torch.set_num_threads(threads)
    return records(folder)


def test_a_ray_grid_records_what_a_local_grid_does_and_a_rerun_skips_it(ray_cluster, local_records, tmp_path):
    result = runner.invoke(app, [*GRID, "--results", str(tmp_path), "--executor", "ray"])
    assert result.exit_code == 0, result.output
    assert "4 run(s) completed, 0 already complete and skipped, 0 failed" in result.output
    remote = records(tmp_path)
    assert remote.keys() == local_records.keys() and len(remote) == 4
    for name, record in remote.items():
        assert record["status"] == "ok"
        assert computed(record) == computed(local_records[name])
    assert list((tmp_path / "checkpoints").iterdir()) == [] and list((tmp_path / "claims").iterdir()) == []
    again = runner.invoke(app, [*GRID, "--results", str(tmp_path), "--executor", "ray"])
    assert again.exit_code == 0 and "0 run(s) completed, 4 already complete and skipped" in again.output


def test_a_worker_killed_mid_grid_is_retried_and_every_record_is_written_once(ray_cluster, local_records, tmp_path, monkeypatch):
    victim = next(name for name in local_records if "magnitude" in name and "-s0-" in name).removesuffix(".json")
    ray_cluster.write_text(json.dumps({"run_id": victim, "after_epoch": 1}))
    writes = Counter()
    write = ResultsStore.write

    def counted(self, config, record):
        writes[config.run_id()] += 1
        return write(self, config, record)

    monkeypatch.setattr(ResultsStore, "write", counted)
    result = runner.invoke(app, [*GRID, "--results", str(tmp_path), "--executor", "ray", "--checkpoint-every", "1"])
    assert result.exit_code == 0, result.output
    assert not ray_cluster.exists() and ray_cluster.with_name("kill.json.fired").exists()  # the worker did die
    assert writes == Counter({name.removesuffix(".json"): 1 for name in local_records})
    remote = records(tmp_path)
    assert remote.keys() == local_records.keys()
    for name, record in remote.items():
        assert computed(record) == computed(local_records[name])
    assert list((tmp_path / "checkpoints").iterdir()) == [] and list((tmp_path / "claims").iterdir()) == []


def test_a_run_that_fails_on_a_worker_is_recorded_as_failed_and_the_grid_goes_on(ray_cluster, tmp_path):
    diverging = [*GRID[:GRID.index("--seeds")], "--seeds", "1", "--epochs", "2", "--prune-every", "1", "--lr", "1e20"]
    result = runner.invoke(app, [*diverging, "--results", str(tmp_path), "--executor", "ray"])
    assert result.exit_code == 1 and "0 run(s) completed, 0 already complete and skipped, 2 failed" in result.output
    found = records(tmp_path)
    assert len(found) == 2 and all(r["status"] == "failed" and "diverged" in r["error"] for r in found.values())
    assert list((tmp_path / "claims").iterdir()) == []


def test_the_cluster_display_counts_the_whole_grid_and_estimates_the_time_left(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    configs = [RunConfig(pruner="magnitude", dataset="synthetic", model="fcnn", seed=seed, epochs=2) for seed in range(4)]
    report = {"epoch": 1, "train_loss": 0.5, "val_accuracy": 0.9, "sparsity": 0.1}
    with progress.ClusterProgress(len(configs), 2) as display:
        display.group_sent(configs[:2])
        display.group_started(configs[:2], "node-1")
        assert display.time_left() is None  # no epoch trained yet: no rate
        clock[0] += 10
        for config in configs[:2]:
            display.run_epoch(config, report)
        display.refresh()
        # 2 epochs in 10 s; left: 1 epoch of each running run and 2 of each unsent one = 6 epochs, 30 s
        assert display.time_left() == pytest.approx(30.0)
        status = display.progress.tasks[0].fields["status"]
        assert status == "0 done · 2 running · 2 queued · about 30 s left"
        display.run_finished(0, configs[0], {"status": "ok", "metrics": {"test_accuracy": 0.9}, "flags": [], "resumed_from_epochs": []})
        assert display.progress.tasks[0].fields["status"].startswith("1 done · 1 running · 2 queued")
