"""The progress display of ``bench run``: which run, which epoch, the latest validation accuracy."""

from __future__ import annotations

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
