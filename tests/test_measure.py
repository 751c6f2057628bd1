"""Tests of bench_harness.measure: compaction, FLOPs, latency, telemetry (real and fake NVML), saved size."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bench_harness.measure import telemetry
from bench_harness.measure.compaction import compact_model, compact_param_count
from bench_harness.measure.flops import count_flops
from bench_harness.measure.latency import measure_inference, measure_latency
from bench_harness.measure.size import model_bytes_dense, model_bytes_sparse
from bench_harness.models import build_cnn, build_fcnn

MNIST_SHAPE = (1, 28, 28)
CIFAR_SHAPE = (3, 32, 32)


# ------------------------------------------------------------------------------------ compaction
def _prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def _random_alive(model: nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Kill about half the units of every hidden prunable layer (never all of them)."""
    alive = {}
    for name, layer in _prunable(model)[:-1]:
        units = layer.weight.shape[0]
        mask = torch.rand(units, generator=generator) < 0.5
        mask[torch.randint(units, (1,), generator=generator)] = True
        alive[name] = mask
    return alive


def _mask_in_place(model: nn.Sequential, alive: dict[str, torch.Tensor]) -> None:
    """Zero dead units' incoming weights and bias, and their outgoing columns in the next layer."""
    layers = _prunable(model)
    with torch.no_grad():
        for (name, layer), (_, consumer) in zip(layers, layers[1:]):
            if name not in alive:
                continue
            dead = ~alive[name]
            layer.weight[dead] = 0
            layer.bias[dead] = 0
            block = consumer.weight.shape[1] // dead.numel()
            consumer.weight[:, dead.repeat_interleave(block)] = 0


@pytest.mark.parametrize("builder,shape", [(build_fcnn, MNIST_SHAPE), (build_cnn, CIFAR_SHAPE)], ids=["fcnn", "cnn"])
def test_compaction_matches_masked_original(builder, shape):
    torch.manual_seed(0)
    model = builder(shape, 10)
    alive = _random_alive(model, torch.Generator().manual_seed(1))
    _mask_in_place(model, alive)

    compact = compact_model(model, alive)

    inputs = torch.randn(16, *shape)
    model.eval()
    compact.eval()
    with torch.no_grad():
        difference = (model(inputs) - compact(inputs)).abs().max().item()
    assert difference < 1e-5
    real_count = sum(p.numel() for p in compact.parameters())
    assert compact_param_count(model, alive) == real_count
    assert real_count < sum(p.numel() for p in model.parameters())
    for name, mask in alive.items():
        assert compact._modules[name].weight.shape[0] == int(mask.sum())
    assert compact is not model and compact[-1].weight.dtype == torch.float32


def test_compaction_drops_the_right_conv_columns_without_outgoing_masking():
    """Only incoming weights and bias zeroed (ReLU(0) = 0): still equal, via the flatten column blocks."""
    torch.manual_seed(3)
    model = build_cnn((1, 8, 8), 4)
    alive = {"0": torch.tensor([True, False] * 16), "3": torch.tensor([False, True, True, False] * 16)}
    with torch.no_grad():
        for name, mask in alive.items():
            model._modules[name].weight[~mask] = 0
            model._modules[name].bias[~mask] = 0
    compact = compact_model(model, alive)
    assert compact[7].in_features == 32 * 2 * 2
    inputs = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        assert (model(inputs) - compact(inputs)).abs().max().item() < 1e-5


def test_compaction_rejects_bad_chains_and_masks():
    model = build_fcnn(MNIST_SHAPE, 10)
    with pytest.raises(ValueError, match="Every unit"):
        compact_model(model, {"1": torch.zeros(300, dtype=torch.bool)})
    with pytest.raises(ValueError, match="output layer"):
        compact_model(model, {"5": torch.tensor([True] * 9 + [False])})
    with pytest.raises(ValueError, match="not prunable"):
        compact_model(model, {"2": torch.ones(300, dtype=torch.bool)})
    mixing = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 2))
    with pytest.raises(ValueError, match="LayerNorm"):
        compact_param_count(mixing, {"0": torch.tensor([True, False] * 3)})
    with pytest.raises(ValueError, match="Sequential"):
        compact_model(nn.Linear(3, 3), {})


def test_compaction_without_dead_units_is_an_unchanged_copy():
    model = build_fcnn(MNIST_SHAPE, 10)
    compact = compact_model(model, {"1": torch.ones(300, dtype=torch.bool)})
    assert compact_param_count(model, {}) == sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in compact.parameters())
    assert compact[1].weight.data_ptr() != model[1].weight.data_ptr()


# ----------------------------------------------------------------------------------------- FLOPs
def test_fcnn_flops_are_exact():
    result = count_flops(build_fcnn(MNIST_SHAPE, 10), MNIST_SHAPE)
    assert result["flops_dense"] == 784 * 300 + 300 * 100 + 100 * 10 == 266_200
    assert result["flops_effective"] == result["flops_dense"]
    assert [layer["name"] for layer in result["per_layer"]] == ["1", "3", "5"]
    assert {layer["kind"] for layer in result["per_layer"]} == {"linear"}


def test_cnn_flops_are_exact():
    result = count_flops(build_cnn(CIFAR_SHAPE, 10), CIFAR_SHAPE)
    conv1 = 32 * 32 * 32 * 3 * 3 * 3  # out_h * out_w * out_c * in_c * kh * kw (padding keeps 32x32)
    conv2 = 16 * 16 * 64 * 32 * 3 * 3  # after the first 2x2 pool
    linear = 64 * 8 * 8 * 10
    assert [layer["flops_dense"] for layer in result["per_layer"]] == [conv1, conv2, linear]
    assert result["flops_dense"] == conv1 + conv2 + linear == 5_644_288
    assert [layer["kind"] for layer in result["per_layer"]] == ["conv2d", "conv2d", "linear"]


@pytest.mark.parametrize("builder,shape", [(build_fcnn, MNIST_SHAPE), (build_cnn, CIFAR_SHAPE)], ids=["fcnn", "cnn"])
def test_effective_flops_halve_with_half_the_weights_masked(builder, shape):
    model = builder(shape, 10)
    masks = {}
    for name, layer in _prunable(model):
        mask = torch.zeros(layer.weight.numel(), dtype=torch.bool)
        mask[: layer.weight.numel() // 2] = True  # every layer here has an even weight count
        masks[name] = mask.reshape(layer.weight.shape)
    result = count_flops(model, shape, masks)
    assert result["flops_effective"] * 2 == result["flops_dense"]
    for layer in result["per_layer"]:
        assert layer["flops_effective"] * 2 == layer["flops_dense"]


def test_effective_flops_use_the_weights_own_zeros_without_masks():
    model = build_fcnn(MNIST_SHAPE, 10)
    with torch.no_grad():
        model[3].weight.zero_()
    result = count_flops(model, MNIST_SHAPE)
    assert result["flops_effective"] == 784 * 300 + 100 * 10
    with pytest.raises(ValueError, match="shape"):
        count_flops(model, MNIST_SHAPE, {"1": torch.ones(3, 3)})


# --------------------------------------------------------------------------------------- latency
class _Sleeper(nn.Module):
    """Sleeps 2 ms per call except every fifth call, which sleeps 40 ms; records its mode per call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.seen = []

    def forward(self, x):
        self.calls += 1
        self.seen.append((self.training, torch.is_inference_mode_enabled(), tuple(x.shape)))
        time.sleep(0.040 if self.calls % 5 == 0 else 0.002)
        return x


def test_latency_is_the_median_and_restores_training_mode():
    model = _Sleeper().train()
    median_ms = measure_latency(model, (3, 4, 4), batch_size=7, device="cpu", warmup=2, repeats=10)
    assert model.calls == 12
    assert model.training  # restored
    assert all(seen == (False, True, (7, 3, 4, 4)) for seen in model.seen)
    # Two of the ten timed calls sleep 40 ms: a mean would be above 9 ms, the median stays near 2 ms.
    assert 1.9 <= median_ms < 9.0


def test_inference_numbers_are_positive_and_finite():
    model = build_cnn(CIFAR_SHAPE, 10)
    result = measure_inference(model, CIFAR_SHAPE, "cpu", throughput_batch_size=8, warmup=1, repeats=3)
    assert set(result) == {"latency_ms_batch1", "throughput_per_second", "throughput_batch_size"}
    assert result["throughput_batch_size"] == 8
    for key in ("latency_ms_batch1", "throughput_per_second"):
        assert result[key] > 0 and math.isfinite(result[key])


def test_latency_refuses_a_device_the_model_is_not_on():
    with pytest.raises(ValueError, match="move the model"):
        measure_latency(build_fcnn(MNIST_SHAPE, 10), MNIST_SHAPE, 1, "meta", warmup=0, repeats=1)


# ------------------------------------------------------------------------------------- telemetry
def test_telemetry_is_a_silent_no_op_without_a_gpu(monkeypatch):
    # Force "no library" so the test means the same on a machine that does have a GPU.
    def missing():
        raise telemetry.pynvml.NVMLError(telemetry.pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(telemetry.pynvml, "nvmlInit", missing)
    for sampler in (telemetry.TelemetrySampler(0, period_seconds=0.01), telemetry.TelemetrySampler(None)):
        with sampler:
            time.sleep(0.02)
        assert sampler.summary() is None
        assert sampler.energy_joules is None and sampler.energy_source is None
        assert sampler.error
    info = telemetry.nvml_info()
    assert info["nvml_available"] is False and info["devices"] == [] and info["error"]


@pytest.mark.skipif(telemetry.nvml_info()["nvml_available"], reason="this machine has a working NVML")
def test_telemetry_with_the_real_library_on_a_gpu_less_machine():
    with telemetry.TelemetrySampler(0, period_seconds=0.01) as sampler:
        time.sleep(0.02)
    assert sampler.summary() is None and sampler.energy_joules is None and not sampler.running


def test_telemetry_without_pynvml_is_a_no_op(monkeypatch):
    monkeypatch.setattr(telemetry, "pynvml", None)
    sampler = telemetry.TelemetrySampler(0)
    sampler.start()
    sampler.stop()
    assert sampler.summary() is None
    assert telemetry.nvml_info()["error"]


class _FakeNvml:
    """Scripted NVML: each query returns the next value of its sequence; None means 'not supported'."""

    def __init__(self, monkeypatch, *, power_mw, energy_mj=None, temperature=None):
        nvml = telemetry.pynvml
        self.utilization = iter([10, 30])
        self.memory_bytes = iter([100 * 2**20, 300 * 2**20])
        self.power_mw = iter(power_mw)
        self.energy_mj = iter(energy_mj) if energy_mj is not None else None
        self.temperature_calls = 0
        self.shutdowns = 0

        def not_supported():
            raise nvml.NVMLError(nvml.NVML_ERROR_NOT_SUPPORTED)

        def temperature_query(handle, sensor):
            self.temperature_calls += 1
            if temperature is None:
                not_supported()
            return temperature

        def energy_query(handle):
            if self.energy_mj is None:
                not_supported()
            return next(self.energy_mj)

        def shutdown():
            self.shutdowns += 1

        for name, function in {
            "nvmlInit": lambda: None,
            "nvmlShutdown": shutdown,
            "nvmlDeviceGetHandleByIndex": lambda index: ("handle", index),
            "nvmlDeviceGetUtilizationRates": lambda handle: SimpleNamespace(gpu=next(self.utilization), memory=0),
            "nvmlDeviceGetMemoryInfo": lambda handle: SimpleNamespace(used=next(self.memory_bytes), total=80 * 2**30),
            "nvmlDeviceGetPowerUsage": lambda handle: next(self.power_mw),
            "nvmlDeviceGetTemperature": temperature_query,
            "nvmlDeviceGetClockInfo": lambda handle, clock: 1980,
            "nvmlDeviceGetTotalEnergyConsumption": energy_query,
            "nvmlSystemGetDriverVersion": lambda: "999.1",
            "nvmlSystemGetNVMLVersion": lambda: b"13.999",
            "nvmlDeviceGetCount": lambda: 1,
            "nvmlDeviceGetName": lambda handle: "NVIDIA H100 80GB HBM3",
        }.items():
            monkeypatch.setattr(nvml, name, function)
        clock = iter([10.0, 12.0, 12.0])  # start, stop, and one spare for a summary() while running
        monkeypatch.setattr(telemetry, "_clock_seconds", lambda: next(clock))


def _two_sample_run(period_seconds: float = 60.0) -> telemetry.TelemetrySampler:
    """A run whose period is far longer than the run: exactly the start and the stop samples."""
    sampler = telemetry.TelemetrySampler(0, period_seconds=period_seconds)
    started = time.perf_counter()
    with sampler:
        pass
    assert time.perf_counter() - started < 5.0  # stop() does not wait out the 60 s period
    return sampler


def test_telemetry_summary_with_the_energy_counter(monkeypatch):
    fake = _FakeNvml(monkeypatch, power_mw=[100_000, 300_000], energy_mj=[1_000_000, 1_450_500], temperature=61)
    summary = _two_sample_run().summary()
    assert summary["samples"] == 2
    assert summary["period_seconds"] == 60.0
    assert summary["duration_seconds"] == pytest.approx(2.0)
    assert summary["gpu_utilization_percent"] == {"mean": 20.0, "max": 30.0}
    assert summary["memory_used_mb"] == {"mean": 200.0, "max": 300.0}
    assert summary["power_watts"] == {"mean": 200.0, "max": 300.0}
    assert summary["temperature_c"] == {"mean": 61.0, "max": 61.0}
    assert summary["sm_clock_mhz"] == {"mean": 1980.0, "max": 1980.0}
    assert summary["energy_joules"] == pytest.approx(450.5)
    assert summary["energy_source"] == "counter"
    assert fake.shutdowns == 1


def test_telemetry_falls_back_to_integrated_power(monkeypatch):
    fake = _FakeNvml(monkeypatch, power_mw=[100_000, 300_000], energy_mj=None, temperature=None)
    sampler = _two_sample_run()
    summary = sampler.summary()
    # Trapezoid: (100 W + 300 W) / 2 over the 2 s between the two samples.
    assert summary["energy_joules"] == pytest.approx(400.0)
    assert summary["energy_source"] == "integrated-power"
    assert sampler.energy_joules == pytest.approx(400.0) and sampler.energy_source == "integrated-power"
    # The unsupported temperature is None and asked only once, then dropped from the sampling loop.
    assert summary["temperature_c"] == {"mean": None, "max": None}
    assert fake.temperature_calls == 1
    assert summary["power_watts"]["mean"] == pytest.approx(200.0)


def test_telemetry_thread_samples_every_period(monkeypatch):
    _FakeNvml(monkeypatch, power_mw=[], energy_mj=[0, 5_000])
    constant = {"nvmlDeviceGetPowerUsage": lambda handle: 250_000, "nvmlDeviceGetUtilizationRates": lambda handle: SimpleNamespace(gpu=50),
                "nvmlDeviceGetMemoryInfo": lambda handle: SimpleNamespace(used=2**20)}
    for name, function in constant.items():
        monkeypatch.setattr(telemetry.pynvml, name, function)
    monkeypatch.setattr(telemetry, "_clock_seconds", time.perf_counter)
    sampler = telemetry.TelemetrySampler(0, period_seconds=0.01)
    with sampler:
        time.sleep(0.2)
    summary = sampler.summary()
    assert summary["samples"] >= 5  # the thread sampled between the start and stop samples
    assert summary["power_watts"] == {"mean": 250.0, "max": 250.0}
    assert summary["energy_joules"] == pytest.approx(5.0) and summary["energy_source"] == "counter"
    assert not sampler.running and sampler._thread is None


def test_nvml_info_with_fake_nvml(monkeypatch):
    _FakeNvml(monkeypatch, power_mw=[])
    info = telemetry.nvml_info()
    assert info == {
        "nvml_available": True,
        "driver_version": "999.1",
        "nvml_version": "13.999",
        "devices": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_mb": 80 * 1024.0}],
        "error": None,
    }


# ------------------------------------------------------------------------------------------ size
def _visible_gpu(monkeypatch, uuid: str, nvml_uuids: list[str] | None) -> None:
    """CUDA sees one GPU with ``uuid``; NVML lists ``nvml_uuids`` (None: pynvml is not installed)."""
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: SimpleNamespace(uuid=uuid))
    if nvml_uuids is None:
        monkeypatch.setattr(telemetry, "pynvml", None)
        return
    for name, function in {
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": lambda: len(nvml_uuids),
        "nvmlDeviceGetHandleByIndex": lambda index: index,
        "nvmlDeviceGetUUID": lambda handle: nvml_uuids[handle],
    }.items():
        monkeypatch.setattr(telemetry.pynvml, name, function)


def test_nvml_index_follows_the_gpu_not_cudas_numbering(monkeypatch):
    # CUDA_VISIBLE_DEVICES=2 on a three-GPU node: CUDA calls it cuda:0, NVML calls it 2.
    uuids = ["GPU-11111111-aaaa", "GPU-22222222-bbbb", "GPU-33333333-CCCC"]
    _visible_gpu(monkeypatch, "33333333-cccc", uuids)
    assert telemetry.nvml_index(torch.device("cuda", 0)) == 2
    assert telemetry.nvml_index(torch.device("cpu")) is None


@pytest.mark.parametrize("nvml_uuids", [["GPU-11111111-aaaa"], None], ids=["no-match", "no-pynvml"])
def test_nvml_index_falls_back_to_cudas_index(monkeypatch, nvml_uuids):
    _visible_gpu(monkeypatch, "99999999-ffff", nvml_uuids)
    assert telemetry.nvml_index(torch.device("cuda", 1)) == 1


def test_sparse_bytes_beat_dense_bytes_for_a_mostly_zero_model():
    torch.manual_seed(0)
    model = build_fcnn(MNIST_SHAPE, 10)
    assert model_bytes_sparse(model) == model_bytes_dense(model)  # no zeros: nothing to gain or lose
    with torch.no_grad():
        for _, layer in _prunable(model):
            layer.weight.mul_(torch.rand_like(layer.weight) < 0.1)  # about 90% zeros
    dense, sparse = model_bytes_dense(model), model_bytes_sparse(model)
    assert sparse < dense
    # 10% of the values plus one int64 column index each: well under half the dense file.
    assert sparse < 0.4 * dense


def test_sparse_format_covers_conv_weights():
    torch.manual_seed(0)
    model = build_cnn(CIFAR_SHAPE, 10)
    with torch.no_grad():
        for _, layer in _prunable(model):
            layer.weight.mul_(torch.rand_like(layer.weight) < 0.1)
    assert model_bytes_sparse(model) < model_bytes_dense(model)


def test_csr_encoding_round_trips_a_conv_weight():
    from bench_harness.measure.size import _sparse_entry

    torch.manual_seed(0)
    weight = torch.randn(6, 3, 3, 3) * (torch.rand(6, 3, 3, 3) < 0.3)
    entry = _sparse_entry(weight)
    assert set(entry) == {"crow_indices", "col_indices", "values", "shape"}
    rebuilt = torch.zeros(6, 27)
    for row in range(6):
        start, end = int(entry["crow_indices"][row]), int(entry["crow_indices"][row + 1])
        rebuilt[row, entry["col_indices"][start:end]] = entry["values"][start:end]
    assert torch.equal(rebuilt.reshape(entry["shape"]), weight)
    assert entry["col_indices"].untyped_storage().nbytes() == 8 * int(torch.count_nonzero(weight))


# ----------------------------------------------------------------------------- GPU-only checks
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_cuda_path_of_latency_flops_and_compaction():
    torch.manual_seed(0)
    model = build_cnn(CIFAR_SHAPE, 10).cuda()
    result = measure_inference(model, CIFAR_SHAPE, "cuda", throughput_batch_size=256, warmup=3, repeats=10)
    assert result["latency_ms_batch1"] > 0 and math.isfinite(result["throughput_per_second"])
    assert count_flops(model, CIFAR_SHAPE)["flops_dense"] == 5_644_288
    alive = {name: mask.cuda() for name, mask in _random_alive(model, torch.Generator().manual_seed(1)).items()}
    _mask_in_place(model, alive)
    compact = compact_model(model, alive)
    assert compact[0].weight.is_cuda
    # Compared in float64: cuDNN may use TF32 for float32 convolutions, whose rounding differs
    # between the two shapes and would swamp a 1e-5 check without saying anything about compaction.
    inputs = torch.randn(16, *CIFAR_SHAPE, device="cuda", dtype=torch.float64)
    with torch.no_grad():
        difference = (model.double().eval()(inputs) - compact.double().eval()(inputs)).abs().max().item()
    assert difference < 1e-10
    with torch.no_grad():
        for _, layer in _prunable(model):
            layer.weight.mul_(torch.rand_like(layer.weight) < 0.1)
    assert model_bytes_sparse(model) < model_bytes_dense(model)


@needs_cuda
def test_real_nvml_sampler_on_a_gpu():
    if not telemetry.nvml_info()["nvml_available"]:
        pytest.skip("NVML is not available")
    a = torch.randn(4096, 4096, device="cuda")
    with telemetry.TelemetrySampler(torch.cuda.current_device(), period_seconds=0.05) as sampler:
        deadline = time.perf_counter() + 1.0
        while time.perf_counter() < deadline:
            a = (a @ a).tanh_()
        torch.cuda.synchronize()
    summary = sampler.summary()
    assert summary is not None and summary["samples"] >= 5
    assert summary["power_watts"]["mean"] is None or summary["power_watts"]["mean"] > 0
    assert summary["energy_source"] in ("counter", "integrated-power")
    assert summary["energy_joules"] > 0
