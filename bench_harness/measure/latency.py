"""Inference timing: the median time of one forward pass of one batch, on the model's own device.

Protocol: the model is put in eval mode and run under ``torch.inference_mode`` on random inputs of
the stated batch size; ``warmup`` untimed passes come first (they absorb lazy initialisation, cuDNN
algorithm selection and cache warm-up), then ``repeats`` timed passes, and the median is reported
because it ignores the occasional pass delayed by the OS or another process.

Each timed pass starts on an idle device: on CUDA the stream is synchronised before the pass and
the pass is bracketed by CUDA events, so a figure is the isolated latency of one batch (kernel
launches included), not an overlapped pipeline's throughput. On the CPU the pass is bracketed by
``time.perf_counter``.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block, then restore every submodule's own training flag.

    Restoring per submodule (rather than ``model.train(was_training)``) keeps a deliberately mixed
    state, e.g. a frozen BatchNorm inside a training model, exactly as it was.
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags:
            module.training = training


def model_device(model: nn.Module, device: torch.device | str | None = None) -> torch.device:
    """The device the model's parameters live on, checked against ``device`` when one is given.

    A model without parameters runs wherever ``device`` says (the CPU by default).
    """
    tensors = list(model.parameters()) + list(model.buffers())
    if device is not None:
        device = torch.device(device)
        for tensor in tensors:
            if not _same_device(tensor.device, device):
                raise ValueError(f"The model's tensors are on {tensor.device} but timing was asked for on {device}; move the model there first.")
        return device
    return tensors[0].device if tensors else torch.device("cpu")


def _same_device(actual: torch.device, wanted: torch.device) -> bool:
    """Device equality that treats ``cuda`` as the current CUDA device (``cuda`` vs ``cuda:0``)."""
    if actual.type != wanted.type:
        return False
    if actual.index is None or wanted.index is None:
        return True
    return actual.index == wanted.index


def _input_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter, so half-precision models get half inputs."""
    for parameter in model.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.get_default_dtype()


def _time_cuda_ms(forward: Callable[[], object], device: torch.device, repeats: int) -> list[float]:
    """Per-pass milliseconds measured with CUDA events on the current stream of ``device``."""
    with torch.cuda.device(device):
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        for start, end in zip(starts, ends):
            torch.cuda.synchronize()  # start every pass on an idle GPU: isolated latency
            start.record()
            forward()
            end.record()
        torch.cuda.synchronize()
        return [start.elapsed_time(end) for start, end in zip(starts, ends)]


def _time_host_ms(forward: Callable[[], object], device: torch.device, repeats: int) -> list[float]:
    """Per-pass milliseconds measured with ``time.perf_counter`` (CPU, or another synchronisable backend)."""
    synchronize = torch.mps.synchronize if device.type == "mps" else (lambda: None)
    times_ms = []
    for _ in range(repeats):
        synchronize()
        start_seconds = time.perf_counter()
        forward()
        synchronize()  # asynchronous backends must finish the pass before the clock stops
        times_ms.append((time.perf_counter() - start_seconds) * 1000.0)
    return times_ms


def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    batch_size: int,
    device: torch.device | str | None,
    warmup: int = 10,
    repeats: int = 50,
) -> float:
    """Median milliseconds of one forward pass of a batch of ``batch_size`` inputs of ``input_shape``.

    ``device`` must be where the model already is (``None`` means: wherever that is). The model's
    training flags are restored afterwards. See the module docstring for the protocol.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be at least 1 and warmup at least 0, got repeats={repeats}, warmup={warmup}.")
    device = model_device(model, device)
    inputs = torch.randn((batch_size, *input_shape), dtype=_input_dtype(model), device=device)

    def forward() -> object:
        return model(inputs)

    with evaluation_mode(model), torch.inference_mode():
        for _ in range(warmup):
            forward()
        if device.type == "cuda":
            times_ms = _time_cuda_ms(forward, device, repeats)
        else:
            times_ms = _time_host_ms(forward, device, repeats)
    return float(statistics.median(times_ms))


def measure_inference(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    device: torch.device | str | None,
    throughput_batch_size: int = 1024,
    warmup: int = 10,
    repeats: int = 50,
) -> dict:
    """Batch-1 latency and large-batch throughput of ``model``, measured per the module's protocol.

    Returns ``{"latency_ms_batch1", "throughput_per_second", "throughput_batch_size"}``, where the
    throughput is ``throughput_batch_size`` divided by the median time of one such batch.
    """
    latency_ms_batch1 = measure_latency(model, input_shape, 1, device, warmup=warmup, repeats=repeats)
    batch_ms = measure_latency(model, input_shape, throughput_batch_size, device, warmup=warmup, repeats=repeats)
    return {
        "latency_ms_batch1": latency_ms_batch1,
        "throughput_per_second": throughput_batch_size / (batch_ms / 1000.0),
        "throughput_batch_size": throughput_batch_size,
    }
