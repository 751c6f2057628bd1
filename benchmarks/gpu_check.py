"""The GPU proof: one command that measures everything the GPU decides, inside a time budget.

What the harness claims for a GPU (the training step captured as a CUDA graph, runs trained
concurrently on streams, NVML telemetry and energy, the speed-up and grid-time targets) can only be
settled on one, and GPU time comes rarely and briefly. So the whole measurement is prepared here as
one command. It runs the parts in the order of their value (the CUDA-only tests, then speed, then
the rest), each in its own child process through its ordinary command line, with what is left of
the budget as its time limit. A part that fails or runs out of time is recorded with its reason and
the next one starts; an optional part that no longer fits is skipped and the summary says so. After
every part the output folder is brought up to date, so even a run cut short leaves its findings.

    python benchmarks/gpu_check.py OUT [--data-dir DIR] [--budget-seconds 450]
    python benchmarks/gpu_check.py OUT --cpu-smoke     # every part at tiny sizes on the CPU

OUT receives three files, few enough to travel back from any machine: ``summary.md`` (one page,
also printed: every target marked met or missed, by how much, and where the time goes when one is
missed), ``gpu-check.json`` (every part's status, time, command and figures) and ``files.tar.gz``
(everything the parts wrote: each script's JSON, their logs and reports, profiles, run records).

This process imports neither torch nor the harness, and drives the benchmark scripts, pytest and
``bench run`` only through their command lines: the engine's internals may change, this script's
interface to them is the options it passes, and ``--cpu-smoke`` (run by the test suite) checks them.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import xml.etree.ElementTree as ElementTree
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable

from benchmark_env import git_commit, progress, table

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO / "data" / "fashion-mnist"
"""Where the README says to copy the Fashion-MNIST files (an ignored folder, so they travel as data)."""

FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
"""The four IDX files (each may end in .gz). The harness's loader accepts more layouts; this is the
one the README tells to copy, and the check only decides between real and synthetic data."""

SPEEDUP_TARGET = 15.0
"""The engine trains an epoch at least this many times faster than the textbook loop, both models."""

GRID_TARGET_SECONDS = 600.0
"""``bench run --all --seeds 5`` (every pruner, MNIST and CIFAR-10, 5 seeds, 50 epochs) within 10 minutes.
The pruning (5%) and telemetry (1%) thresholds live in speed.py and telemetry.py, whose JSON carries them."""

DEFAULT_BUDGET_SECONDS = {"full": 450.0, "cpu-smoke": 300.0}
"""Full: 7.5 minutes, so that the command ends within 8 even when a part must be stopped."""

RESERVE_SECONDS = 15.0
"""Kept back from every part's time limit: stopping a part (up to 10 s) and writing the output."""

MIN_PART_SECONDS = 15.0
"""No part starts with less time than this left: it could not even import torch."""

CAP_FACTOR = 3.0
"""No part may run longer than this many times its estimate, so that one that hangs leaves the
others their time."""

GRID_EPOCHS = 6
"""Epochs per run of the measured grids: the fewest with a pruning event at the protocol's every 5."""

PROFILE_LINES = 8
"""Operator rows of each profile quoted in the summary when a target is missed."""


# --- sizes of the two modes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """The options that size each part, per mode (the parts' own defaults are their full sizes)."""

    device: list[str]
    speed: list[str]
    grid: list[str]
    grid_seeds: int
    telemetry: list[str]
    bench_run: list[str]
    compaction: list[str]


FULL = Sizes(
    device=[],
    speed=["--epochs", "2"],
    grid=[],
    grid_seeds=5,
    telemetry=["--trial-epochs", "2", "--rounds", "4"],
    bench_run=["--seeds", "5", "--epochs", "3", "--prune-every", "1"],
    compaction=[],
)

SMOKE = Sizes(
    device=["--device", "cpu"],
    speed=["--train-images", "200", "--epochs", "1", "--prune-events", "1"],
    grid=["--train-images", "200"],
    grid_seeds=1,
    telemetry=["--train-images", "200", "--trial-epochs", "1", "--rounds", "2"],
    bench_run=["--seeds", "1", "--epochs", "2", "--prune-every", "1"],
    compaction=["--batch-sizes", "1,8", "--rounds", "1"],
)


# --- the state of one check --------------------------------------------------------------------------


@dataclass
class PartResult:
    """What became of one part."""

    name: str
    purpose: str
    status: str = "pending"
    """ok | failed | timed out | skipped | interrupted"""
    reason: str | None = None
    seconds: float | None = None
    command: str | None = None
    returncode: int | None = None
    log: str | None = None
    log_tail: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)


@dataclass
class Check:
    """One run of this script: its options, folders, clock and what each part produced."""

    args: argparse.Namespace
    sizes: Sizes
    files: Path
    """Everything the parts write (packed into OUT/files.tar.gz)."""
    env: dict
    started: float
    started_at: str
    commit: str | None
    real_data: bool
    nvidia_smi: str | None
    """The GPU and driver nvidia-smi names, read once at the start (None without one)."""
    installation: list[str] = field(default_factory=list)
    """What is wrong with the harness's installation, read once at the start."""
    results: dict[str, PartResult] = field(default_factory=dict)
    running: set = field(default_factory=set)
    """The parts' processes running now."""
    stopping: bool = False
    """Set when the check is interrupted: no part starts any more."""

    @property
    def smoke(self) -> bool:
        """Tiny sizes on the CPU."""
        return self.args.cpu_smoke

    def elapsed(self) -> float:
        """Seconds since the check started."""
        return time.monotonic() - self.started

    def remaining(self) -> float:
        """Seconds a part may still take."""
        return self.args.budget_seconds - self.elapsed() - RESERVE_SECONDS

    def figures(self, name: str) -> dict:
        """A part's figures (empty if it did not run or wrote nothing readable)."""
        result = self.results.get(name)
        return result.figures if result else {}

    def status(self, name: str) -> str:
        """A part's status, or 'not planned'."""
        result = self.results.get(name)
        return result.status if result else "not planned"

    def ok(self, name: str) -> bool:
        """Whether a part ran and succeeded."""
        result = self.results.get(name)
        return result is not None and result.status == "ok"


# --- the parts ---------------------------------------------------------------------------------------


def python(*arguments: str) -> list[str]:
    """A command run by this Python (its environment holds the harness)."""
    return [sys.executable, *arguments]


def script(name: str, *arguments: str) -> list[str]:
    """A benchmark script's command line."""
    return python(str(REPO / "benchmarks" / f"{name}.py"), *arguments)


def bench(*arguments: str) -> list[str]:
    """``bench ...``, through the module, so no console script needs to be on PATH."""
    return python("-m", "bench_harness.cli", *arguments)


def read_json(path: Path) -> dict:
    """A JSON file's content, or an empty dict when the part did not write it."""
    return json.loads(path.read_text()) if path.is_file() else {}


def junit_counts(path: Path) -> dict:
    """Test counts and failures from pytest's JUnit XML."""
    if not path.is_file():
        return {}
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {key: sum(int(suite.get(key, 0)) for suite in suites) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    problems = []
    for case in root.iter("testcase"):
        for outcome in (*case.findall("failure"), *case.findall("error")):
            message = (outcome.get("message") or "").strip().splitlines()
            problems.append(f"{case.get('name')}: {message[0][:200] if message else outcome.tag}")
    counts["problems"] = problems
    return counts


def run_records(results_dir: Path) -> list[dict]:
    """The run records ``bench run`` wrote."""
    return [json.loads(path.read_text()) for path in sorted((results_dir / "runs").glob("*.json"))]


def mean(values: list[float]) -> float | None:
    """The mean of the values that are there, or None."""
    values = [value for value in values if value is not None]
    return statistics.fmean(values) if values else None


def grid_from_records(records: list[dict], seconds: float) -> dict:
    """A ``bench run`` grid summarised like speed.py's measured grid, plus what only its records hold.

    ``seconds`` is the command's whole wall-clock (start-up and data loading included), which is
    what a user of ``bench run`` waits.
    """
    ok = [record for record in records if record.get("status") == "ok"]
    metrics = [record["metrics"] for record in ok]
    train = sum(m["train_seconds"] / m["concurrent_runs"] for m in metrics)
    prune = sum(m["prune_seconds"] for m in metrics)
    capture = sum(m.get("capture_seconds") or 0.0 for m in metrics)
    accuracy: dict[str, list[float]] = {}
    for record in ok:
        accuracy.setdefault(record["pruner"], []).append(record["metrics"]["test_accuracy"])
    samples = [record["telemetry"]["train"]["samples"] for record in ok if record["telemetry"].get("train")]
    configs = [record["config"] for record in records]
    return {
        "runs": len(records), "completed": len(ok),
        "failed": [f"{record['run_id']}: {record.get('error')}" for record in records if record.get("status") != "ok"],
        "pruners": len({config["pruner"] for config in configs}), "seeds": len({config["seed"] for config in configs}),
        "epochs": max((config["epochs"] for config in configs), default=None),
        "events": max((len(record.get("schedule", {}).get("event_epochs", [])) for record in records), default=0),
        "train_images": metrics[0]["train_images"] if metrics else None, "val_images": metrics[0]["val_images"] if metrics else None,
        "seconds": seconds, "train_seconds": train, "prune_seconds": prune, "capture_seconds": capture,
        "other_seconds": seconds - train - prune - capture,
        "engines": sorted({m["engine"] for m in metrics}), "graph_errors": sorted({m["graph_error"] for m in metrics if m.get("graph_error")}),
        "test_accuracy_mean": mean([m["test_accuracy"] for m in metrics]),
        "test_accuracy_by_pruner": {pruner: statistics.fmean(values) for pruner, values in sorted(accuracy.items())},
        "train_energy_joules_per_run": mean([m.get("train_energy_joules") for m in metrics]),
        "inference_energy_joules_per_run": mean([m.get("inference_energy_joules") for m in metrics]),
        "peak_memory_mb": max((m["peak_memory_mb"] for m in metrics if m.get("peak_memory_mb") is not None), default=None),
        "telemetry_samples_per_group": mean(samples),
        "mean_power_watts": mean([record["telemetry"]["train"].get("power_watts", {}).get("mean") for record in ok if record["telemetry"].get("train")]),
        "environment": records[0].get("environment") if records else None,
    }


@dataclass(frozen=True)
class Part:
    """One measurement: its command, how to read what it wrote, and when it is not run."""

    name: str
    purpose: str
    command: Callable[[Check], list[str]]
    collect: Callable[[Check, PartResult], dict]
    essential: bool = False
    """Essential parts run whatever their estimate; optional ones are skipped when it exceeds what is left."""
    estimate: Callable[[Check], float] = lambda check: 0.0
    """Seconds the part should take on an H100 or H200 (guesses until a GPU has run it); 0: no estimate, no cap."""
    skip: Callable[[Check], str | None] = lambda check: None


def speed_part(model: str, shape: str) -> Part:
    """speed.py for one model: loops side by side, concurrency, every pruner's overhead, a profile."""

    def command(check: Check) -> list[str]:
        return script(
            "speed", "--models", model, "--pruners", "all", *check.sizes.device, *check.sizes.speed,
            "--profile", str(check.files / "profiles"), "--output", str(check.files / f"speed-{model}.json"),
        )

    return Part(
        f"speed-{model}", f"speed.py, {model} on {shape}-shaped data: textbook vs engine, concurrency, pruning overhead, memory, profile",
        command, lambda check, result: read_json(check.files / f"speed-{model}.json"), essential=True,
        estimate=lambda check: 0.0 if check.smoke else {"fcnn": 60.0, "cnn": 80.0}[model],
    )


def grid_estimate(check: Check, model: str) -> float:
    """Seconds a measured grid of ``model`` should take, from speed.py's projection where it ran."""
    if check.smoke:
        return 0.0
    speed = check.figures(f"speed-{model}").get("results", {}).get(model)
    if not speed:
        return 150.0
    projection = speed["projection_seed_grid"]
    full = projection["grid"]
    share = (check.args.grid_epochs * check.sizes.grid_seeds) / (full["epochs"] * full["seeds"])
    per_run_fixed = 1.5  # captures (a pruner that observes captures again after its last event), test pass, the runner's timings
    startup = 25.0  # interpreter, torch, CUDA context, data
    return projection["engine"]["total_seconds"] * share + full["pruners"] * check.sizes.grid_seeds * per_run_fixed + startup


def synthetic_grid_part(model: str, shape: str, fallback: bool = False) -> Part:
    """speed.py --grid-only: every pruner x seeds x a few epochs through run_grid, on synthetic pixels.

    As a ``fallback`` it runs only when the Fashion-MNIST grid did not succeed, so that the
    MNIST-shaped half of the grid is still measured if the real files cannot be read there.
    """

    def command(check: Check) -> list[str]:
        return script(
            "speed", "--grid-only", "--models", model, "--pruners", "all", "--grid-epochs", str(check.args.grid_epochs),
            "--grid-seeds", str(check.sizes.grid_seeds), *check.sizes.device, *check.sizes.grid,
            "--output", str(check.files / f"grid-{model}.json"),
        )

    def collect(check: Check, result: PartResult) -> dict:
        payload = read_json(check.files / f"grid-{model}.json")
        grid = payload.get("results", {}).get(model, {}).get("grid", {}).get("measured")
        return {"data": f"synthetic pixels, {shape}-shaped", "model": model, "grid": grid, "environment": payload.get("environment")} if grid else {}

    def skip(check: Check) -> str | None:
        if check.smoke and model == "cnn":
            return "cpu-smoke: the runner times every trained CNN's inference, about 20 s a run on one CPU thread; the fcnn grid runs the same code"
        if fallback and check.ok(f"grid-{model}"):
            return "the Fashion-MNIST grid succeeded"
        return None

    return Part(
        f"grid-{model}" + ("-synthetic" if fallback else ""),
        f"measured seed grid, {shape}-shaped synthetic data (speed.py --grid-only)" + (", if the Fashion-MNIST grid failed" if fallback else ""),
        command, collect,
        estimate=lambda check: grid_estimate(check, model), skip=skip,
    )


def fashion_grid_part() -> Part:
    """``bench run --all`` on real Fashion-MNIST: the MNIST-shaped half of the grid, with telemetry and energy."""

    def command(check: Check) -> list[str]:
        return bench(
            "run", "--all", "--dataset", "fashion-mnist", "--data-dir", str(check.args.data_dir), "--seeds", str(check.sizes.grid_seeds),
            "--epochs", str(check.args.grid_epochs), *check.sizes.device, "--results", str(check.files / "bench-run-fashion-mnist"), "--force",
        )

    def collect(check: Check, result: PartResult) -> dict:
        records = run_records(check.files / "bench-run-fashion-mnist")
        if not records:
            return {}
        return {"data": "real Fashion-MNIST (MNIST's shape and sizes)", "model": "fcnn", "grid": grid_from_records(records, result.seconds or 0.0)}

    return Part(
        "grid-fcnn", "measured seed grid on real Fashion-MNIST (bench run --all), with telemetry and energy", command, collect,
        estimate=lambda check: grid_estimate(check, "fcnn"),
    )


def bench_run_part() -> Part:
    """One ``bench run`` on the built-in synthetic dataset, for telemetry, energy and memory in run records."""

    def command(check: Check) -> list[str]:
        return bench(
            "run", "--all", "--dataset", "synthetic", *check.sizes.bench_run, *check.sizes.device,
            "--results", str(check.files / "bench-run-synthetic"), "--force",
        )

    def collect(check: Check, result: PartResult) -> dict:
        records = run_records(check.files / "bench-run-synthetic")
        return {"data": "the built-in synthetic dataset", "run": grid_from_records(records, result.seconds or 0.0)} if records else {}

    def skip(check: Check) -> str | None:
        if check.real_data and check.ok("grid-fcnn"):
            return "the Fashion-MNIST grid above was this bench run (telemetry and energy are in its records)"
        return None

    return Part(
        "bench-run", "bench run --all on the built-in synthetic dataset: records with telemetry, energy and memory", command, collect,
        estimate=lambda check: 0.0 if check.smoke else 45.0, skip=skip,
    )


def cuda_tests_part() -> Part:
    """The CUDA-only tests: capture per pruner, replay equals eager, shared GPU equals solo, fallback, bench run."""

    def command(check: Check) -> list[str]:
        return python("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_engine_cuda.py", "--junitxml", str(check.files / "cuda-tests.xml"))

    def skip(check: Check) -> str | None:
        if check.smoke:
            return "cpu-smoke: without a GPU every CUDA-only test skips (the test suite collects the file)"
        return None

    return Part(
        "cuda-tests", "CUDA-only tests (tests/test_engine_cuda.py)", command, lambda check, result: junit_counts(check.files / "cuda-tests.xml"),
        essential=True, estimate=lambda check: 75.0, skip=skip,
    )


def json_script_part(name: str, description: str, sizes: Callable[["Check"], list[str]], seconds: float) -> Part:
    """A part that runs one benchmark script, which writes ``NAME.json``, and reads that JSON back."""

    def command(check: Check) -> list[str]:
        return script(name, *check.sizes.device, *sizes(check), "--output", str(check.files / f"{name}.json"))

    return Part(
        name, description, command, lambda check, result: read_json(check.files / f"{name}.json"),
        estimate=lambda check: 0.0 if check.smoke else seconds,
    )


def telemetry_part() -> Part:
    """telemetry.py: training with and without the NVML sampler, alternating."""
    return json_script_part("telemetry", "telemetry.py: training time with and without the NVML sampler", lambda check: check.sizes.telemetry, 60.0)


def compaction_part() -> Part:
    """compaction.py: masked against physically compacted neuron-pruned models."""
    return json_script_part(
        "compaction", "compaction.py: masked vs compacted neuron-pruned models, checks and speed-up", lambda check: check.sizes.compaction, 30.0
    )


def plan(check: Check) -> list[Part]:
    """Every part, most valuable first: what only a GPU can show, then the targets, then the rest."""
    return [
        cuda_tests_part(),
        speed_part("fcnn", "MNIST"),
        speed_part("cnn", "CIFAR-10"),
        telemetry_part(),
        *([fashion_grid_part(), synthetic_grid_part("fcnn", "MNIST", fallback=True)] if check.real_data else [synthetic_grid_part("fcnn", "MNIST")]),
        synthetic_grid_part("cnn", "CIFAR-10"),
        bench_run_part(),
        compaction_part(),
    ]


PART_NAMES = ("cuda-tests", "speed-fcnn", "speed-cnn", "telemetry", "grid-fcnn", "grid-fcnn-synthetic", "grid-cnn", "bench-run", "compaction")


# --- running a part ------------------------------------------------------------------------------------


def stop(process: subprocess.Popen) -> None:
    """End a part's whole process group (its DataLoader workers and test subprocesses too)."""
    for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def run_command(command: list[str], log: Path, timeout: float, env: dict, running: set) -> tuple[int | None, bool]:
    """(exit code, timed out) of a command run with its output in ``log``, stopped after ``timeout`` s.

    The process is in ``running`` while it runs, so that an interruption of the check can stop it.
    """
    with log.open("wb") as stream:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True)
        running.add(process)
        try:
            return process.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            stop(process)
            return process.returncode, True
        except BaseException:
            stop(process)
            raise
        finally:
            running.discard(process)


def tail(log: Path, lines: int = 15) -> list[str]:
    """The last non-empty lines of a log."""
    if not log.is_file():
        return []
    text = log.read_text(errors="replace").splitlines()
    return [line for line in text if line.strip()][-lines:]


def why_not(check: Check, part: Part) -> str | None:
    """Why a part is not run now, or None: its own reason, --parts, or the budget."""
    if check.stopping:
        return "the check was stopped before this part"
    if check.args.parts is not None and part.name not in check.args.parts:
        return "not among --parts"
    reason = part.skip(check)
    if reason is not None:
        return reason
    remaining = check.remaining()
    if remaining < MIN_PART_SECONDS:
        return f"budget spent ({max(remaining, 0.0):.0f} s left)"
    estimate = part.estimate(check)
    if not part.essential and estimate > remaining:
        return f"needs about {estimate:.0f} s, {remaining:.0f} s left in the budget"
    return None


def part_limit(check: Check, part: Part) -> float:
    """A part's time limit: what is left of the budget, and at most ``CAP_FACTOR`` times its estimate."""
    estimate = part.estimate(check)
    return min(check.remaining(), CAP_FACTOR * estimate) if estimate > 0 else check.remaining()


def execute(check: Check, part: Part) -> None:
    """Run one part with what is left of the budget as its limit, or record why not.

    The result goes into ``check.results`` as soon as it exists. Nothing about the part itself
    raises out of here (an exit code, a timeout, a command or an output this script cannot handle
    are all recorded); only an interruption of the whole check does.
    """
    result = check.results[part.name] = PartResult(part.name, part.purpose)
    try:
        reason = why_not(check, part)
        if reason is None:
            command, limit = part.command(check), part_limit(check, part)
    except Exception as error:  # noqa: BLE001
        result.status, result.reason = "failed", f"could not be prepared: {type(error).__name__}: {error}"
        return
    if reason is not None:
        result.status, result.reason = "skipped", reason
        progress(f"{part.name}: skipped ({reason})")
        return
    result.command, result.log = shlex.join(command), f"logs/{part.name}.log"
    log = check.files / result.log
    progress(f"{part.name}: started, at most {limit:.0f} s: {result.command}")
    started = time.monotonic()
    try:
        result.returncode, timed_out = run_command(command, log, limit, check.env, check.running)
    except KeyboardInterrupt:
        result.status, result.reason = "interrupted", "the check was stopped while this part ran"
        raise
    except OSError as error:  # the command could not start
        result.returncode, timed_out = None, False
        result.status, result.reason = "failed", f"{type(error).__name__}: {error}"
    finally:
        result.seconds = time.monotonic() - started
        result.log_tail = tail(log)
    if check.stopping:
        result.status, result.reason = "interrupted", "the check was stopped while this part ran"
    elif result.status == "failed":
        pass
    elif timed_out:
        result.status, result.reason = "timed out", f"stopped at its limit, after {result.seconds:.0f} s"
    elif result.returncode != 0:
        last = result.log_tail[-1] if result.log_tail else "no output"
        result.status, result.reason = "failed", f"exit code {result.returncode}: {last[:300]}"
    else:
        result.status = "ok"
    try:
        result.figures = part.collect(check, result)
    except Exception as error:  # noqa: BLE001 - an unreadable output is one more finding, not the end
        result.reason = (result.reason + "; " if result.reason else "") + f"its output could not be read ({type(error).__name__}: {error})"
        result.status = "failed"
    progress(f"{part.name}: {result.status} after {result.seconds:.0f} s" + (f" ({result.reason})" if result.reason else ""))


def run_parts(check: Check, parts: list[Part]) -> None:
    """Run the parts, one at a time in their order (``--jobs 1``) or several at once, updating OUT after each.

    An interruption (Ctrl-C, SIGTERM) stops the running parts and starts no more; what ran is kept.
    """
    lock = threading.Lock()

    def run(part: Part) -> None:
        try:
            execute(check, part)
        finally:
            with lock:
                write_output(check, finished=False)

    executor = ThreadPoolExecutor(max_workers=check.args.jobs) if check.args.jobs > 1 else None
    try:
        if executor is None:
            for part in parts:
                run(part)
        else:
            for future in as_completed([executor.submit(run, part) for part in parts]):
                future.result()
    except KeyboardInterrupt:
        check.stopping = True
        for process in list(check.running):
            stop(process)
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    for result in check.results.values():
        if result.status == "pending":
            result.status, result.reason = "skipped", "the check was stopped before this part"


# --- figures and verdicts ------------------------------------------------------------------------------


@dataclass
class Target:
    """One target's verdict: met, missed, or why it could not be judged."""

    key: str
    target: str
    measured: str = "-"
    verdict: str = "not measured"
    missed: bool = False


def above(value: float, target: float) -> tuple[str, bool]:
    """Verdict of an at-least target (a ratio)."""
    if value >= target:
        return f"met, {100 * (value / target - 1):.0f}% above {target:g}x", False
    return f"**MISSED**, {100 * (1 - value / target):.0f}% short of {target:g}x", True


def below(value: float, target: float, unit: str, digits: int = 2) -> tuple[str, bool]:
    """Verdict of an under target, with the margin in the target's unit."""
    if value < target:
        return f"met, {target - value:.{digits}f}{unit} under {target:g}{unit}", False
    return f"**MISSED**, {value - target:.{digits}f}{unit} over {target:g}{unit}", True


def minutes(seconds: float) -> str:
    """Seconds as minutes with one decimal."""
    return f"{seconds / 60:.1f} min"


def number(value: float | None, spec: str, unit: str = "") -> str:
    """A formatted number with its unit, or 'n/a'."""
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def speed_figures(check: Check, model: str) -> dict | None:
    """speed.py's figures of one model, or None."""
    return check.figures(f"speed-{model}").get("results", {}).get(model)


def grid_part(check: Check, model: str) -> str:
    """The part whose measured grid of ``model`` counts: the synthetic fallback where it ran, else the grid part."""
    return f"grid-{model}-synthetic" if check.ok(f"grid-{model}-synthetic") else f"grid-{model}"


def grid_figures(check: Check, model: str) -> dict | None:
    """The measured grid of one model (synthetic or Fashion-MNIST), or None."""
    return check.figures(grid_part(check, model)).get("grid")


def extrapolate_grid(measured: dict, speed: dict) -> dict:
    """The full seed grid's wall time for one model, from a measured grid of a few epochs.

    Splits the measured time as the runner spends it: training grows with runs, epochs and images,
    validation likewise, pruning with the events, and the rest (captures, test passes, the per-run
    inference timings, start-up) is paid once per run. Each share is scaled to the protocol's grid,
    whose runs, epochs, events and images come from speed.py's projection. The records do not time
    validation apart, so it is computed from the engine's evaluation rate that speed.py measured.
    """
    full = speed["projection_seed_grid"]["grid"]
    eval_per_image = speed["engine"]["eval_seconds"] / speed["engine"]["test_images"]
    train, prune, seconds = measured["train_seconds"], measured["prune_seconds"], measured["seconds"]
    validation = min(measured["runs"] * measured["epochs"] * (measured["val_images"] or 0) * eval_per_image, max(0.0, seconds - train - prune))
    runs = full["pruners"] * full["seeds"] / measured["runs"]
    shares = {
        "training": runs * full["epochs"] / measured["epochs"] * full["train_images"] / measured["train_images"] * train,
        "validation": full["pruners"] * full["seeds"] * full["epochs"] * full["val_images"] * eval_per_image,
        "pruning": runs * prune * (full["events"] / measured["events"] if measured["events"] else 0.0),
        "once per run": runs * max(0.0, seconds - train - validation - prune),
    }
    return {"total_seconds": sum(shares.values()), "shares": shares, "basis": f"measured {measured['runs']} runs x {measured['epochs']} epochs, extrapolated"}


def grid_halves(check: Check) -> dict[str, dict]:
    """Per model: the full grid's time extrapolated from its measured grid, else speed.py's projection."""
    halves = {}
    for model in ("fcnn", "cnn"):
        speed, measured = speed_figures(check, model), grid_figures(check, model)
        if speed is None:
            continue
        projected = speed["projection_seed_grid"]["engine"]["total_seconds"]
        half = {"total_seconds": projected, "projected_seconds": projected, "shares": None, "basis": "speed.py's projection", "measured": measured}
        if measured and check.ok(grid_part(check, model)):  # a grid cut short or with failed runs would mislead
            half.update(extrapolate_grid(measured, speed), data=check.figures(grid_part(check, model))["data"])
        halves[model] = half
    return halves


def speed_targets(check: Check) -> list[Target]:
    """The per-epoch speed-up of each model."""
    found = []
    for model, shape in (("fcnn", "MNIST"), ("cnn", "CIFAR-10")):
        target = Target(f"speed-{model}", f"engine >= {SPEEDUP_TARGET:g}x the textbook loop per epoch, {model} ({shape} shape)")
        speed = speed_figures(check, model)
        if speed is None:
            target.verdict = f"not measured (speed-{model} {check.status(f'speed-{model}')})"
        else:
            textbook, engine = speed["textbook"]["epoch_seconds"], speed["engine"]["epoch_seconds"]
            target.measured = f"{speed['speedup']:.1f}x ({textbook:.3f} s vs {engine:.3f} s per epoch, {speed['engine']['engine']})"
            target.verdict, target.missed = above(speed["speedup"], SPEEDUP_TARGET)
        found.append(target)
    return found


def grid_target(check: Check) -> Target:
    """The seed grid's wall time, from both halves."""
    halves = grid_halves(check)
    shape = next((speed_figures(check, m)["projection_seed_grid"]["grid"] for m in ("fcnn", "cnn") if speed_figures(check, m)), None)
    runs = f" ({shape['pruners']} pruners x 2 datasets x {shape['seeds']} seeds x {shape['epochs']} epochs)" if shape else ""
    target = Target("grid", f"`bench run --all --seeds 5`{runs} under {GRID_TARGET_SECONDS / 60:g} min")
    missing = [model for model in ("fcnn", "cnn") if model not in halves]
    if missing:
        target.verdict = f"not judged: no speed.py figures for {', '.join(missing)}"
        return target
    total = sum(half["total_seconds"] for half in halves.values())
    projected = sum(half["projected_seconds"] for half in halves.values())
    basis = "; ".join(f"{model}: {half['basis']}" for model, half in halves.items())
    target.measured = f"{minutes(total)} ({basis}; speed.py's projection {minutes(projected)})"
    target.verdict, target.missed = below(total / 60, GRID_TARGET_SECONDS / 60, " min", 1)
    return target


def pruning_target(check: Check) -> Target:
    """Every pruner's overhead on both models, judged by its worst."""
    overheads = []
    for model in ("fcnn", "cnn"):
        speed = speed_figures(check, model)
        if speed:
            threshold = check.figures(f"speed-{model}")["settings"]["overhead_target_percent"]
            overheads += [(row["overhead_percent"], pruner, model, threshold) for pruner, row in speed["pruning"].items()]
    if not overheads:
        return Target("pruning", "pruning overhead of every pruner under speed.py's target", verdict="not measured (no speed.py figures)")
    worst, pruner, model, threshold = max(overheads)
    over = [f"{p}/{m} {value:.1f}%" for value, p, m, _ in sorted(overheads, reverse=True) if value >= threshold]
    target = Target("pruning", f"pruning overhead under {threshold:g}% of a run, every pruner")
    target.measured = f"worst {worst:.2f}% ({pruner}, {model})" + (f"; over: {', '.join(over)}" if over else "")
    target.verdict, target.missed = below(worst, threshold, "%")
    return target


def telemetry_target(check: Check) -> Target:
    """The NVML sampler's cost, judged by the worse model."""
    telemetry = check.figures("telemetry")
    if not telemetry.get("results"):
        return Target("telemetry", "telemetry overhead under telemetry.py's target", verdict=f"not measured (telemetry {check.status('telemetry')})")
    threshold = telemetry["settings"]["target_percent"]
    results = telemetry["results"]
    target = Target("telemetry", f"telemetry under {threshold:g}% of training time")
    target.measured = ", ".join(f"{model} {result['overhead_percent_median']:+.2f}%" for model, result in results.items()) + " (median of paired trials)"
    inactive = [f"{model}: {result['sampler_error']}" for model, result in results.items() if not result["sampler_active"]]
    if inactive:
        target.verdict = f"not measured: the NVML sampler was inactive ({'; '.join(inactive)})"
    else:
        target.verdict, target.missed = below(max(result["overhead_percent_median"] for result in results.values()), threshold, "%")
    return target


def targets(check: Check) -> list[Target]:
    """Every target of the issue, in a fixed order, each judged on its own."""
    found = []
    for judge in (speed_targets, grid_target, pruning_target, telemetry_target):
        try:
            judged = judge(check)
        except Exception as error:  # noqa: BLE001 - a figure of unexpected shape must not cost the summary
            judged = Target(judge.__name__, judge.__name__.replace("_", " "), verdict=f"not judged: {type(error).__name__}: {error}")
        found += judged if isinstance(judged, list) else [judged]
    return found


def part_line(result: PartResult) -> str:
    """A part's result in a few words."""
    figures = result.figures
    if result.status != "ok":
        return result.reason or ""
    if result.name == "cuda-tests":
        failed = figures.get("failures", 0) + figures.get("errors", 0)
        text = f"{figures.get('passed', 0)} passed, {failed} failed, {figures.get('skipped', 0)} skipped"
        return text + (" (nothing was tested: no GPU)" if figures.get("tests") and figures.get("skipped") == figures.get("tests") else "")
    if result.name.startswith("speed-"):
        model = result.name.removeprefix("speed-")
        speed = figures["results"][model]
        return f"speed-up {speed['speedup']:.1f}x, engine {speed['engine']['engine']}"
    if result.name.startswith("grid-"):
        grid = figures["grid"]
        return f"{grid['completed']} of {grid['runs']} runs ok in {grid['seconds']:.0f} s ({figures['data']})"
    if result.name == "bench-run":
        run = figures["run"]
        return f"{run['completed']} of {run['runs']} runs ok, engines {', '.join(run['engines'])}"
    if result.name == "telemetry":
        return ", ".join(f"{model} {r['overhead_percent_median']:+.2f}%" for model, r in figures["results"].items())
    if result.name == "compaction":
        matched = all(r["checks"]["outputs_equal"] and r["checks"]["params_equal"] for r in figures["results"].values())
        return "compact models match the masked ones" if matched else "a compact model does NOT match its masked one"
    return ""


def speed_section(check: Check) -> list[str]:
    """Per model: both loops, accuracy, concurrency, memory; then every pruner's overhead."""
    rows, overhead_rows, pruners = [], [], []
    for model in ("fcnn", "cnn"):
        speed = speed_figures(check, model)
        if speed is None:
            continue
        textbook, engine, group = speed["textbook"], speed["engine"], speed["concurrency"]
        gain = engine["epoch_seconds"] * group["runs"] / group["group_epoch_seconds"]
        rows.append([
            model, f"{engine['train_images']:,}", f"{textbook['epoch_seconds']:.3f}", f"{engine['epoch_seconds']:.3f}", f"{speed['speedup']:.1f}x",
            f"{100 * textbook['test_accuracy']:.1f}% / {100 * engine['test_accuracy']:.1f}%", f"{group['runs']}: {gain:.2f}x",
            f"{number(engine['peak_memory_mb'], '.0f')} / {number(group['peak_memory_mb'], '.0f')}",
        ])
        pruners = pruners or list(speed["pruning"])
        overhead_rows.append([model, *(
            "-" if pruner not in speed["pruning"] else f"{speed['pruning'][pruner]['overhead_percent']:.2f}%" + ("" if speed["pruning"][pruner]["within_target"] else " (over)")
            for pruner in pruners
        )])
    if not rows:
        return []
    return [
        "## Speed, accuracy, concurrency, memory (synthetic pixels)", "",
        table(rows, ["model", "train images", "textbook s/epoch", "engine s/epoch", "speed-up", "test acc textbook / engine", "K runs: gain", "peak MB 1 run / K runs"], "github"),
        "", "Pruning overhead, as a share of a seed-protocol run:", "", table(overhead_rows, ["model", *pruners], "github"), "",
    ]


def records_line(label: str, run: dict) -> str:
    """What only run records show: engines, energy, power, telemetry samples, memory."""
    return (
        f"{label}: {run['completed']} of {run['runs']} recorded runs ok, engines {', '.join(run['engines']) or '-'}; training energy per run {number(run['train_energy_joules_per_run'], '.0f', ' J')}, "
        f"mean power {number(run['mean_power_watts'], '.0f', ' W')}, telemetry samples per group {number(run['telemetry_samples_per_group'], '.0f')}, "
        f"peak training memory {number(run['peak_memory_mb'], '.0f', ' MB')} (the group's)."
    )


def grid_section(check: Check) -> list[str]:
    """The measured grids, their extrapolation, and the run records' energy, memory and accuracy."""
    rows = []
    for model, half in grid_halves(check).items():
        measured = half["measured"]
        shares = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in half["shares"].items()) if half["shares"] else "-"
        rows.append([
            model, half.get("data", "-"),
            f"{measured['completed']}/{measured['runs']} runs x {measured['epochs']} epochs in {measured['seconds']:.0f} s" if measured else "not measured",
            minutes(half["total_seconds"]), minutes(half["projected_seconds"]), shares,
        ])
    lines = []
    if rows:
        lines += ["## Seed grid", "", table(rows, ["model", "data", "measured grid", "full grid", "speed.py projection", "where the full grid's time goes"], "github"), ""]
    fashion = check.figures("grid-fcnn").get("grid")
    if fashion and "test_accuracy_by_pruner" in fashion:
        accuracies = ", ".join(f"{pruner} {100 * value:.2f}%" for pruner, value in fashion["test_accuracy_by_pruner"].items())
        lines += [records_line("Fashion-MNIST grid", fashion), f"Its test accuracy after {fashion['epochs']} epochs (mean over seeds): {accuracies}.", ""]
    run = check.figures("bench-run").get("run")
    if run:
        lines += [records_line("bench run on the synthetic dataset", run), ""]
    return lines


def compaction_section(check: Check) -> list[str]:
    """Compact against masked, per model and batch size."""
    payload = check.figures("compaction")
    if not payload.get("results"):
        return []
    batches = payload["settings"]["batch_sizes"]
    rows = []
    for model, result in payload["results"].items():
        speedups = {timing["batch_size"]: timing["speedup"] for timing in result["timings"]}
        matched = result["checks"]["outputs_equal"] and result["checks"]["params_equal"]
        rows.append([model, f"{result['flops_ratio']:.2f}x", *(f"{speedups[batch]:.2f}x" for batch in batches), "pass" if matched else "FAIL"])
    header = ["model", "FLOPs ratio", *(f"batch {batch:,}" for batch in batches), "checks"]
    return ["## Compaction: compact over masked speed-up, half the units removed", "", table(rows, header, "github"), ""]


def profile_excerpt(path: Path) -> list[str]:
    """A profile's first line, its column header and top operators, and its totals."""
    lines = path.read_text().splitlines()
    rules = [index for index, line in enumerate(lines) if line.startswith("---")]
    if len(rules) < 2:
        return lines[: PROFILE_LINES + 1]
    return [lines[0], *lines[rules[0] + 1 : rules[1] + 1 + PROFILE_LINES], *(line for line in lines if "time total" in line)]


def time_section(check: Check, judged: list[Target]) -> list[str]:
    """Where the time goes when a target was missed: the engine's profile per model and pruner."""
    missed = {target.key for target in judged if target.missed}
    if not missed:
        return []
    lines = ["## Where the time goes (a target was missed)", ""]
    if "grid" in missed:
        lines += ["The seed grid's split is in its table above.", ""]
    for model in ("fcnn", "cnn"):
        speed = speed_figures(check, model)
        if not speed:
            continue
        wanted = [pruner for pruner, row in speed["pruning"].items() if not row["within_target"]]
        if {f"speed-{model}", "grid"} & missed:
            wanted.insert(0, "none")
        for pruner in wanted:
            profile = speed.get("profiles", {}).get(pruner)
            path = check.files / "profiles" / Path(profile["file"]).name if profile else None
            if path is not None and path.is_file():
                lines += [f"One engine epoch, {model}, pruner {pruner} (files/profiles/{path.name} in files.tar.gz):", "", "```", *profile_excerpt(path), "```", ""]
    return lines


def problems(check: Check) -> list[str]:
    """Everything that went wrong, one line each."""
    found = [*check.installation]
    found += [f"{result.name} {result.status}: {result.reason}" for result in check.results.values() if result.status in ("failed", "timed out", "interrupted")]
    found += [f"CUDA-only test failed: {problem}" for problem in check.figures("cuda-tests").get("problems", [])]
    on_gpu = gpu_name(check) is not None
    for model in ("fcnn", "cnn"):
        speed = speed_figures(check, model)
        if speed:
            errors = [speed["engine"]["graph_error"], *speed["concurrency"]["graph_errors"], *speed["concurrency"]["errors"]]
            errors += [row["graph_error"] for row in (speed["pruning_baseline"], *speed["pruning"].values())]
            found += [f"speed-{model}: {error}" for error in sorted({e for e in errors if e})]
            if "error" in speed.get("profiles", {}):
                found.append(f"speed-{model}: the profile failed: {speed['profiles']['error']}")
            if on_gpu:
                modes = {speed["engine"]["engine"], *speed["concurrency"]["engines"], *(row["engine"] for row in speed["pruning"].values())}
                found += [f"speed-{model}: a run trained in '{mode}' mode on the GPU, not 'cuda-graph'" for mode in sorted(modes - {"cuda-graph"})]
    for name in ("grid-fcnn", "grid-fcnn-synthetic", "grid-cnn"):
        grid = check.figures(name).get("grid")
        if grid:
            found += [f"{name}: run failed: {failure}" for failure in grid["failed"]]
            found += [f"{name}: {error}" for error in grid.get("graph_errors", [])]
            if on_gpu:
                found += [f"{name}: runs trained in '{mode}' mode on the GPU" for mode in grid["engines"] if mode != "cuda-graph"]
    run = check.figures("bench-run").get("run")
    if run:
        found += [f"bench-run: run failed: {failure}" for failure in run["failed"]]
    for label, records in (("grid-fcnn", check.figures("grid-fcnn").get("grid")), ("bench-run", run)):
        if on_gpu and records and "train_energy_joules_per_run" in records and records["train_energy_joules_per_run"] is None:
            found.append(f"{label}: no training energy in the run records on the GPU (NVML missing?)")
    telemetry = check.figures("telemetry").get("results", {})
    if on_gpu:
        found += [f"telemetry ({model}): the NVML sampler was inactive on the GPU: {r['sampler_error']}" for model, r in telemetry.items() if not r["sampler_active"]]
    compaction = check.figures("compaction").get("results", {})
    found += [f"compaction: the compact {model} does not match the masked model" for model, r in compaction.items() if not (r["checks"]["outputs_equal"] and r["checks"]["params_equal"])]
    return found


def environment(check: Check) -> dict | None:
    """The environment record of the first part that wrote one (device, versions, commit)."""
    for name in ("speed-fcnn", "speed-cnn", "telemetry", "compaction", "grid-cnn"):
        env = check.figures(name).get("environment")
        if env:
            return env
    grid = grid_figures(check, "fcnn") or {}
    return grid.get("environment") or check.figures("grid-fcnn").get("environment")


def gpu_name(check: Check) -> str | None:
    """The GPU the parts ran on, from their records, else from nvidia-smi; None without one."""
    env = environment(check)
    return env.get("gpu_name") if env is not None else check.nvidia_smi


def nvidia_smi() -> str | None:
    """The GPU's name and driver as nvidia-smi reports them, or None."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        found = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = found.stdout.strip().splitlines()
    return lines[0].replace(", ", ", driver ") if found.returncode == 0 and lines else None


def guarded(section: Callable[..., list[str]], *arguments) -> list[str]:
    """A section's lines, or one line saying why it could not be written (figures of unexpected shape)."""
    try:
        return section(*arguments)
    except Exception as error:  # noqa: BLE001
        return [f"({section.__name__.replace('_', ' ')} could not be written: {type(error).__name__}: {error})", ""]


def summary(check: Check, judged: list[Target], found: list[str], finished: bool) -> str:
    """The one-page markdown summary."""
    env = environment(check)
    gpu = gpu_name(check)
    device = gpu or (f"CPU ({env['cpu_name']})" if env else "CPU")
    data_dir = display_path(check.args.data_dir)
    if check.smoke:
        data = "synthetic pixels for every grid (cpu-smoke)"
    elif not check.real_data:
        data = f"no Fashion-MNIST files in `{data_dir}`, so synthetic pixels for every grid"
    elif check.status("grid-fcnn-synthetic") not in ("skipped", "pending"):
        data = f"Fashion-MNIST files in `{data_dir}`, but their grid failed, so synthetic pixels for every grid"
    else:
        data = f"real Fashion-MNIST from `{data_dir}` for the MNIST-shaped grid"
    versions = f"; torch {env['torch']}, CUDA {env.get('cuda_version') or '-'}" if env else ""
    lines = [
        f"# GPU check: {device}", "",
        f"{check.started_at}, commit {check.commit or 'unknown'}; {'cpu-smoke' if check.smoke else 'full'} mode, budget {check.args.budget_seconds:.0f} s, "
        f"{'used' if finished else 'so far'} {check.elapsed():.0f} s{versions}.",
        f"Data: {data}; speed, telemetry and compaction use synthetic pixels of MNIST's and CIFAR-10's shapes.",
    ]
    if not finished:
        lines.append("**Not finished: this summary is brought up to date after every part.**")
    if check.smoke:
        lines.append("**cpu-smoke: tiny sizes on the CPU. This checks that every part runs; its figures mean nothing.**")
    elif gpu is None:
        lines.append("**No GPU: these are CPU figures, which say nothing about the GPU targets.**")
    lines += ["", "## Targets", "", table([[t.target, t.measured, t.verdict] for t in judged], ["target", "measured", "verdict"], "github"), ""]
    part_rows = [[r.name, r.status, "-" if r.seconds is None else f"{r.seconds:.0f}", guarded(lambda: [part_line(r)])[0]] for r in check.results.values()]
    lines += ["## Parts, in order of value", "", table(part_rows, ["part", "status", "s", "result"], "github"), ""]
    for section in (speed_section, grid_section, compaction_section):
        lines += guarded(section, check)
    lines += guarded(time_section, check, judged)
    if found:
        lines += ["## Problems", "", *(f"- {problem}" for problem in found), ""]
    lines.append("files.tar.gz holds every file the parts wrote (each script's JSON, logs with their full reports, profiles, run records); gpu-check.json every part's status, command and figures.")
    return "\n".join(lines) + "\n"


def display_path(path: Path) -> str:
    """A path relative to the repository where it lies inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# --- output ---------------------------------------------------------------------------------------------


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file, so the folder never holds half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    temporary.replace(path)


def write_output(check: Check, finished: bool) -> str:
    """Bring OUT up to date: the summary, the JSON of every part, the archive of every file."""
    out = check.args.output
    judged = targets(check)
    try:
        found = problems(check)
    except Exception as error:  # noqa: BLE001 - see guarded()
        found = [f"(the list of problems could not be made: {type(error).__name__}: {error})"]
    text = summary(check, judged, found, finished)
    payload = {
        "check": "bench-harness GPU check (benchmarks/gpu_check.py)",
        "mode": "cpu-smoke" if check.smoke else "full",
        "finished": finished,
        "started_at": check.started_at,
        "elapsed_seconds": check.elapsed(),
        "budget_seconds": check.args.budget_seconds,
        "git_commit": check.commit,
        "command": shlex.join(["python", *sys.argv]),
        "gpu": gpu_name(check),
        "real_fashion_mnist": check.real_data,
        "data_dir": display_path(check.args.data_dir),
        "nvidia_smi": check.nvidia_smi,
        "targets": [target.__dict__ for target in judged],
        "problems": found,
        "parts": [result.__dict__ for result in check.results.values()],
    }
    write_atomically(out / "summary.md", lambda path: path.write_text(text))
    write_atomically(out / "gpu-check.json", lambda path: path.write_text(json.dumps(payload, indent=1, default=str) + "\n"))

    def pack(path: Path) -> None:
        with tarfile.open(path, "w:gz") as archive:
            archive.add(check.files, arcname="files")

    write_atomically(out / "files.tar.gz", pack)
    return text


# --- command line ----------------------------------------------------------------------------------------


def installation_problems() -> list[str]:
    """Why the parts would not measure this checkout, if they would not: the harness not installed
    (its plugins arrive through entry points, so a plain checkout registers no pruner) or installed
    from elsewhere."""
    spec = importlib.util.find_spec("bench_harness")
    if spec is None or spec.origin is None:
        return ["bench_harness cannot be imported: install this checkout first (pip install --no-deps -e .)"]
    origin = Path(spec.origin).resolve()
    found = []
    if REPO not in origin.parents:
        found.append(f"bench_harness is imported from {origin.parent}, not from this checkout: install this checkout (pip install --no-deps -e .)")
    if "none" not in {entry.name for entry in metadata.entry_points(group="bench_harness")}:
        found.append("the built-in plugins are not registered (no entry points): install this checkout (pip install --no-deps -e .)")
    return found


def has_fashion_mnist(folder: Path) -> bool:
    """Whether the four Fashion-MNIST IDX files (plain or gzipped) are in ``folder``."""
    return all((folder / name).is_file() or (folder / f"{name}.gz").is_file() for name in FASHION_MNIST_FILES)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; see --help."""
    parser = argparse.ArgumentParser(
        description="Run every GPU measurement of bench-harness within a time budget (CUDA-only tests, speed, grid, telemetry, "
        "bench run with energy, compaction), each part contained, and write a one-page summary with every target marked.",
    )
    parser.add_argument("output", type=Path, help="folder for summary.md, gpu-check.json and files.tar.gz (created; files there are replaced)")
    parser.add_argument("--cpu-smoke", action="store_true", help="every part at tiny sizes on the CPU: checks that they run, measures nothing")
    parser.add_argument("--budget-seconds", type=float, default=None, help="wall-clock for everything; parts that no longer fit are skipped [default: 450, cpu-smoke 300]")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="folder with the four Fashion-MNIST IDX files; without them the grid uses synthetic data [default: data/fashion-mnist]")
    parser.add_argument("--grid-epochs", type=int, default=GRID_EPOCHS, help=f"epochs per run of the measured grids, extrapolated to the protocol's 50 [default: {GRID_EPOCHS}]")
    parser.add_argument("--jobs", type=int, default=None, help="parts run at once; above 1 only where timings do not matter [default: 1, cpu-smoke 2]")
    parser.add_argument("--parts", default=None, help=f"comma-separated parts to run, the others are skipped (to rerun some): {', '.join(PART_NAMES)} [default: all]")
    args = parser.parse_args(argv)
    if args.budget_seconds is None:
        args.budget_seconds = DEFAULT_BUDGET_SECONDS["cpu-smoke" if args.cpu_smoke else "full"]
    if args.budget_seconds <= RESERVE_SECONDS + MIN_PART_SECONDS:
        parser.error(f"--budget-seconds must be above {RESERVE_SECONDS + MIN_PART_SECONDS:g}")
    if args.jobs is None:
        args.jobs = 2 if args.cpu_smoke else 1
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.grid_epochs <= 5:
        parser.error("--grid-epochs must be above 5, so that every pruning run has an event")
    if args.parts is not None:
        args.parts = [name.strip() for name in args.parts.split(",") if name.strip()]
        unknown = [name for name in args.parts if name not in PART_NAMES]
        if unknown:
            parser.error(f"--parts takes {', '.join(PART_NAMES)}; unknown: {', '.join(unknown)}")
    return args


def new_check(args: argparse.Namespace, scratch: Path) -> Check:
    """A check that keeps its working files in ``scratch`` and starts its clock now."""
    files = scratch / "files"
    (files / "logs").mkdir(parents=True, exist_ok=True)
    args.output.mkdir(parents=True, exist_ok=True)
    # The loaders unpack dataset files into BENCH_HARNESS_DATA: a folder of this check, not the user's cache.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "BENCH_HARNESS_DATA": str(scratch / "data-cache")}
    if args.cpu_smoke:
        env.setdefault("OMP_NUM_THREADS", "1")  # timings mean nothing here; one thread per part keeps small CPUs responsive
    return Check(
        args, SMOKE if args.cpu_smoke else FULL, files, env, time.monotonic(), datetime.now(timezone.utc).isoformat(timespec="seconds"),
        git_commit(), real_data=not args.cpu_smoke and has_fashion_mnist(args.data_dir), nvidia_smi=nvidia_smi(),
        installation=installation_problems(),
    )


def main(argv: list[str] | None = None) -> int:
    """Run the parts, keep OUT up to date, print the summary; exit 1 if a part failed or timed out, 130 if stopped."""
    args = parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        check = new_check(args, scratch)
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # a stop from outside ends the parts and still writes OUT
        progress(f"budget {args.budget_seconds:.0f} s, {args.jobs} part(s) at a time; output in {args.output}")
        parts = plan(check)
        for part in parts:
            check.results[part.name] = PartResult(part.name, part.purpose)
        run_parts(check, parts)
        text = write_output(check, finished=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(text)
    if check.stopping:
        return 130
    return 1 if any(result.status in ("failed", "timed out") for result in check.results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
