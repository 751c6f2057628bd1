"""What every benchmark script records beside its figures, and where it writes them.

A timing means little without the hardware, versions, thread settings, commit and command that
produced it, so each script's JSON carries :func:`describe_environment`, and its default file name
carries the device's name and the date.

Torch and the harness are imported only by the functions that need them, so that gpu_check.py, which
runs the other scripts as child processes, can use these functions without importing either: whatever
breaks in them, it still writes its summary.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""Where the benchmark JSON files go unless ``--output`` says otherwise."""


def git_commit() -> str | None:
    """The checkout's commit, with ``+changes`` when files differ from it; None outside a git checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}+changes" if changed else commit


def describe_environment(device: torch.device) -> dict:
    """The runner's environment record plus what a speed figure also depends on."""
    import torch

    from bench_harness.record import cpu_name, environment

    return {
        **environment(device),
        "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cuda_version": torch.version.cuda if device.type == "cuda" else None,
        "cpu_name": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(["python", *sys.argv]),
        "git_commit": git_commit(),
    }


def slug(text: str) -> str:
    """Lower-case letters, digits and dashes only: safe in a file name."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def default_output(benchmark: str, device: torch.device) -> Path:
    """benchmarks/results/<benchmark>-<device name>-<date>.json."""
    import torch

    from bench_harness.record import cpu_name

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu {cpu_name()}"
    return RESULTS_DIR / f"{benchmark}-{slug(name)}-{datetime.now().strftime('%Y-%m-%d')}.json"


def publish(payload: dict, output: Path) -> None:
    """Write a benchmark's JSON atomically and say where it went (every script ends this way)."""
    from bench_harness.store import write_json_atomically

    write_json_atomically(output, payload)
    print(f"\nJSON written to {output}")


def table(rows: list[list], headers: list[str], tablefmt: str = "simple") -> str:
    """A plain-text table (``tablefmt="github"``: a markdown one)."""
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True)


def progress(message: str) -> None:
    """A progress line on stderr, so stdout holds only the report."""
    print(f"[{Path(sys.argv[0]).stem}] {message}", file=sys.stderr, flush=True)


def report_header(environment: dict, how: str) -> list[str]:
    """A report's first lines: what it was measured on (device, torch, commit), then how, then a blank."""
    device = environment["gpu_name"] or f"CPU {environment['cpu_name']} ({environment['torch_threads']} torch threads)"
    return [f"Device: {device}; torch {environment['torch']}; commit {environment['git_commit']}", how, ""]


def model_list(parser, text: str, known) -> list[str]:
    """The comma-separated ``--models`` value as a list, refused (exit 2) unless every name is known."""
    models = [name.strip() for name in text.split(",") if name.strip()]
    if not models or any(name not in known for name in models):
        parser.error(f"--models takes {', '.join(known)}, got {models}")
    return models
