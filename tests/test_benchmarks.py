"""The benchmark scripts run end to end at tiny sizes and write what their READMEs promise.

These check that the measuring tools work, never how fast anything is: performance is measured by
running the scripts themselves (see benchmarks/README.md).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench_harness.plugins import registries

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def run_script(name: str, *args: str, output: Path) -> dict:
    """Run one script on the CPU with one thread; return its JSON."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(BENCHMARKS / f"{name}.py"), "--device", "cpu", *args, "--output", str(output)]
    finished = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert f"JSON written to {output}" in finished.stdout
    return json.loads(output.read_text())


def test_speed_benchmark_runs_both_loops_and_every_pruner(tmp_path):
    payload = run_script(
        "speed", "--models", "fcnn", "--train-images", "300", "--epochs", "1", "--prune-events", "1",
        "--measure-grid", "--grid-epochs", "6", "--grid-seeds", "1", output=tmp_path / "speed.json",
    )
    result = payload["results"]["fcnn"]
    assert result["textbook"]["epoch_seconds"] > 0 and result["engine"]["epoch_seconds"] > 0
    builtins = set(registries().pruners.names())
    assert set(result["pruning"]) == builtins - {"none"}  # each against "none"
    # Each pruner's own share is its overhead less magnitude's (the masking every pruned run pays).
    floor = result["pruning"]["magnitude"]["overhead_percent"]
    for row in result["pruning"].values():
        assert row["own_overhead_percent"] == pytest.approx(row["overhead_percent"] - floor)
        # On the CPU the time inside observe is taken directly: something for each pruner that observes.
        observes = registries().pruners.get(row["pruner"]).observes()
        assert (row["observe_call_epoch_seconds"] > 0) is observes and row["own_direct_percent"] is not None
    # The floor of two running moments: LeNet-300-100's weights and biases, five passes per observed step.
    floor = result["moment_floor"]
    assert floor["elements"] == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10 and floor["floor_percent"] > 0
    assert floor["floor_step_seconds"] == pytest.approx(5 * 4 * floor["elements"] / floor["bytes_per_second"])
    grid = result["grid"]["measured"]
    assert (grid["runs"], grid["completed"], grid["failed"]) == (len(builtins), len(builtins), [])  # one seed of every built-in pruner
    assert payload["environment"]["git_commit"] is None or len(payload["environment"]["git_commit"]) >= 40


def test_compaction_benchmark_checks_the_compact_model(tmp_path):
    payload = run_script("compaction", "--batch-sizes", "1,8", "--rounds", "1", output=tmp_path / "compaction.json")
    for model, halved in (("fcnn", {"300": 150, "100": 50}), ("cnn", {"32": 16, "64": 32})):
        result = payload["results"][model]
        assert result["checks"]["params_equal"] and result["checks"]["outputs_equal"]
        assert {str(units["before"]): units["after"] for units in result["units"].values()} == halved
        assert [timing["batch_size"] for timing in result["timings"]] == [1, 8]


def test_telemetry_benchmark_says_when_it_measured_nothing(tmp_path):
    payload = run_script(
        "telemetry", "--models", "fcnn", "--train-images", "300", "--trial-epochs", "1", "--rounds", "2", output=tmp_path / "telemetry.json"
    )
    result = payload["results"]["fcnn"]
    assert len(result["seconds_with"]) == len(result["seconds_without"]) == 2
    assert result["sampler_active"] is False and result["sampler_error"]  # a CPU run: NVML has no device to watch


def test_checkpoint_cost_benchmark_times_the_runners_checkpoints(tmp_path):
    payload = run_script("checkpoint_cost", "--models", "fcnn", "--pruners", "none,contribution", "--train-images", "300",
                         "--repeats", "1", "--folder", str(tmp_path), output=tmp_path / "checkpoint.json")
    rows = {row["pruner"]: row for row in payload["rows"]}
    assert set(rows) == {"none", "contribution"} and all(row["checkpoint_seconds"] > 0 for row in rows.values())
    assert rows["contribution"]["checkpoint_bytes"] > rows["none"]["checkpoint_bytes"]  # its statistics are saved too
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []  # its scratch folder is gone


def test_ray_scaling_benchmark_trains_the_grid_locally_and_on_ray(tmp_path):
    pytest.importorskip("ray")
    payload = run_script("ray_scaling", "--dataset", "synthetic", "--pruners", "magnitude", "--seeds", "1", "--epochs", "2",
                         "--batch-size", "256", "--workers", "1", "--folder", str(tmp_path), output=tmp_path / "ray.json")
    assert [(row["executor"], row["worker_cpus"], row["runs"]) for row in payload["rows"]] == [("local", None, 1), ("ray", 1, 1)]
    assert all(row["seconds"] > 0 for row in payload["rows"]) and payload["rows"][1]["speedup_vs_one_worker"] == 1.0
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []  # its scratch folders are gone


@pytest.mark.parametrize("name, args", [("compaction", ["--fraction", "1.5"]), ("telemetry", ["--rounds", "0"]), ("speed", ["--models", "vgg"]),
                                        ("checkpoint_cost", ["--repeats", "0"]), ("ray_scaling", ["--workers", "two"])])
def test_benchmark_options_are_checked(name, args):
    finished = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), *args], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 2 and "error:" in finished.stderr


def test_paired_script_pairs_two_folders_by_seed_and_pools_several_comparisons(tmp_path):
    from record_factory import seeds, write_records

    from bench_harness.significance import paired_difference

    layer, overall = tmp_path / "layer", tmp_path / "global"
    write_records(layer, seeds("contribution", (0.880, 0.884, 0.879, 0.886)))
    write_records(overall, seeds("contribution", (0.885, 0.886, 0.883), scope="global") + seeds("taylor", (0.5, 0.5, 0.5), scope="global"))
    command = [sys.executable, str(BENCHMARKS / "paired.py"), f"{overall}:contribution", f"{layer}:contribution", "--json"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    result = json.loads(finished.stdout)
    expected = paired_difference({0: 88.5, 1: 88.6, 2: 88.3}, {0: 88.0, 1: 88.4, 2: 87.9})
    (comparison,) = result["comparisons"]
    assert comparison["seeds"] == [0, 1, 2] and comparison["unpaired_seeds"] == [3]  # seed 3 has no partner
    assert result["delta_pp"] == pytest.approx(expected.delta) and result["p_value"] == pytest.approx(expected.p_value)
    assert comparison["delta_pp"] == result["delta_pp"] and result["pairs"] == 3
    # Two comparisons pool by seed: runs with the same seed share initialisation and data order in
    # both, so each seed's two differences are averaged and the test is over the three seeds.
    command += [f"{overall}:taylor", f"{layer}:contribution"]
    pooled = json.loads(subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout)
    differences = {0: (0.5 + 50.0 - 88.0) / 2, 1: (0.2 + 50.0 - 88.4) / 2, 2: (0.4 + 50.0 - 87.9) / 2}
    expected = paired_difference(differences, dict.fromkeys(differences, 0.0))
    assert len(pooled["comparisons"]) == 2 and pooled["pairs"] == 3 and pooled["runs_paired"] == 6
    assert pooled["delta_pp"] == pytest.approx(expected.delta) and pooled["p_value"] == pytest.approx(expected.p_value)
    # A pruner that is not there, a folder that is not a results folder, or an odd number of
    # selections: one sentence, exit code 2.
    for selections in ([f"{layer}:taylor", f"{layer}:contribution"], [f"{tmp_path / 'nowhere'}:contribution", f"{layer}:contribution"],
                       ["no-colon", f"{layer}:contribution"], [f"{layer}:contribution"] * 3):
        failed = subprocess.run([sys.executable, str(BENCHMARKS / "paired.py"), *selections], capture_output=True, text=True, timeout=120)
        assert failed.returncode == 2 and failed.stderr.startswith("error: ") and failed.stderr.count("\n") == 1


def test_speed_times_each_event_after_as_many_observed_steps_for_every_pruner(monkeypatch):
    # An event timed on statistics no step has filled would sort zeros, much faster than a real one.
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import speed

    pruners, n = registries().pruners, speed.STEPS_BEFORE_EVENT
    assert speed.steps_before_event(pruners.get("magnitude"), 860) == n  # observes nothing: the first steps
    assert speed.steps_before_event(pruners.get("contribution"), 860) == n
    assert speed.steps_before_event(pruners.get("contribution-stride3"), 860) == 3 * (n - 1) + 1
    assert speed.steps_before_event(pruners.get("contribution-window3"), 860) == 573 + n  # the window is steps 573-859
    for name in ("contribution", "contribution-stride3", "contribution-window3"):
        pruner = pruners.get(name)
        trained = range(speed.steps_before_event(pruner, 860))
        assert len(set(trained) & set(pruner.observed_steps(860))) == n
    assert speed.steps_before_event(pruners.get("contribution-window3"), 12) == 12  # a short epoch: all it has


def test_speed_overhead_counts_the_masking_every_epoch_and_the_observation_only_where_it_runs(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import speed

    none = {"train_images": 100, "epoch_seconds": 1.0}
    magnitude = {"observe_extra_epoch_seconds": 0.1, "event_seconds": 0.0, "observed_epochs": 45}
    windowed = {"observe_extra_epoch_seconds": 0.3, "event_seconds": 0.5, "observed_epochs": 9}
    # 50 epochs of 1 s; masking 0.1 s in each; observation 0.2 s in 9 of them; 9 events of 0.5 s.
    row = speed.pruning_overhead(none, windowed, 100, floor=magnitude)
    assert row["overhead_percent"] == pytest.approx(100 * (50 * 0.1 + 9 * 0.2 + 9 * 0.5) / 50)
    assert speed.pruning_overhead(none, magnitude, 100, floor=magnitude)["overhead_percent"] == pytest.approx(10.0)
    # Without magnitude measured, the whole extra counts in every epoch (an upper bound).
    assert speed.pruning_overhead(none, windowed, 100)["overhead_percent"] == pytest.approx(100 * (50 * 0.3 + 9 * 0.5) / 50)
    # Per image: a measurement on 100 images describes a protocol epoch of 1,000.
    assert speed.pruning_overhead(none, windowed, 1000, floor=magnitude)["overhead_percent"] == pytest.approx(100 * (50 * 1.0 + 9 * 2.0 + 9 * 0.5) / (50 * 10.0))
    # The direct figure: time inside observe in the observed epochs, events beyond magnitude's.
    direct = {**row, "observe_call_epoch_seconds": 0.05, "train_images": 100, "event_seconds": 0.5}
    assert speed.own_direct_percent(direct, {"event_seconds": 0.2}) == pytest.approx(100 * (9 * 0.05 + 9 * 0.3) / 50)
    assert speed.own_direct_percent({**direct, "observe_call_epoch_seconds": None}, {"event_seconds": 0.2}) is None
    observed = {name: speed.protocol_observed_epochs(registries().pruners.get(name)) for name in ("contribution", "contribution-last-epoch", "magnitude", "none")}
    assert observed == {"contribution": 45, "contribution-last-epoch": 9, "magnitude": 0, "none": 0}
