"""Small facts about the device a run uses, shared by the engine, the pruning event and the runner."""

from __future__ import annotations

import torch


def synchronise(device: torch.device) -> None:
    """Wait for queued device work, so wall-clock times cover it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def is_device_failure(exc: BaseException) -> bool:
    """True for a CUDA error, which is sticky: every later call in the process fails too."""
    # Recent PyTorch raises torch.AcceleratorError; older versions a RuntimeError naming CUDA.
    accelerator_error = getattr(torch, "AcceleratorError", None)
    return (accelerator_error is not None and isinstance(exc, accelerator_error)) or "CUDA error" in str(exc)
