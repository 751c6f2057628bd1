"""benchmarks/gpu_check.py: the one command a GPU runs when one is available.

GPU time is rare, so the script must work the first time it meets a GPU. Its ``--cpu-smoke`` mode
runs every part through the same command lines at tiny sizes on the CPU, so a change to an option,
a JSON field or a record that the script relies on fails here, not on the GPU. The budget and the
containment of a failing part are checked with stand-in parts, in a fraction of a second each.
"""

import gzip
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from bench_harness.plugins import registries

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import gpu_check  # noqa: E402  (lives in benchmarks/, which is not a package)


def test_cpu_smoke_runs_every_part_and_judges_every_target(tmp_path):
    out = tmp_path / "out"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(BENCHMARKS / "gpu_check.py"), str(out), "--cpu-smoke", "--data-dir", str(tmp_path / "no-data")]
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]

    # Three files only, so that the folder can travel back whole; the summary is also printed.
    assert sorted(path.name for path in out.iterdir()) == ["files.tar.gz", "gpu-check.json", "summary.md"]
    summary = (out / "summary.md").read_text()
    assert summary.strip() in finished.stdout and "cpu-smoke" in summary

    payload = json.loads((out / "gpu-check.json").read_text())
    status = {part["name"]: part["status"] for part in payload["parts"]}
    assert status == {
        "cuda-tests": "skipped", "speed-fcnn": "ok", "speed-cnn": "ok", "telemetry": "ok",
        "grid-fcnn": "ok", "grid-cnn": "skipped", "bench-run": "ok", "compaction": "ok",
    }
    assert payload["finished"] and payload["real_fashion_mnist"] is False and payload["problems"] == []

    # Every target of the issue is judged from the parts' figures (the CPU's figures miss them, and
    # the sampler has no GPU to watch): none is left "not judged" by a field the script misread.
    verdicts = {target["key"]: target["verdict"] for target in payload["targets"]}
    assert list(verdicts) == ["speed-fcnn", "speed-cnn", "grid", "pruning", "telemetry"]
    for key in ("speed-fcnn", "speed-cnn", "grid", "pruning"):
        assert verdicts[key].startswith(("met", "**MISSED**")), verdicts[key]
    assert verdicts["telemetry"].startswith("not measured: the NVML sampler was inactive")

    # The pruners come from the registry, as `bench run --all` takes them, not from a list in the script.
    parts = {part["name"]: part for part in payload["parts"]}
    found = registries().pruners
    expected = [name for name in found.names() if "connections" in found.get(name).granularities]
    assert sorted(parts["speed-fcnn"]["figures"]["settings"]["pruners"]) == sorted(expected)
    assert parts["grid-fcnn"]["figures"]["grid"]["runs"] == len(expected)

    with tarfile.open(out / "files.tar.gz") as archive:
        names = set(archive.getnames())
    for name in ("speed-fcnn.json", "speed-cnn.json", "grid-fcnn.json", "telemetry.json", "compaction.json",
                 "profiles/profile-fcnn-none.txt", "profiles/profile-cnn-none.txt", "logs/speed-fcnn.log"):
        assert f"files/{name}" in names
    assert any(name.startswith("files/bench-run-synthetic/runs/") for name in names)


def stand_in(name: str, code: str, essential: bool = False, estimate: float = 0.0) -> gpu_check.Part:
    """A part whose command is a line of Python and whose figures are nothing."""
    return gpu_check.Part(
        name, f"stand-in {name}", lambda check: [sys.executable, "-c", code], lambda check, result: {},
        essential=essential, estimate=lambda check: estimate,
    )


@pytest.fixture
def small_budget(monkeypatch):
    """Shrink the reserve and the minimum per part, so a budget of a few seconds means something."""
    monkeypatch.setattr(gpu_check, "RESERVE_SECONDS", 0.5)
    monkeypatch.setattr(gpu_check, "MIN_PART_SECONDS", 1.0)


def run_stand_ins(tmp_path, parts, budget):
    args = gpu_check.parse_args([str(tmp_path / "out"), "--budget-seconds", str(budget), "--data-dir", str(tmp_path)])
    check = gpu_check.new_check(args, tmp_path / "scratch")
    for part in parts:
        check.results[part.name] = gpu_check.PartResult(part.name, part.purpose)
    started = time.monotonic()
    gpu_check.run_parts(check, parts)
    gpu_check.write_output(check, finished=True)
    return check, time.monotonic() - started


def test_a_failing_part_is_recorded_and_the_next_one_runs(tmp_path, small_budget):
    parts = [
        stand_in("broken", "import sys; print('first line'); print('the reason it broke'); sys.exit(3)"),
        stand_in("fine", "print('done')"),
        stand_in("too-long", "pass", estimate=10_000.0),
    ]
    check, _ = run_stand_ins(tmp_path, parts, budget=60)
    broken, fine, too_long = (check.results[name] for name in ("broken", "fine", "too-long"))
    assert broken.status == "failed" and broken.returncode == 3 and "the reason it broke" in broken.reason
    assert fine.status == "ok"
    assert too_long.status == "skipped" and "needs about 10000 s" in too_long.reason
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "broken failed: exit code 3: the reason it broke" in summary  # listed under Problems
    assert "not measured" in summary  # no speed figures: every target says so instead of failing


def test_the_budget_stops_a_part_in_time_and_skips_the_rest(tmp_path, small_budget):
    parts = [
        stand_in("hangs", "import time; time.sleep(60)", essential=True),
        stand_in("essential-after", "pass", essential=True),
    ]
    check, seconds = run_stand_ins(tmp_path, parts, budget=4)
    assert check.results["hangs"].status == "timed out"
    assert check.results["essential-after"].status == "skipped" and "budget spent" in check.results["essential-after"].reason
    assert seconds < 4 + 3  # stopped at the budget (SIGTERM ends a sleeping Python at once)


def test_a_hanging_part_is_stopped_at_a_few_times_its_estimate(tmp_path, small_budget):
    parts = [stand_in("hangs", "import time; time.sleep(60)", essential=True, estimate=0.5), stand_in("next", "pass")]
    check, seconds = run_stand_ins(tmp_path, parts, budget=60)
    assert check.results["hangs"].status == "timed out" and check.results["next"].status == "ok"
    assert seconds < gpu_check.CAP_FACTOR * 0.5 + 5


def test_junit_counts(tmp_path):
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<testsuites><testsuite tests="4" failures="1" errors="0" skipped="1">'
        '<testcase name="a"/><testcase name="b"><failure message="assert 1 == 2&#10;more">trace</failure></testcase>'
        '<testcase name="c"><skipped/></testcase><testcase name="d"/></testsuite></testsuites>'
    )
    counts = gpu_check.junit_counts(xml)
    assert (counts["passed"], counts["failures"], counts["skipped"]) == (2, 1, 1)
    assert counts["problems"] == ["b: assert 1 == 2"]


def test_fashion_mnist_is_found_plain_or_gzipped(tmp_path):
    assert not gpu_check.has_fashion_mnist(tmp_path)
    for index, name in enumerate(gpu_check.FASHION_MNIST_FILES):
        if index % 2:
            (tmp_path / name).write_bytes(b"")
        else:
            with gzip.open(tmp_path / f"{name}.gz", "wb"):
                pass
    assert gpu_check.has_fashion_mnist(tmp_path)


def test_the_grid_is_extrapolated_share_by_share():
    # Projection of the protocol's grid for one model: 5 pruners x 5 seeds x 50 epochs, 9 events.
    speed = {
        "projection_seed_grid": {"grid": {"pruners": 5, "seeds": 5, "epochs": 50, "events": 9, "train_images": 55_000, "val_images": 5_000}},
        "engine": {"eval_seconds": 0.01, "test_images": 10_000},  # 1 µs per image
    }
    # Measured: the same runs for 6 epochs (one event) on the same images.
    measured = {"runs": 25, "epochs": 6, "events": 1, "train_images": 55_000, "val_images": 5_000,
                "train_seconds": 60.0, "prune_seconds": 2.0, "seconds": 100.0}
    grid = gpu_check.extrapolate_grid(measured, speed)
    validation_measured = 25 * 6 * 5_000 * 1e-6  # 0.75 s
    assert grid["shares"]["training"] == pytest.approx(60.0 * 50 / 6)
    assert grid["shares"]["validation"] == pytest.approx(validation_measured * 50 / 6)
    assert grid["shares"]["pruning"] == pytest.approx(2.0 * 9)
    assert grid["shares"]["once per run"] == pytest.approx(100.0 - 60.0 - 2.0 - validation_measured)
    assert grid["total_seconds"] == pytest.approx(sum(grid["shares"].values()))
