"""The results store: atomic, readable records and the skip logic."""

import errno
import json
import os
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from bench_harness.config import RunConfig
from bench_harness.errors import StoreError
from bench_harness.store import HOST, ResultsStore, probe_writable, write_bytes_atomically, write_json_atomically

REPO = Path(__file__).resolve().parent.parent


def test_an_interrupted_write_keeps_the_old_record_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "runs" / "a.json"
    write_json_atomically(path, {"status": "ok", "value": 1})

    def killed(fd):  # the process dies after writing, before the file is safely on disk
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomically(path, {"status": "ok", "value": 2})
    assert json.loads(path.read_text()) == {"status": "ok", "value": 1}
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_records_are_ordinary_readable_files(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomically(path, {"x": 1})
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode & stat.S_IRGRP and mode & stat.S_IROTH


PLUGINS = {kind: {"plugin": kind, "module": "m", "distribution": "bench-harness", "version": "0.2.0"} for kind in ("pruner", "dataset", "model")}


def finished(config, **changes):
    """The smallest record resume accepts as a finished run of ``config``."""
    return {"run_id": config.run_id(), "status": "ok", "config_hash": config.config_hash(), "plugins": PLUGINS,
            "metrics": {"test_accuracy": 0.9, "sparsity": 0.5}, "history": [{"epoch": e} for e in range(1, config.epochs + 1)],
            **changes}


def test_only_a_successful_record_with_the_same_hash_and_plugin_versions_counts_as_complete(tmp_path):
    store = ResultsStore(tmp_path)
    config = RunConfig(pruner="magnitude", dataset="synthetic", model="fcnn")
    assert not store.is_complete(config, PLUGINS)
    store.write(config, {"status": "failed", "config_hash": config.config_hash(), "plugins": PLUGINS})
    assert not store.is_complete(config, PLUGINS)
    store.write(config, finished(config))
    assert store.is_complete(config, PLUGINS)
    newer = {**PLUGINS, "pruner": {**PLUGINS["pruner"], "version": "0.3.0"}}
    assert not store.is_complete(config, newer)  # another version of the pruner's package: run again
    store.write(config, {key: value for key, value in finished(config).items() if key != "plugins"})
    assert not store.is_complete(config, PLUGINS)  # a record that does not say who made it
    store.path_for(config).write_text("{ truncated")
    with pytest.warns(UserWarning, match="unreadable"):
        assert not store.is_complete(config, PLUGINS)


def test_a_new_setting_at_its_default_does_not_rename_existing_runs():
    config = RunConfig(pruner="taylor", dataset="mnist", model="fcnn", seed=1, prune_rate=0.3)
    payload = {key: value for key, value in config.to_dict().items() if key not in ("device", "telemetry_period")}
    defaults = RunConfig().to_dict()
    # Only what differs from the defaults (and the run's identity) is hashed, so a field added later
    # with a default leaves this hash as it is.
    import hashlib
    hashed = {k: v for k, v in payload.items() if v != defaults[k] or k in ("pruner", "dataset", "model", "seed")}
    assert config.config_hash() == hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:16]
    assert RunConfig(pruner="taylor", dataset="mnist", model="fcnn", seed=1, prune_rate=0.3, schedule="fixed").config_hash() == config.config_hash()
    assert RunConfig(pruner="taylor", dataset="mnist", model="fcnn", seed=1, prune_rate=0.3, schedule="cubic").config_hash() != config.config_hash()


def test_config_round_trips_and_the_device_does_not_change_the_hash():
    config = RunConfig(pruner="taylor", dataset="mnist", model="fcnn", seed=3, target_sparsity=0.9, device="cuda")
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert RunConfig(**{**config.to_dict(), "device": "cpu"}).config_hash() == config.config_hash()
    assert RunConfig(**{**config.to_dict(), "seed": 4}).config_hash() != config.config_hash()


def test_a_failed_record_never_replaces_an_ok_one_it_goes_to_failures(tmp_path):
    store = ResultsStore(tmp_path)
    config = RunConfig(pruner="magnitude", dataset="synthetic", model="fcnn")
    assert store.write(config, finished(config)) == store.path_for(config)
    failed = {"run_id": config.run_id(), "status": "failed", "error": "RuntimeError: late"}
    path = store.write(config, failed)
    assert path == tmp_path / "failures" / f"{config.run_id()}.json"
    assert json.loads(store.path_for(config).read_text())["status"] == "ok"
    assert json.loads(path.read_text())["error"] == "RuntimeError: late"


@pytest.mark.parametrize("change, reason", [
    ({"metrics": {"sparsity": 0.5}}, "no test_accuracy"),
    ({"metrics": {"test_accuracy": None, "sparsity": 0.5}}, "no test_accuracy"),
    ({"history": []}, "history does not hold"),
    ({"run_id": "someone-else"}, "names run"),
    ({"metrics": "lots"}, "holds no metrics"),
    ({"plugins": {"pruner": "a string"}}, None),
])
def test_a_record_missing_required_fields_is_not_complete(tmp_path, change, reason):
    store = ResultsStore(tmp_path)
    config = RunConfig(pruner="magnitude", dataset="synthetic", model="fcnn")
    store.write(config, finished(config, **change))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not store.is_complete(config, PLUGINS)
        assert not store.is_complete(config, PLUGINS)  # asked twice, told once
    messages = [str(w.message) for w in caught]
    assert len(messages) == (1 if reason else 0)
    assert not reason or (reason in messages[0] and str(store.path_for(config)) in messages[0])


def test_a_write_on_a_full_disk_is_one_sentence_and_leaves_no_temporary(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StoreError, match="the disk is full"):
        write_bytes_atomically(tmp_path / "models" / "m.pt", b"x" * 100)
    assert list((tmp_path / "models").iterdir()) == []
    with pytest.raises(StoreError, match="Could not write into the results folder .*the disk is full"):
        probe_writable(tmp_path / "runs", "the results folder")
    assert list((tmp_path / "runs").iterdir()) == []


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_orphan_temporary_files_of_gone_writers_are_removed_and_live_ones_kept(tmp_path):
    store = ResultsStore(tmp_path)
    store.runs_dir.mkdir(parents=True)
    orphan = store.runs_dir / f".a.json.{HOST}-{dead_pid()}.k2j4.tmp"
    live = store.runs_dir / f".b.json.{HOST}-{os.getppid()}.x1y2.tmp"  # our parent is alive
    remote = store.runs_dir / ".c.json.otherhost-1.z9.tmp"
    old_style = store.runs_dir / ".d.pt.tmp"
    for path in (orphan, live, remote, old_style):
        path.write_bytes(b"half")
    past = time.time() - 3600
    os.utime(old_style, (past, past))
    assert sorted(store.clean_orphans()) == sorted([orphan, old_style])
    assert sorted(p.name for p in store.runs_dir.iterdir()) == sorted([live.name, remote.name])


def test_a_process_killed_while_writing_leaves_a_temporary_file_the_next_start_removes(tmp_path):
    target = tmp_path / "runs" / "r.json"
    script = (
        "import os, sys, time\n"
        "from bench_harness import store\n"
        "os.fsync = lambda fd: (print('writing', flush=True), time.sleep(60))\n"
        f"store.write_json_atomically(__import__('pathlib').Path({str(target)!r}), {{'status': 'ok'}})\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert process.stdout.readline().strip() == "writing"  # inside the write window
    finally:
        process.kill()
        process.wait(timeout=30)
    leftovers = list(target.parent.glob(".*.tmp"))
    assert len(leftovers) == 1 and not target.exists()
    assert ResultsStore(tmp_path).clean_orphans() == leftovers
    assert list(target.parent.iterdir()) == []


def test_a_claim_is_exclusive_and_ends_with_its_owner(tmp_path):
    store = ResultsStore(tmp_path)
    config = RunConfig(pruner="magnitude", dataset="synthetic", model="fcnn")
    script = (
        "import sys, time\n"
        "from bench_harness.config import RunConfig\n"
        "from bench_harness.store import ResultsStore\n"
        f"claim = ResultsStore({str(tmp_path)!r}).claim(RunConfig(pruner='magnitude', dataset='synthetic', model='fcnn'))\n"
        "print('claimed' if claim else 'refused', flush=True)\n"
        "time.sleep(60)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert owner.stdout.readline().strip() == "claimed"
        assert store.claim(config) is None
        assert f"process {owner.pid} on host" in store.holder(config)
    finally:
        owner.kill()  # kill -9: no clean-up code runs, the operating system drops the lock
        owner.wait(timeout=30)
    claim = store.claim(config)
    assert claim is not None
    claim.release()
    assert not store.claim_path(config).exists()


def test_a_failure_in_plugin_code_names_the_plugins_package():
    from bench_harness import record as records

    def plugin_code():
        raise ZeroDivisionError("division by zero")

    plugins = {"pruner": {"plugin": "p", "module": "pkg_module", "code": __name__, "distribution": "bench-harness-p", "version": "1.2"},
               "dataset": {"plugin": "datasets", "module": "bench_harness.datasets", "code": "bench_harness.datasets"}}
    try:
        plugin_code()
    except ZeroDivisionError as exc:
        failed = records.mark_failed({"plugins": plugins}, exc)
    assert failed["error"] == "ZeroDivisionError: division by zero (raised by the pruner plugin bench-harness-p 1.2 (pkg_module))"
    assert failed["failed_plugin"]["distribution"] == "bench-harness-p" and failed["status"] == "failed"
    harness = records.mark_failed({"plugins": plugins}, RuntimeError("not a plugin's"))
    assert harness["error"] == "RuntimeError: not a plugin's" and harness["failed_plugin"] is None
    exited = records.mark_failed({"plugins": {}}, SystemExit(3))
    assert exited["error"] == "SystemExit: the code called sys.exit(3)"


@pytest.mark.parametrize("accuracy, dense, flagged", [(0.11, 0.9, True), (0.11, None, False), (0.11, 0.3, False), (0.5, 0.9, False)])
def test_a_run_at_chance_is_flagged_only_when_its_dense_reference_is_far_above(accuracy, dense, flagged):
    from bench_harness import record as records

    record = {"metrics": {"test_accuracy": accuracy, "chance_accuracy": 0.1}}
    records.add_flags(record, dense, None)
    assert [flag["kind"] for flag in record["flags"]] == (["at_chance"] if flagged else [])
    records.add_flags(record, None, "The pruner changed the model's weights outside the pruning event: in observe() at 2 of 2 checked calls.")
    assert [flag["kind"] for flag in record["flags"]] == ["weights_changed"]
