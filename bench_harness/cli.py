"""The ``bench`` command line: run the grid, list plugins, print the leaderboard, describe the machine.

Every option of ``bench run`` maps one-to-one onto a field of :class:`bench_harness.config.RunConfig`,
whose defaults are the seed protocol.
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from bench_harness.config import RunConfig
from bench_harness.errors import DeviceFailure, UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Benchmark neural-network pruning criteria on equal terms.",
)

DEFAULTS = RunConfig()
SEED_PROTOCOL_DATASETS = ("mnist", "cifar10")
PROTOCOL_SEEDS = 5


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a UserError into one sentence on stderr and exit code 2: no traceback for a user mistake."""
    try:
        yield
    except UserError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    except DeviceFailure as exc:
        typer.echo(
            f"Error: the GPU failed ({exc}); CUDA errors end the process, so the grid stopped. "
            f"Records written so far are intact: run the same command again to resume.",
            err=True,
        )
        raise typer.Exit(code=1) from None


@app.command()
def run(
    all_pruners: bool = typer.Option(
        False, "--all", help="Every registered pruner (ablation variants only when named), on mnist and cifar10 unless --dataset is given."
    ),
    pruner: Optional[List[str]] = typer.Option(None, "--pruner", "-p", help="A pruner to run (repeatable)."),
    dataset: Optional[List[str]] = typer.Option(None, "--dataset", "-d", help="A dataset (repeatable)."),
    model: str = typer.Option(DEFAULTS.model, help="Model name; default: each dataset's own model."),
    seeds: int = typer.Option(PROTOCOL_SEEDS, help="Repeat each run with seeds 0..N-1."),
    epochs: int = typer.Option(DEFAULTS.epochs, help="Training epochs per run."),
    prune_every: int = typer.Option(DEFAULTS.prune_every, help="Prune after every N-th epoch (never after the last)."),
    prune_rate: float = typer.Option(DEFAULTS.prune_rate, help="Fraction of still-alive elements removed per event."),
    target_sparsity: Optional[List[float]] = typer.Option(
        None, help="Final fraction pruned; overrides --prune-rate. Repeat it to sweep (e.g. 0.5, 0.8, 0.9, 0.95, 0.98)."
    ),
    granularity: str = typer.Option(DEFAULTS.granularity, help="connections | neurons"),
    scope: str = typer.Option(
        DEFAULTS.scope, help="How removals are shared between layers: layer (same fraction) | global (one ranking) | erk | lamp."
    ),
    schedule: str = typer.Option(DEFAULTS.schedule, help="fixed (same fraction of the alive per event) | cubic (Zhu & Gupta)."),
    prune_start: Optional[int] = typer.Option(DEFAULTS.prune_start, help="Epoch of the first event (default: --prune-every)."),
    prune_end: Optional[int] = typer.Option(DEFAULTS.prune_end, help="Last epoch an event may follow (default: the one before the last)."),
    regrow_fraction: float = typer.Option(
        DEFAULTS.regrow_fraction, help="Pruners that regrow: fraction of alive connections dropped and regrown per event (cosine-decayed)."
    ),
    regrow_every: int = typer.Option(DEFAULTS.regrow_every, help="Pruners that regrow: also swap after every N-th epoch between events (0: never)."),
    lr: float = typer.Option(DEFAULTS.lr, help="Adam learning rate."),
    batch_size: int = typer.Option(DEFAULTS.batch_size, help="Training batch size."),
    augment: bool = typer.Option(DEFAULTS.augment, help="Random crop (4-pixel padding) and horizontal flip on the device."),
    val_size: Optional[int] = typer.Option(DEFAULTS.val_size, help="Training images held out for validation (default: 5,000, or a tenth of a smaller training set)."),
    device: str = typer.Option(DEFAULTS.device, help="auto | cpu | cuda"),
    data_dir: Optional[Path] = typer.Option(None, help="A folder that already holds the dataset files (no download)."),
    results: Path = typer.Option(Path("results"), help="Where run records are written."),
    force: bool = typer.Option(False, help="Redo runs that are already complete."),
    save_models: bool = typer.Option(False, help="Save each trained model next to its record (compacted for neurons)."),
    telemetry_period: float = typer.Option(DEFAULTS.telemetry_period, help="Seconds between NVML GPU telemetry samples."),
    concurrency: Optional[int] = typer.Option(None, help="Runs trained at once on one device (default: 5 on a GPU, 1 on the CPU)."),
    cuda_graphs: bool = typer.Option(True, help="Capture the training step as a CUDA graph on a GPU."),
    checkpoint_every: Optional[int] = typer.Option(
        None, help="Save each run's training state every N epochs, so an interrupted run resumes there (0: never; "
                   "default: as often as keeps checkpoints under 5% of the time, every epoch on a CPU).",
    ),
    executor: str = typer.Option("local", help="local (this process) | ray (each group of runs is a Ray task; needs Ray, the ray extra of bench-harness)."),
    ray_address: Optional[str] = typer.Option(
        None, help="--executor ray: the Ray cluster's head, HOST:6379 (default: RAY_ADDRESS, a cluster started on this machine, or a new local one)."
    ),
    ray_cpus_per_task: Optional[int] = typer.Option(
        None, help="--executor ray without GPUs: CPUs each group asks for (default 1; with GPUs each group asks for one GPU)."
    ),
    ray_runtime_env: Optional[str] = typer.Option(
        None, help="--executor ray: a Ray runtime environment as JSON, e.g. '{\"pip\": [\"my-pruner==1.0\"]}', for the workers."
    ),
) -> None:
    """Train and prune: every (dataset, pruner, seed) run, one JSON record each."""
    from bench_harness.plugins import registries
    from bench_harness.progress import ClusterProgress, GridProgress
    from bench_harness.runner import plan_runs, run_grid
    from bench_harness.store import ResultsStore

    with user_errors(), interruptible(), warnings_as_lines():
        runtime_env = check_executor_options(executor, ray_address, ray_cpus_per_task, ray_runtime_env)
        found = registries()
        methods = [entry.name for entry in found.pruners if entry.obj.variant_of is None]  # not ablation variants
        pruners = methods if all_pruners else list(pruner or [])
        datasets = list(dataset or (SEED_PROTOCOL_DATASETS if all_pruners else []))
        if not datasets:
            raise UserError("Name a dataset with --dataset NAME (see `bench list`), or use --all for mnist and cifar10.")
        configs = []
        for target in target_sparsity or [DEFAULTS.target_sparsity]:
            base = RunConfig(
                model=model, epochs=epochs, batch_size=batch_size, lr=lr, prune_every=prune_every, prune_rate=prune_rate,
                target_sparsity=target, granularity=granularity, scope=scope, schedule=schedule, prune_start=prune_start,
                prune_end=prune_end, regrow_fraction=regrow_fraction, regrow_every=regrow_every, augment=augment,
                val_size=val_size, device=device, telemetry_period=telemetry_period,
            )
            configs += plan_runs(base, pruners, datasets, seeds, found, skip_unsupported=all_pruners)
        configs = list({config.run_id(): config for config in configs}.values())  # the dense reference once per sweep
        if data_dir is not None and not data_dir.is_dir():
            raise UserError(f"--data-dir {data_dir} is not a folder; point it at the folder that holds the dataset files.")
        store = ResultsStore(results)
        display = ClusterProgress if executor == "ray" else GridProgress
        with display(len(configs), configs[0].epochs) as progress, ray_executor(
                executor, ray_address, ray_cpus_per_task, runtime_env, progress) as remote:
            summary = run_grid(
                configs, found, store, data_dir, force, save_models,
                on_run_start=progress.run_started, on_epoch=progress.epoch_done, on_run_end=progress.run_finished,
                concurrency=concurrency, use_cuda_graph=cuda_graphs, checkpoint_every=checkpoint_every, executor=remote,
            )
    if summary.cleaned:
        typer.echo(f"Removed {summary.cleaned} temporary file(s) left by interrupted commands.", err=True)
    resumed = f" ({summary.resumed} resumed from a checkpoint)" if summary.resumed else ""
    typer.echo(
        f"{summary.completed} run(s) completed{resumed}, {summary.skipped} already complete and skipped, "
        f"{len(summary.failed)} failed; records in {store.runs_dir}."
    )
    if summary.elsewhere:
        typer.echo(
            f"{len(summary.elsewhere)} run(s) left to another bench run on this folder, which is training them: "
            + "; ".join(summary.elsewhere) + ".", err=True,
        )
    for failure in summary.failed:
        typer.echo(f"FAILED {failure}", err=True)
    for kept in summary.kept_success:
        typer.echo(f"Kept the earlier ok record of {kept}.", err=True)
    if summary.failed:
        raise typer.Exit(code=1)


def check_executor_options(executor: str, address: Optional[str], cpus_per_task: Optional[int], runtime_env: Optional[str]) -> dict | None:
    """Before anything else: the executor is known and the Ray options go with ``--executor ray``;
    returns the runtime environment, parsed."""
    if executor not in ("local", "ray"):
        raise UserError(f"--executor must be local or ray, got {executor!r}.")
    given = [name for name, value in (("--ray-address", address), ("--ray-cpus-per-task", cpus_per_task),
                                      ("--ray-runtime-env", runtime_env)) if value is not None]
    if executor == "local" and given:
        raise UserError(f"{given[0]} only applies to --executor ray; add --executor ray, or leave it out.")
    if cpus_per_task is not None and cpus_per_task < 1:
        raise UserError(f"--ray-cpus-per-task must be at least 1, got {cpus_per_task}.")
    if runtime_env is None:
        return None
    try:
        parsed = json.loads(runtime_env)
    except ValueError as exc:
        raise UserError(f"--ray-runtime-env is not JSON ({exc}); give an object such as '{{\"pip\": [\"my-pruner\"]}}'.") from None
    if not isinstance(parsed, dict):
        raise UserError("--ray-runtime-env must be a JSON object, such as '{\"pip\": [\"my-pruner\"]}'.")
    return parsed


@contextlib.contextmanager
def ray_executor(executor: str, address: Optional[str], cpus_per_task: Optional[int], runtime_env: dict | None, progress) -> Iterator[object]:
    """The Ray executor for ``--executor ray`` (connected, and disconnected at the end), else None."""
    if executor != "ray":
        yield None
        return
    from bench_harness.cluster import RayExecutor

    remote = RayExecutor(address, cpus_per_task or 1, runtime_env, progress)
    try:
        yield remote
    finally:
        remote.close()


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C ends the command with one sentence on how to resume and exit code 130 (128 + SIGINT)."""
    try:
        yield
    except KeyboardInterrupt:
        typer.echo(
            "\nInterrupted: every record written so far is kept and each run in progress keeps its last checkpoint; "
            "run the same command again to resume.",
            err=True,
        )
        raise typer.Exit(code=130) from None


def check_output_file(output: Optional[Path]) -> None:
    """Before any work: ``--output`` must name a file in a folder that takes files."""
    from bench_harness.store import probe_writable

    if output is None:
        return
    if output.is_dir():
        raise UserError(f"--output {output} is a folder; name the file to write.")
    probe_writable(output.parent if str(output.parent) else Path("."), "the folder of --output", size=4096)


@app.command(name="list")
def list_plugins() -> None:
    """Every registered pruner, dataset and model, with where it came from."""
    from bench_harness.listing import plugin_tables

    with user_errors():
        typer.echo(plugin_tables())


@contextlib.contextmanager
def warnings_as_lines(collected: list[str] | None = None) -> Iterator[None]:
    """Show each warning (a run record left out, say) as one 'Warning: ...' line on stderr when it
    happens, not Python's two-line format with a source line; ``collected`` also receives the messages."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        typer.echo(f"Warning: {message}", err=True)
        if collected is not None:
            collected.append(str(message))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


def _column_keys(columns: Optional[List[str]]) -> list[str]:
    """--columns a,b --columns c -> ['a', 'b', 'c']."""
    return [key.strip() for option in columns or [] for key in option.split(",") if key.strip()]


def _write_or_print(text: str, output: Optional[Path], what: str) -> None:
    from bench_harness.store import write_text_atomically

    if output is None:
        typer.echo(text, nl=False)
    else:
        write_text_atomically(output, text)
        typer.echo(f"{what} written to {output}.", err=True)


@app.command()
def leaderboard(
    results: Path = typer.Option(Path("results"), help="The results folder of `bench run`."),
    format: str = typer.Option("markdown", "--format", "-f", help="markdown | github | csv | json | latex | html"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the table to this file instead of printing it."),
    columns: Optional[List[str]] = typer.Option(
        None, "--columns", "-c",
        help="Columns to show, comma-separated or repeated, in every format; 'all' for every one "
             "(default: pruner,n,test_accuracy,delta_vs_baseline,p_holm,delta_vs_dense,sparsity,train_seconds,"
             "prune_seconds; csv and json: all).",
    ),
    baseline: Optional[str] = typer.Option(None, help="Compare every row with this pruner (default: the best other pruner of each table)."),
    sweep: Optional[bool] = typer.Option(
        None, "--sweep/--no-sweep",
        help="One summary per sweep: pruners by final sparsity (default: in the text formats, when the folder holds a sweep).",
    ),
    per_seed: bool = typer.Option(False, "--per-seed", help="One row per run (seed, accuracy, sparsity, times), to spot outliers."),
) -> None:
    """One table per dataset and protocol, one row per pruner, compared over seeds."""
    from bench_harness.leaderboard import leaderboard_text
    from bench_harness.store import ResultsStore

    with user_errors():
        check_output_file(output)
        with warnings_as_lines():
            records = ResultsStore(results).records()
        text = leaderboard_text(records, format, where=str(results), columns=_column_keys(columns), baseline=baseline,
                                sweep=sweep, per_seed=per_seed)
        _write_or_print(text, output, "Leaderboard")


@app.command()
def plot(
    results: Path = typer.Option(Path("results"), help="The results folder of `bench run`."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Folder for the figures (default: RESULTS/plots)."),
) -> None:
    """Figures as PNG and SVG: accuracy vs sparsity, training curves, the damage of each pruning event."""
    from bench_harness.leaderboard import build_leaderboards
    from bench_harness.plots import build_plots, write_plots
    from bench_harness.store import ResultsStore, probe_writable

    with user_errors():
        folder = output if output is not None else results / "plots"
        if folder.exists() and not folder.is_dir():
            raise UserError(f"--output {folder} is a file; name a folder for the figures.")
        with warnings_as_lines():
            records = ResultsStore(results).records()
        if records:
            probe_writable(folder, "the figures folder", size=4096)
        written = write_plots(build_plots(build_leaderboards(records, where=str(results))), folder)
    for path in written:
        typer.echo(str(path))


@app.command()
def report(
    results: Path = typer.Option(Path("results"), help="The results folder of `bench run`."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="The HTML file to write (default: RESULTS/report.html)."),
) -> None:
    """One self-contained HTML page: tables, plots, protocol, environment and failed runs."""
    from bench_harness.report import build_report
    from bench_harness.store import ResultsStore, write_text_atomically

    with user_errors():
        target = output if output is not None else results / "report.html"
        if target.is_dir():
            raise UserError(f"--output {target} is a folder; name the HTML file to write.")
        left_out: list[str] = []
        with warnings_as_lines(left_out):
            records = ResultsStore(results).records()
        if records:
            check_output_file(target)
        write_text_atomically(target, build_report(records, str(results), left_out))
    typer.echo(f"Report written to {target}.", err=True)


@app.command()
def info() -> None:
    """The device, driver, NVML availability and package versions this machine would run with."""
    from bench_harness.listing import machine_report

    typer.echo(machine_report())


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(main())
