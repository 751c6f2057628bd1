"""Everything measured on a trained (and pruned) model, as the README's record section defines it.

Size (parameters, compression ratio, saved bytes), work (dense and effective FLOPs), speed (latency
at batch 1, throughput at a large batch) and, for neuron pruning, the same for the physically
compacted model, whose speed-up is measured rather than assumed.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

from bench_harness.masks import MaskSet
from bench_harness.measure.compaction import compact_model, compact_param_count
from bench_harness.measure.flops import count_flops
from bench_harness.measure.latency import measure_inference
from bench_harness.measure.size import model_bytes_dense, model_bytes_sparse
from bench_harness.store import write_bytes_atomically

THROUGHPUT_BATCH_SIZE = 1024
"""The "large batch" of throughput and compact speed-up figures (recorded in every record)."""


def timing_repeats(device: torch.device) -> tuple[int, int]:
    """(warm-up, repeats) of each timing: fewer on the CPU, where one large-batch pass of the CNN
    takes a good fraction of a second and the medians settle sooner."""
    return (10, 50) if device.type == "cuda" else (2, 7)


def size_and_work(model: nn.Module, masks: MaskSet, input_shape: tuple[int, int, int]) -> dict:
    """Parameter counts, compression ratio, FLOPs (dense and effective) and saved bytes of the masked model."""
    params_total = sum(p.numel() for p in model.parameters())
    params_nonzero = sum(int(p.count_nonzero()) for p in model.parameters())
    flops = count_flops(model, input_shape, masks.weight)
    return {
        "params_total": params_total,
        "params_nonzero": params_nonzero,
        "compression_ratio": params_total / max(params_nonzero, 1),
        "flops_dense": flops["flops_dense"],
        "flops_effective": flops["flops_effective"],
        "model_bytes_dense": model_bytes_dense(model),
        "model_bytes_sparse": model_bytes_sparse(model),
    }


def speed(model: nn.Module, input_shape: tuple[int, int, int], device: torch.device) -> dict:
    """Latency at batch 1 and throughput at THROUGHPUT_BATCH_SIZE, medians of many timed passes."""
    warmup, repeats = timing_repeats(device)
    return measure_inference(model, input_shape, device, throughput_batch_size=THROUGHPUT_BATCH_SIZE, warmup=warmup, repeats=repeats)


def hidden_alive_units(masks: MaskSet) -> dict[str, torch.Tensor]:
    """Alive-unit vectors of every layer but the output layer (whose units are never pruned)."""
    return {layer.name: masks.alive_units[layer.name] for layer in masks.layers if not layer.is_output}


def compaction(model: nn.Module, masks: MaskSet, input_shape: tuple[int, int, int], device: torch.device, dense_speed: dict) -> tuple[nn.Module, dict]:
    """Build the physically smaller model of a neuron-pruned one and measure it beside the dense one.

    ``compact_speedup`` is the dense model's latency over the compact model's at the large batch
    (where the arithmetic, not kernel launches, decides); the batch-1 ratio is recorded as well.
    """
    alive = hidden_alive_units(masks)
    compact = compact_model(model, alive)
    compact_speed = speed(compact, input_shape, device)
    # Both throughputs were measured at the same batch, so their ratio is the per-batch speed-up.
    dense_large_ms = 1000.0 / dense_speed["throughput_per_second"]
    compact_large_ms = 1000.0 / compact_speed["throughput_per_second"]
    metrics = {
        "compact_params": sum(p.numel() for p in compact.parameters()),
        "compact_params_from_masks": compact_param_count(model, alive),
        "compact_flops": count_flops(compact, input_shape)["flops_dense"],
        "compact_latency_ms_batch1": compact_speed["latency_ms_batch1"],
        "compact_throughput_per_second": compact_speed["throughput_per_second"],
        "compact_speedup": dense_large_ms / compact_large_ms,
        "compact_speedup_batch1": dense_speed["latency_ms_batch1"] / compact_speed["latency_ms_batch1"],
    }
    return compact, metrics


def save_model(model: nn.Module, path: Path) -> None:
    """Save a whole module (standard layers only) so plain ``torch.load(path, weights_only=False)`` reads it.

    Written through ``bench_harness.store``'s atomic write, so an interrupted or failed save (a full
    disk) leaves neither a truncated file nor a temporary one.
    """
    buffer = io.BytesIO()
    torch.save(model.to("cpu"), buffer)
    write_bytes_atomically(path, buffer.getvalue())
