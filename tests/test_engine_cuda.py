"""The training engine on a real GPU (every test here is skipped without one).

On the CPU, tests/test_engine.py checks the graph path's bookkeeping by replaying the recorded step
as Python. Here the step is really captured as a CUDA graph: capture must succeed for every built-in
pruner, replays must compute what eager steps compute, runs sharing the GPU must stay what they are
alone, a failed capture must fall back to eager without harming later runs, and ``bench run`` must
record the GPU-only metrics. No timing is checked; speed lives in benchmarks/.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bench_harness.cli import app
from bench_harness.data import split_validation
from bench_harness.datasets import make_synthetic
from bench_harness.engine import Normaliser, ResidentSplit, Trainer, fit_together
from bench_harness.masks import MaskSet
from bench_harness.models import build_fcnn
from bench_harness.plugins import registries
from bench_harness.pruner import PruningContext, find_prunable_layers
from bench_harness.schedule import PruningSchedule

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

EPOCHS, EVERY, RATE, BATCH, LR = 4, 1, 0.3, 64, 0.002
BUILTIN = tuple(registries().pruners.names())
CASES = [(name, granularity) for name in BUILTIN for granularity in ("connections", "neurons")
         if granularity in registries().pruners.get(name).granularities]


@pytest.fixture(scope="module")
def splits():
    """1,030 training images: 16 full batches of 64, captured, and a partial one, trained eagerly."""
    return split_validation(make_synthetic(num_train=1130, num_test=100), 100)


def cuda_trainer(splits, pruner_name, seed, use_graph, granularity="connections"):
    """A run on the GPU, built as prepare_run builds it (capturable Adam whether or not it captures)."""
    device = torch.device("cuda")
    torch.manual_seed(seed)
    model = build_fcnn(tuple(splits.train_images.shape[1:]), 10).to(device)
    layers = find_prunable_layers(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, capturable=True)
    pruner_class = registries().pruners.get(pruner_name) if isinstance(pruner_name, str) else pruner_name
    pruner = pruner_class(PruningContext(model, layers, optimizer, seed, device, granularity, BATCH))
    # Events after epochs 1, 2 and 3; a pruner that regrows swaps at the first two (the cosine ends at 0).
    schedule = PruningSchedule.build(EPOCHS, EVERY, RATE, prunes=pruner_class.prunes, regrow_fraction=0.3 if pruner_class.regrows() else 0.0)
    return Trainer(model, optimizer, layers, MaskSet(layers), pruner, schedule, Normaliser(splits.mean, splits.std, device),
                   BATCH, seed, device, granularity, "layer", use_cuda_graph=use_graph)


def on_gpu(splits):
    return (ResidentSplit(splits.train_images.cuda(), splits.train_labels.cuda()),
            ResidentSplit(splits.val_images.cuda(), splits.val_labels.cuda()))


def assert_same_run(a, b):
    for name in a.masks.weight:
        assert torch.equal(a.masks.weight[name], b.masks.weight[name]), f"different pruning decisions in {name}"
    for x, y in zip(a.model.parameters(), b.model.parameters()):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pruner_name, granularity", CASES)
def test_every_builtin_pruner_is_captured_and_replays_what_eager_steps_compute(splits, pruner_name, granularity):
    eager = cuda_trainer(splits, pruner_name, 3, use_graph=False, granularity=granularity)
    graphed = cuda_trainer(splits, pruner_name, 3, use_graph=True, granularity=granularity)
    outcomes = fit_together([eager, graphed], *on_gpu(splits))
    assert [outcome.error for outcome in outcomes] == [None, None]
    assert graphed.engine == "cuda-graph", graphed.graph_error
    assert eager.engine == "eager" and graphed.capture_seconds > 0
    assert_same_run(eager, graphed)
    torch.testing.assert_close(
        torch.tensor([r.train_loss for r in outcomes[0].history]), torch.tensor([r.train_loss for r in outcomes[1].history]), rtol=1e-4, atol=1e-6
    )


def test_runs_sharing_the_gpu_are_what_they_are_alone(splits):
    settings = (("taylor", 0), ("contribution", 1), ("magnitude", 2))
    alone = []
    for name, seed in settings:
        trainer = cuda_trainer(splits, name, seed, use_graph=True)
        trainer.fit(*on_gpu(splits))
        alone.append(trainer)
    together = [cuda_trainer(splits, name, seed, use_graph=True) for name, seed in settings]
    outcomes = fit_together(together, *on_gpu(splits))
    for solo, shared, outcome in zip(alone, together, outcomes):
        assert outcome.error is None and shared.engine == "cuda-graph"
        assert_same_run(solo, shared)


def test_a_failed_capture_falls_back_to_eager_and_later_runs_still_capture(tmp_path):
    # In a fresh process: if a failed capture left the CUDA context broken, it must not take the
    # rest of this test session down with it.
    script = tmp_path / "failed_capture.py"
    script.write_text(textwrap.dedent('''
        TESTS = "@TESTS@"  # this folder, so the script can import this module's helpers
        import json, warnings
        import torch
        from bench_harness.data import split_validation
        from bench_harness.datasets import make_synthetic
        from bench_harness.engine import fit_together
        from bench_harness.pruner import Pruner
        import sys
        sys.path.insert(0, TESTS)
        from test_engine_cuda import cuda_trainer, on_gpu

        class SyncingPruner(Pruner):
            """Claims to be capturable but synchronises with the host in observe()."""
            name = "syncing"
            def __init__(self, context):
                super().__init__(context)
                self.losses = []
            def observe(self, step):
                self.losses.append(float(step.loss))  # .item(): not allowed while capturing
            def score(self, layer, granularity):
                return layer.weight.detach().abs()

        splits = split_validation(make_synthetic(num_train=1130, num_test=100), 100)
        broken = cuda_trainer(splits, SyncingPruner, 0, use_graph=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = fit_together([broken], *on_gpu(splits))[0]
        healthy = cuda_trainer(splits, "magnitude", 1, use_graph=True)
        second = fit_together([healthy], *on_gpu(splits))[0]
        torch.cuda.synchronize()
        print(json.dumps({
            "first_error": None if first.error is None else repr(first.error), "first_engine": broken.engine,
            "graph_error": broken.graph_error, "warned": any("training eagerly" in str(w.message) for w in caught),
            "second_error": None if second.error is None else repr(second.error), "second_engine": healthy.engine,
        }))
    ''').replace("@TESTS@", str(Path(__file__).resolve().parent)))
    finished = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    assert result["first_error"] is None and result["first_engine"] == "eager" and result["graph_error"] and result["warned"]
    assert result["second_error"] is None and result["second_engine"] == "cuda-graph"


def test_bench_run_on_the_gpu_records_graph_memory_and_telemetry(tmp_path):
    common = ["run", "--pruner", "taylor", "--pruner", "none", "--dataset", "synthetic", "--seeds", "2", "--epochs", "3",
              "--prune-every", "1", "--device", "cuda"]
    runner = CliRunner()
    for folder, extra in (("graph", []), ("eager", ["--no-cuda-graphs"])):
        result = runner.invoke(app, [*common, *extra, "--results", str(tmp_path / folder)])
        assert result.exit_code == 0, result.output

    def load(folder):
        return {p.name: json.loads(p.read_text()) for p in sorted((tmp_path / folder / "runs").glob("*.json"))}

    graph, eager = load("graph"), load("eager")
    assert graph.keys() == eager.keys() and len(graph) == 4
    for name, record in graph.items():
        metrics = record["metrics"]
        assert record["status"] == "ok"
        assert metrics["engine"] == "cuda-graph" and metrics["graph_error"] is None and metrics["capture_seconds"] > 0
        assert eager[name]["metrics"]["engine"] == "eager"
        assert metrics["peak_memory_mb"] > 0 and metrics["inference_peak_memory_mb"] > 0
        assert metrics["latency_ms_batch1"] > 0 and metrics["throughput_per_second"] > 0
        if record["telemetry"]["train"] is not None:  # NVML present: energy and samples recorded
            # The energy counter may not tick during a phase this short; that it was read is enough here.
            assert metrics["train_energy_joules"] >= 0 and record["telemetry"]["train"]["samples"] >= 2
        # Same arithmetic with and without the graph (capturable Adam in both), up to float rounding.
        losses = [h["train_loss"] for h in record["history"]]
        torch.testing.assert_close(torch.tensor(losses), torch.tensor([h["train_loss"] for h in eager[name]["history"]]), rtol=1e-4, atol=1e-6)
