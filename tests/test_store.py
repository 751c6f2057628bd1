"""The results store: atomic, readable records and the skip logic."""

import json
import os
import stat

import pytest

from bench_harness.config import RunConfig
from bench_harness.store import ResultsStore, write_json_atomically


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


def test_only_a_successful_record_with_the_same_hash_and_plugin_versions_counts_as_complete(tmp_path):
    store = ResultsStore(tmp_path)
    config = RunConfig(pruner="magnitude", dataset="synthetic", model="fcnn")
    assert not store.is_complete(config, PLUGINS)
    store.write(config, {"status": "failed", "config_hash": config.config_hash(), "plugins": PLUGINS})
    assert not store.is_complete(config, PLUGINS)
    store.write(config, {"status": "ok", "config_hash": config.config_hash(), "plugins": PLUGINS})
    assert store.is_complete(config, PLUGINS)
    newer = {**PLUGINS, "pruner": {**PLUGINS["pruner"], "version": "0.3.0"}}
    assert not store.is_complete(config, newer)  # another version of the pruner's package: run again
    store.write(config, {"status": "ok", "config_hash": config.config_hash()})
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
