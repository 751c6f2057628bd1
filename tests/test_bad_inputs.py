"""Every bad input gets one sentence and exit code 2, before anything trains, and never a traceback.

Each case builds what it needs in a fresh folder (files, results folders, records, plugins, the
environment) and runs the real command in this process. None of them trains a model, so the
whole suite takes seconds.
"""

import errno
import gzip
import json
import os

import pytest
import torch
from test_data import write_fake_mnist
from typer.testing import CliRunner

from bench_harness import hookimpl
from bench_harness.cli import app
from bench_harness.config import RunConfig
from bench_harness.plugins import registered_plugin
from bench_harness.store import ResultsStore

runner = CliRunner()
RUN = ["run", "-p", "magnitude", "-d", "synthetic", "--epochs", "2", "--prune-every", "1", "--device", "cpu"]


def run_with(*extra):
    return lambda tmp, mp: [*RUN, "--results", str(tmp / "results"), *extra]


def a_file(tmp, name="a-file"):
    path = tmp / name
    path.write_text("not a folder")
    return path


def full_disk(mp):
    """Every flush to disk fails as on a full disk (the probe writes and flushes a file)."""

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    mp.setattr(os, "fsync", no_space)


def mnist_dir(tmp, damage=None, gzipped=False):
    """A flat folder of four tiny MNIST IDX files, one of them damaged by ``damage(path)``."""
    folder = tmp / "mnist"
    write_fake_mnist(folder, gzipped=gzipped)
    if damage is not None:
        damage(folder)
    return folder


def mnist_run(tmp, mp, damage=None, gzipped=False, dataset="mnist"):
    mp.setenv("BENCH_HARNESS_DATA", str(tmp / "cache"))
    folder = mnist_dir(tmp, damage, gzipped)
    return ["run", "-p", "none", "-d", dataset, "--epochs", "1", "--device", "cpu", "--data-dir", str(folder), "--results", str(tmp / "r")]


def truncate(name, keep=100):
    return lambda folder: (folder / name).write_bytes((folder / name).read_bytes()[:keep])


def overwrite(name, data):
    return lambda folder: (folder / name).write_bytes(data)


def with_record(tmp, content, name=None):
    """A results folder holding one file in runs/ (a record, or anything else)."""
    runs = tmp / "results" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    (runs / (name or "r.json")).write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return tmp / "results"


class Broken:
    """A plugin whose registration raises (it is skipped with a warning; its pruner is then unknown)."""

    __name__ = "broken_plugin"

    @hookimpl
    def register_pruners(self, register):
        raise RuntimeError("cannot register")


def broken_plugin_run(tmp, mp):
    mp.setattr("bench_harness.plugins._registries_cache", {})
    return ["run", "-p", "nothing-registered", "-d", "synthetic", "--results", str(tmp / "r")]


CASES = {
    # --- numbers: every numeric option is finite and in range --------------------------------------
    "lr inf": (run_with("--lr", "inf"), "--lr must be a positive finite"),
    "lr nan": (run_with("--lr", "nan"), "--lr must be a positive finite"),
    "lr zero": (run_with("--lr", "0"), "--lr must be a positive finite"),
    "lr negative": (run_with("--lr", "-0.1"), "--lr must be a positive finite"),
    "lr not a number": (run_with("--lr", "fast"), "Invalid value for '--lr'"),
    "prune rate above 1": (run_with("--prune-rate", "1.5"), "--prune-rate must be in"),
    "prune rate nan": (run_with("--prune-rate", "nan"), "--prune-rate must be in"),
    "prune rate inf": (run_with("--prune-rate", "inf"), "--prune-rate must be in"),
    "prune rate negative": (run_with("--prune-rate", "-0.1"), "--prune-rate must be in"),
    "target sparsity 1": (run_with("--target-sparsity", "1"), "--target-sparsity must be between"),
    "target sparsity 0": (run_with("--target-sparsity", "0"), "--target-sparsity must be between"),
    "target sparsity nan": (run_with("--target-sparsity", "nan"), "--target-sparsity must be between"),
    "target sparsity -inf": (run_with("--target-sparsity", "-inf"), "--target-sparsity must be between"),
    "regrow fraction 1": (lambda t, m: [*run_with("--regrow-fraction", "1")(t, m), "-p", "rigl"], "--regrow-fraction must be"),
    "regrow fraction nan": (lambda t, m: [*run_with("--regrow-fraction", "nan")(t, m), "-p", "rigl"], "--regrow-fraction must be"),
    "regrow every negative": (run_with("--regrow-every", "-1"), "--regrow-every must not"),
    "telemetry period 0": (run_with("--telemetry-period", "0"), "--telemetry-period must be positive"),
    "telemetry period nan": (run_with("--telemetry-period", "nan"), "--telemetry-period must be positive"),
    "telemetry period inf": (run_with("--telemetry-period", "inf"), "--telemetry-period must be a finite number"),
    "epochs 0": (run_with("--epochs", "0"), "--epochs must be at least 1"),
    "epochs negative": (run_with("--epochs", "-3"), "--epochs must be at least 1"),
    "batch size 0": (run_with("--batch-size", "0"), "--batch-size must be at least 1"),
    "prune every 0": (run_with("--prune-every", "0"), "--prune-every must be at least 1"),
    "prune start 0": (run_with("--prune-start", "0"), "--prune-start must be an epoch"),
    "prune start last epoch": (run_with("--prune-start", "2"), "--prune-start must be an epoch"),
    "prune end beyond": (run_with("--prune-end", "9"), "--prune-end must be an epoch"),
    "prune end before start": (lambda t, m: [*RUN[:-6], "--epochs", "9", "--device", "cpu", "--prune-start", "5", "--prune-end", "2"],
                               "--prune-end (2) must not come before"),
    "no event at all": (lambda t, m: [*RUN[:5], "--epochs", "3", "--prune-every", "5"], "leaves no pruning event"),
    "val size negative": (run_with("--val-size", "-1"), "--val-size must not be negative"),
    "val size takes every image": (run_with("--val-size", "2000"), "leaves no training images"),
    "seeds 0": (run_with("--seeds", "0"), "--seeds must be at least 1"),
    "concurrency 0": (run_with("--concurrency", "0"), "--concurrency must be between 1 and"),
    "concurrency 33": (run_with("--concurrency", "33"), "--concurrency must be between 1 and"),
    "checkpoint every negative": (run_with("--checkpoint-every", "-1"), "--checkpoint-every must be 0"),
    # --- names --------------------------------------------------------------------------------------
    "granularity unknown": (run_with("--granularity", "weights"), "--granularity must be one of"),
    "scope unknown": (run_with("--scope", "galaxy"), "--scope must be one of"),
    "erk with neurons": (run_with("--scope", "erk", "--granularity", "neurons"), "--scope erk"),
    "schedule unknown": (run_with("--schedule", "linear"), "--schedule must be one of"),
    "device unknown": (run_with("--device", "tpu"), "--device must be auto, cpu or cuda"),
    "pruner misspelt": (lambda t, m: ["run", "-p", "magnitde", "-d", "synthetic"], "Did you mean 'magnitude'"),
    "no pruner": (lambda t, m: ["run", "-d", "synthetic"], "Name at least one pruner"),
    "no dataset": (lambda t, m: ["run", "-p", "magnitude"], "Name a dataset"),
    "dataset unknown": (lambda t, m: ["run", "-p", "magnitude", "-d", "imagenet"], "Unknown dataset 'imagenet'"),
    "model unknown": (run_with("--model", "resnet"), "Unknown model 'resnet'"),
    "granularity the pruner lacks": (lambda t, m: ["run", "-p", "wanda", "-d", "synthetic", "--granularity", "neurons"],
                                     "supports connections only"),
    "unknown option": (run_with("--learning-rate", "0.1"), "No such option"),
    # --- folders: checked writable with a probe before any training -----------------------------------
    "results is a file": (lambda t, m: [*RUN, "--results", str(a_file(t))], "it is a file, not a folder"),
    "results under a file": (lambda t, m: [*RUN, "--results", str(a_file(t) / "sub")], "is a file, not a folder"),
    "results on a full disk": (lambda t, m: (full_disk(m), run_with()(t, m))[1], "the disk is full"),
    "models folder is a file": (lambda t, m: (a_file(t / "results", "models") if (t / "results").mkdir() is None else None,
                                              run_with("--save-models")(t, m))[1], "--save-models folder"),
    "checkpoint folder is a file": (lambda t, m: (a_file(t / "results", "checkpoints") if (t / "results").mkdir() is None else None,
                                                  run_with()(t, m))[1], "checkpoint folder"),
    "a record path is a folder": (lambda t, m: (ResultsStore(t / "results").path_for(
        RunConfig(pruner="magnitude", dataset="synthetic", model="fcnn", epochs=2, prune_every=1)).mkdir(parents=True),
        run_with("--seeds", "1")(t, m))[1], "is a folder where the run's record belongs"),
    "data dir is a file": (lambda t, m: [*RUN, "--data-dir", str(a_file(t))], "--data-dir"),
    "data dir missing": (lambda t, m: [*RUN, "--data-dir", str(t / "nowhere")], "--data-dir"),
    # --- data files: the message names the file to replace, not the cache -----------------------------
    "mnist folder empty": (lambda t, m: (m.setenv("BENCH_HARNESS_DATA", str(t / "c")), (t / "e").mkdir(),
                                         ["run", "-p", "none", "-d", "mnist", "--data-dir", str(t / "e"), "--results", str(t / "r")])[2],
                           "Could not find the MNIST files"),
    "mnist images cut short": (lambda t, m: mnist_run(t, m, truncate("train-images-idx3-ubyte")), "train-images-idx3-ubyte is damaged"),
    "mnist labels not idx": (lambda t, m: mnist_run(t, m, overwrite("t10k-labels-idx1-ubyte", b"hello world")),
                             "t10k-labels-idx1-ubyte is damaged"),
    "mnist labels as images": (lambda t, m: mnist_run(t, m, lambda f: (f / "train-labels-idx1-ubyte").write_bytes(
        (f / "t10k-images-idx3-ubyte").read_bytes())), "3-dimensional data where labels are 1-dimensional"),
    "mnist counts differ": (lambda t, m: mnist_run(t, m, lambda f: (f / "train-labels-idx1-ubyte").write_bytes(
        b"\0\0\x08\x01" + (3).to_bytes(4, "big") + bytes(3))), "do not match"),
    "mnist gzip damaged": (lambda t, m: mnist_run(t, m, overwrite("train-images-idx3-ubyte.gz", b"\x1f\x8b" + b"garbage" * 9), True),
                           "train-images-idx3-ubyte.gz is damaged"),
    "mnist gzip cut short": (lambda t, m: mnist_run(t, m, lambda f: (f / "t10k-images-idx3-ubyte.gz").write_bytes(
        (f / "t10k-images-idx3-ubyte.gz").read_bytes()[:40]), True), "t10k-images-idx3-ubyte.gz is damaged"),
    "fashion mnist file missing": (lambda t, m: mnist_run(t, m, lambda f: (f / "train-images-idx3-ubyte").unlink(), dataset="fashion-mnist"),
                                   "Could not find the Fashion-MNIST files"),
    "cifar10 folder empty": (lambda t, m: ((t / "e").mkdir(), ["run", "-p", "none", "-d", "cifar10", "--data-dir", str(t / "e"),
                                                                 "--results", str(t / "r")])[1], "Could not find CIFAR-10"),
    # --- plugins --------------------------------------------------------------------------------------
    "plugin filter unknown (run)": (lambda t, m: (m.setenv("BENCH_HARNESS_PLUGINS", "nosuchplugin"), run_with()(t, m))[1],
                                    "BENCH_HARNESS_PLUGINS names nosuchplugin"),
    "plugin filter unknown (list)": (lambda t, m: (m.setenv("BENCH_HARNESS_PLUGINS", "magnitude,nosuch"), ["list"])[1],
                                     "names nosuch, which no installed package"),
    "plugin filter empty": (lambda t, m: (m.setenv("BENCH_HARNESS_PLUGINS", " , "), ["list"])[1], "BENCH_HARNESS_PLUGINS is set but names no plugin"),
    "plugin that fails to register": (broken_plugin_run, "Unknown pruner 'nothing-registered'"),
    # --- reading a results folder ---------------------------------------------------------------------
    "leaderboard of nothing": (lambda t, m: ["leaderboard", "--results", str(t / "nowhere")], "No finished runs"),
    "leaderboard of a file": (lambda t, m: ["leaderboard", "--results", str(a_file(t))], "No finished runs"),
    "leaderboard of damaged records only": (lambda t, m: ["leaderboard", "--results", str(with_record(t, b"\xff\xfe"))], "No finished runs"),
    "leaderboard of a list": (lambda t, m: ["leaderboard", "--results", str(with_record(t, [1, 2]))], "No finished runs"),
    "leaderboard format unknown": (lambda t, m: ["leaderboard", "--format", "docx"], "--format must be one of"),
    "leaderboard output is a folder": (lambda t, m: ["leaderboard", "--output", str(t)], "is a folder; name the file"),
    "leaderboard output under a file": (lambda t, m: ["leaderboard", "--output", str(a_file(t) / "board.md")], "is a file, not a folder"),
    "leaderboard output on a full disk": (lambda t, m: (full_disk(m), ["leaderboard", "--output", str(t / "board.md")])[1],
                                          "the disk is full"),
    "report output is a folder": (lambda t, m: ["report", "--output", str(t)], "is a folder; name the HTML file"),
    "report of nothing": (lambda t, m: ["report", "--results", str(t / "nowhere")], "No finished runs"),
    "plot output is a file": (lambda t, m: ["plot", "--output", str(a_file(t))], "is a file; name a folder"),
    "plot of nothing": (lambda t, m: ["plot", "--results", str(t / "nowhere")], "No finished runs"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_input_is_one_sentence_and_exit_code_2(name, tmp_path, monkeypatch):
    build, message = CASES[name]
    monkeypatch.chdir(tmp_path)  # commands that default to ./results look there, never in the checkout
    args = build(tmp_path, monkeypatch)
    before = sorted(tmp_path.rglob("*"))
    if name == "plugin that fails to register":
        with registered_plugin(Broken(), "broken"):
            result = runner.invoke(app, args)
    else:
        result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, (SystemExit, type(None)))
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    usage = any(line.startswith("Usage:") for line in lines)  # click's own answer to a malformed option
    if not usage:
        assert len(errors) == 1 and all(line.startswith(("Error:", "Warning:")) for line in lines), result.output
        assert errors[0].rstrip().endswith((".", "?")) and message in errors[0]
    else:
        assert message in result.output
    written = [path for path in sorted(tmp_path.rglob("*")) if path not in before and path.is_file() and "cache" not in path.parts]
    assert written == [], written  # nothing recorded, no probe or temporary file left (the data cache may fill)


def test_the_suite_is_large_and_distinct():
    assert len(CASES) >= 60


@pytest.mark.parametrize("fault", ["score returns a list", "score returns NaN", "__init__ raises"])
def test_a_plugin_fault_is_a_failed_run_exit_code_1_and_no_traceback(fault, tmp_path):
    from bench_harness.pruner import Pruner

    class Faulty(Pruner):
        name = "faulty"
        description = "Broken on purpose (for tests)."

        def __init__(self, context):
            super().__init__(context)
            if fault == "__init__ raises":
                raise KeyError("missing setting")

        def score(self, layer, granularity):
            if fault == "score returns a list":
                return [1.0]
            return torch.full_like(layer.weight, float("nan"))

    class Plugin:
        __name__ = "faulty_plugin"

        @hookimpl
        def register_pruners(self, register):
            register(Faulty)

    with registered_plugin(Plugin(), "faulty"):
        result = runner.invoke(app, ["run", "-p", "faulty", "-d", "synthetic", "--epochs", "2", "--prune-every", "1", "--device", "cpu",
                                     "--seeds", "1", "--batch-size", "256", "--results", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")]
    assert record["status"] == "failed" and "raised by the pruner plugin faulty_plugin" in record["error"]
    assert f"FAILED {record['run_id']}: {record['error']}" in result.stderr
