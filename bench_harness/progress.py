"""The progress display of ``bench run``: which run, which epoch, the latest validation accuracy;
on a Ray cluster, the whole grid (:class:`ClusterProgress`)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench_harness.config import RunConfig
from bench_harness.engine import EpochReport


class GridProgress:
    """Two bars on stderr: runs of the grid, and epochs of the current run with its accuracy."""

    def __init__(self, total_runs: int, epochs: int) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"), console=Console(stderr=True),
        )
        self.runs = self.progress.add_task("runs", total=total_runs, status="")
        self.epochs = self.progress.add_task("epochs", total=epochs, status="")

    def __enter__(self) -> "GridProgress":
        # The bars appear with the first run: a mistake found before any training (the preflight)
        # is then one sentence on its own.
        self._shown = False
        return self

    def _show(self) -> None:
        if not self._shown:
            self._shown = True
            self.progress.__enter__()

    def __exit__(self, *exc_info) -> None:
        if self._shown:
            self.progress.__exit__(*exc_info)

    def run_started(self, index: int, config: RunConfig, together: int = 1) -> None:
        """A new run (or group of runs trained together) begins: name it and reset the epoch bar."""
        self._show()
        label = f"{config.dataset}/{config.model} {config.pruner} seed {config.seed}"
        if together > 1:
            label += f" (+{together - 1} more trained together)"
        self.progress.update(self.runs, status=label)
        self.progress.reset(self.epochs, total=config.epochs, status="")

    def epoch_done(self, report: EpochReport) -> None:
        """One epoch finished: advance and show loss, validation accuracy and sparsity."""
        accuracy = "-" if report.val_accuracy is None else f"{100 * report.val_accuracy:.2f}%"
        self.progress.update(
            self.epochs, completed=report.epoch,
            status=f"loss {report.train_loss:.4f} · val {accuracy} · sparsity {100 * report.sparsity:.1f}%",
        )

    def run_finished(self, index: int, config: RunConfig, record: dict | None, why: str = "") -> None:
        """A run ended (record None: not trained here, ``why`` says why)."""
        self._show()
        self.progress.advance(self.runs)
        if record is None:
            self.progress.console.print(f"skip {config.run_id()} ({why or 'already complete'})")
            return
        resumed = f" (resumed after epoch {record['resumed_from_epochs'][-1]})" if record.get("resumed_from_epochs") else ""
        if record["status"] == "ok":
            flags = "".join(f" [flagged: {flag['kind']}]" for flag in record.get("flags") or [])
            self.progress.console.print(f"done {config.run_id()}: test accuracy {100 * record['metrics']['test_accuracy']:.2f}%{resumed}{flags}")
        else:
            self.progress.console.print(f"FAILED {config.run_id()}: {record['error']}{resumed}")


class ClusterProgress(GridProgress):
    """The whole grid while Ray trains it: runs done, running and queued, a bar per running run
    (its epochs as its worker reports them) and an estimate of the time left.

    The estimate divides the epochs still to train by the rate at which this command's workers have
    trained epochs since the first group started, so it holds once every node has reported a few.
    """

    MAX_RUN_BARS = 12
    """Running runs shown with a bar of their own; the others are counted in the first line."""

    def __init__(self, total_runs: int, epochs: int) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"), console=Console(stderr=True),
        )
        self.runs = self.progress.add_task("runs", total=total_runs, status="")
        self.total = total_runs
        self.finished = self.failed = self.skipped = 0
        self.running: dict[str, tuple[RunConfig, int | None]] = {}  # run id -> (config, its bar)
        self.epochs_done: dict[str, int] = {}
        self.trained_epochs = 0
        self.first_start: float | None = None
        self.expected: dict[str, int] = {}  # run id -> epochs, for every run trained here

    def run_started(self, index: int, config: RunConfig, together: int = 1) -> None:
        """(The local loop's call; on a cluster, :meth:`group_started` says where a group began.)"""

    def epoch_done(self, report: EpochReport) -> None:
        """(The local loop's call; on a cluster, :meth:`run_epoch` carries every run's epochs.)"""

    def group_sent(self, configs: list[RunConfig]) -> None:
        """A group was handed to Ray: its runs are queued there until a worker starts it."""
        self._show()
        for config in configs:
            self.expected[config.run_id()] = config.epochs

    def group_started(self, configs: list[RunConfig], host: str) -> None:
        """A worker on ``host`` began a group: its runs are running, each with a bar."""
        for config in configs:
            if config.run_id() in self.running or config.run_id() not in self.expected:
                continue
            bar = None
            if sum(1 for _, shown in self.running.values() if shown is not None) < self.MAX_RUN_BARS:
                bar = self.progress.add_task(f"  {config.dataset}/{config.model} {config.pruner} seed {config.seed}",
                                             total=config.epochs, status=f"on {host}")
            self.running[config.run_id()] = (config, bar)
        if self.first_start is None:
            self.first_start = time.monotonic()
        self.refresh()

    def run_epoch(self, config: RunConfig, report: dict) -> None:
        """A worker reported a run's epoch (epoch, train_loss, val_accuracy, sparsity)."""
        run_id = config.run_id()
        previous = self.epochs_done.get(run_id, report["epoch"] - 1)
        self.trained_epochs += max(0, report["epoch"] - previous)
        self.epochs_done[run_id] = report["epoch"]
        _, bar = self.running.get(run_id, (config, None))
        if bar is not None:
            accuracy = "-" if report["val_accuracy"] is None else f"{100 * report['val_accuracy']:.2f}%"
            self.progress.update(bar, completed=report["epoch"], status=(
                f"loss {report['train_loss']:.4f} · val {accuracy} · sparsity {100 * report['sparsity']:.1f}%"))

    def run_finished(self, index: int, config: RunConfig, record: dict | None, why: str = "") -> None:
        """A run ended (record None: not trained here, ``why`` says why)."""
        super().run_finished(index, config, record, why)
        run_id = config.run_id()
        if record is None:
            self.skipped += 1
        elif record.get("status") == "ok":
            self.finished += 1
        else:
            self.failed += 1
        _, bar = self.running.pop(run_id, (config, None))
        if bar is not None:
            self.progress.remove_task(bar)
        self.expected.pop(run_id, None)
        self.epochs_done.pop(run_id, None)
        self.refresh()

    def time_left(self) -> float | None:
        """Seconds until the grid is done at the rate epochs were trained so far, or None (no rate yet)."""
        if self.first_start is None or not self.trained_epochs:
            return None
        elapsed = time.monotonic() - self.first_start
        remaining = sum(epochs - self.epochs_done.get(run_id, 0) for run_id, epochs in self.expected.items())
        unsent = self.total - self.finished - self.failed - self.skipped - len(self.expected)
        if unsent > 0 and self.expected:
            remaining += unsent * (sum(self.expected.values()) / len(self.expected))
        return remaining * elapsed / self.trained_epochs if elapsed > 0 else None

    def refresh(self) -> None:
        """Recount the grid and the estimate (the driver calls it between items)."""
        if not getattr(self, "_shown", False):
            return
        running = len(self.running)
        queued = self.total - self.finished - self.failed - self.skipped - running
        left = self.time_left()
        estimate = "estimating time left" if left is None else f"about {_duration(left)} left"
        hidden = sum(1 for _, bar in self.running.values() if bar is None)
        more = f" ({hidden} without a bar)" if hidden else ""
        self.progress.update(self.runs, status=(
            f"{self.finished} done · {running} running{more} · {queued} queued"
            + (f" · {self.failed} failed" if self.failed else "") + (f" · {self.skipped} skipped" if self.skipped else "")
            + f" · {estimate}"))


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
