"""Reading a results folder never crashes: every unusable file is named once and left out."""

import json
import shutil
import warnings

import pytest
from record_factory import make_record, write_records

from bench_harness.store import ResultsStore


def read_with_warnings(folder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = ResultsStore(folder).records()
    return records, [str(w.message) for w in caught]


@pytest.mark.parametrize("name, content, reason", [
    ("latin1.json", "{\"pruner\": \"caf\xe9\"}".encode("latin-1"), "unreadable"),
    ("list.json", b"[1, 2, 3]", "JSON list, not an object"),
    ("string.json", b"\"ok\"", "JSON str, not an object"),
    ("truncated.json", b"{\"status\": \"ok\", ", "unreadable"),
    ("no-metrics.json", b"{\"status\": \"ok\", \"pruner\": \"magnitude\"}", "marked ok but holds no metrics"),
    ("anonymous.json", b"{\"status\": \"ok\", \"metrics\": {}}", "names no pruner"),
    ("bad-config.json", b"{\"status\": \"ok\", \"pruner\": \"x\", \"metrics\": {}, \"config\": [1]}", "config is not an object"),
])
def test_a_malformed_file_is_named_in_one_warning_and_left_out(tmp_path, name, content, reason):
    write_records(tmp_path, [make_record("magnitude", 0, 0.9)])
    (tmp_path / "runs" / name).write_bytes(content)
    records, messages = read_with_warnings(tmp_path)
    assert [r["pruner"] for r in records] == ["magnitude"]
    assert len(messages) == 1 and name in messages[0] and reason in messages[0]


def test_a_copied_record_counts_once(tmp_path):
    record = make_record("magnitude", 0, 0.9)
    write_records(tmp_path, [record])
    original = tmp_path / "runs" / f"{record['run_id']}.json"
    shutil.copy(original, tmp_path / "runs" / "zz copy.json")
    records, messages = read_with_warnings(tmp_path)
    assert len(records) == 1
    assert len(messages) == 1 and "zz copy.json" in messages[0] and record["run_id"] in messages[0]


def test_of_two_records_of_one_run_the_finished_one_is_kept(tmp_path):
    finished = make_record("magnitude", 0, 0.9)
    failed = {**finished, "status": "failed", "error": "RuntimeError: boom"}
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "a.json").write_text(json.dumps(failed))
    (runs / "b.json").write_text(json.dumps(finished))
    records, messages = read_with_warnings(tmp_path)
    assert [r["status"] for r in records] == ["ok"]
    assert "a.json" in messages[0]
