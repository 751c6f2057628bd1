"""``bench run --executor ray``: each group of runs is a Ray task; every record is written here.

The driver (this process) does what it does locally: it plans the grid, checks the data, skips
complete runs, claims each run and forms the same groups the local runner trains together. Each
group goes to Ray as one task that asks for one GPU (or ``--ray-cpus-per-task`` CPUs) and runs the
runner's own :func:`~bench_harness.runner.execute_group` on a worker, in a thread, while the task
streams back what happens (a Ray streaming generator): each run's epoch reports, its checkpoints
(written into the driver's ``checkpoints/``, so a rerun resumes there as it does locally; without
``--checkpoint-every`` at most once a minute per run, :data:`SHIP_EVERY_SECONDS`) and its
record. The driver writes records, checkpoints and saved models through ``bench_harness.store``,
atomically, so the workers need no shared file system, only the same packages (and their own copy
of the datasets, or a network to download them).

**Retries.** A worker process or node that dies has its task retried by Ray (``max_retries``; an
exception raised by the harness or a plugin is not retried: a failing run is recorded as failed, as
locally). A retried group starts again from the checkpoints its runs had when the group was sent
(without any, from scratch), since a task's arguments are fixed when it is submitted. Ray resumes a
retried stream after the items the driver already consumed, so a task yields the same number of
items on every attempt: one when it starts, one per epoch of the schedule (empty where the group has
nothing to say) and a last one holding every record; the driver keeps the first record of each run
and ignores a repeat. A GPU error (sticky in CUDA) ends the worker process, so Ray retries the group
in a fresh one.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from bench_harness import record as records
from bench_harness.config import RunConfig
from bench_harness.errors import DeviceFailure, UserError

MAX_RETRIES = 3
"""Attempts after the first that Ray makes at a group whose worker process or node died."""

SHIP_EVERY_SECONDS = 60.0
"""Without ``--checkpoint-every``, a worker ships a run's checkpoint to the driver at most this
often (a LeNet-300-100 checkpoint is 4 to 7 MiB: a GPU's short epochs would otherwise send one per
run every second); a node that dies then loses at most about a minute of each run's training."""

TEST_KILL_ENV = "BENCH_HARNESS_TEST_KILL_WORKER"
"""A test hook: the path of a JSON file ``{"run_id": ..., "after_epoch": N}``. The first worker that
reaches the end of epoch N of a group holding that run takes the file (renames it) and kills its own
process, so a test can check that Ray's retry completes the grid. Unset outside the tests."""

PLUGIN_ENV = "BENCH_HARNESS_PLUGINS"


def import_ray():
    """The ``ray`` module, or a :class:`UserError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(
            '--executor ray needs Ray, which is not installed in this environment; install it with '
            'pip install "bench-harness[ray]" (on every node of the cluster).'
        ) from None
    return ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse, in one sentence, a ``--ray-address`` nothing answers at (Ray itself would wait minutes)."""
    if address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address} is not HOST:PORT; give the head node's address, e.g. 10.0.0.1:6379.")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UserError(
            f"Could not reach a Ray cluster at --ray-address {address} ({exc.strerror or exc}); "
            f"start one with `ray start --head` on the head node, or check the address."
        ) from None


# -- the worker side ---------------------------------------------------------------------------------


@dataclass
class GroupTask:
    """Everything a worker needs to train one group; plain data, sent with the task."""

    configs: list[RunConfig]
    gpu: bool
    data_dir: str | None
    use_cuda_graph: bool
    checkpoint_every: int | None
    save_models: bool
    provenance: dict[str, dict]
    """The driver's plugin packages and versions per run: a worker with others refuses the group."""
    checkpoints: dict[str, bytes] = field(default_factory=dict)
    """The runs' checkpoints in the driver's results folder when the group was sent."""
    checkpoint_names: dict[str, str] = field(default_factory=dict)
    """Where those checkpoints live on the driver, for messages."""
    ship_every_seconds: float = 0.0
    """A run's checkpoints are shipped at most this often (the first one always)."""


class ShippedCheckpoints:
    """The checkpoints of a group on a worker: read from the task, written back to the driver."""

    def __init__(self, task: GroupTask, events: queue.Queue) -> None:
        self.task = task
        self.events = events
        self.shipped: dict[str, float] = {}

    def checkpoint_path(self, config: RunConfig) -> Path:
        return Path(self.task.checkpoint_names.get(config.run_id(), f"checkpoints/{config.run_id()}.pt"))

    def read_checkpoint(self, config: RunConfig) -> bytes | None:
        return self.task.checkpoints.get(config.run_id())

    def write_checkpoint(self, config: RunConfig, data: bytes) -> None:
        now, last = time.monotonic(), self.shipped.get(config.run_id())
        if last is not None and now - last < self.task.ship_every_seconds:
            return
        self.shipped[config.run_id()] = now
        self.events.put(("checkpoint", config.run_id(), data))

    def remove_checkpoint(self, config: RunConfig) -> None:
        self.events.put(("drop_checkpoint", config.run_id()))


def _train(task: GroupTask, events: queue.Queue) -> None:
    """Train the group with the runner's own code (in a thread of the worker), telling ``events``."""
    import torch

    from bench_harness.plugins import registries as load_registries
    from bench_harness.runner import DataCache, execute_group, resolve_device

    try:
        found = load_registries()
        for config in task.configs:
            if not records.same_plugins({"plugins": records.plugin_provenance(found, config)}, task.provenance[config.run_id()]):
                here = records.plugin_provenance(found, config)
                there = task.provenance[config.run_id()]
                differ = ", ".join(
                    f"{kind} {(here[kind].get('distribution'), here[kind].get('version'))} here, "
                    f"{(there[kind].get('distribution'), there[kind].get('version'))} on the driver"
                    for kind in records.PLUGIN_KINDS if here[kind].get("version") != there[kind].get("version")
                    or here[kind].get("distribution") != there[kind].get("distribution"))
                raise UserError(f"this worker has other plugin versions than the driver ({differ}); install the same packages on every node.")
        device = resolve_device("cuda" if task.gpu else "cpu")
        data = DataCache(found, Path(task.data_dir) if task.data_dir else None, device)
        with tempfile.TemporaryDirectory(prefix="bench-models-") as models:
            results = execute_group(
                task.configs, found, data, save_models_to=Path(models) if task.save_models else None,
                use_cuda_graph=task.use_cuda_graph, store=None, checkpoint_every=task.checkpoint_every,
                checkpoints=ShippedCheckpoints(task, events),
                on_record=lambda position, record: events.put(("record", record, None)) if record["status"] != "ok" else None,
                on_run_epoch=lambda position, report: events.put(("report", task.configs[position].run_id(), {
                    "epoch": report.epoch, "train_loss": report.train_loss, "val_accuracy": report.val_accuracy,
                    "sparsity": report.sparsity})),
                on_group_epoch=lambda epoch: events.put(("epoch_end", epoch)),
            )
            finished = []
            for record in results:
                model = None
                if record is not None and record.get("model_file"):
                    model = Path(record["model_file"]).read_bytes()
                finished.append((record, model))
        del data
        if device.type == "cuda":
            torch.cuda.empty_cache()
        events.put(("done", finished))
    except BaseException as exc:  # noqa: BLE001 - handed to the task, which raises it on the driver's side
        events.put(("error", exc))


def _test_kill_point(task: GroupTask) -> int | None:
    path = os.environ.get(TEST_KILL_ENV)
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as stream:
            wanted = json.load(stream)
    except (OSError, ValueError):
        return None
    return int(wanted["after_epoch"]) if wanted.get("run_id") in {c.run_id() for c in task.configs} else None


def _test_kill() -> None:
    path = os.environ[TEST_KILL_ENV]
    try:
        os.rename(path, path + ".fired")  # only one attempt (the first) takes it
    except OSError:
        return
    time.sleep(1.0)  # let the driver consume what this attempt streamed so far
    os._exit(1)


def train_group(task: GroupTask):
    """The Ray task: train one group on this worker and stream what happens to the driver.

    Yields exactly ``2 + epochs`` items on every attempt (see the module's note on retries):
    ``{"kind": "start", "host", "pid"}``, then ``{"kind": "epoch", "epoch": e, "events": [...]}``
    for e = 1..epochs, then ``{"kind": "end", "events": [...], "records": [(record, model bytes)]}``.
    An event is ``("report", run_id, {...})``, ``("checkpoint", run_id, bytes)``,
    ``("drop_checkpoint", run_id)`` or ``("record", record, None)`` (a failed run, at once).
    """
    yield {"kind": "start", "host": socket.gethostname(), "pid": os.getpid()}
    events: queue.Queue = queue.Queue()
    worker = threading.Thread(target=_train, args=(task, events), name="bench-harness-group", daemon=True)
    worker.start()
    epochs = task.configs[0].epochs
    kill_after = _test_kill_point(task)
    sent, buffer, error, finished = 0, [], None, []
    while True:
        event = events.get()
        if event[0] == "epoch_end":
            while sent < event[1]:
                sent += 1
                yield {"kind": "epoch", "epoch": sent, "events": buffer}
                buffer = []
                if kill_after == sent:
                    _test_kill()
        elif event[0] == "done":
            finished = event[1]
            break
        elif event[0] == "error":
            error = event[1]
            break
        else:
            buffer.append(event)
    worker.join()
    if isinstance(error, DeviceFailure):
        print(f"bench-harness: the GPU failed ({error}); ending this worker so Ray retries the group in a fresh one.",
              file=sys.stderr, flush=True)
        os._exit(1)
    if error is not None:
        raise error
    while sent < epochs:
        sent += 1
        yield {"kind": "epoch", "epoch": sent, "events": buffer}
        buffer = []
    yield {"kind": "end", "events": buffer, "records": finished}


# -- the driver side ---------------------------------------------------------------------------------


@dataclass
class _Flight:
    """A group sent to Ray and not yet over."""

    configs: list[RunConfig]
    host: str = "a Ray worker"


class RayExecutor:
    """Trains the grid's groups as Ray tasks (see the module's docstring); made by ``bench run``."""

    def __init__(self, address: str | None = None, cpus_per_task: int = 1, runtime_env: dict | None = None,
                 progress=None) -> None:
        self.ray = import_ray()
        if cpus_per_task < 1:
            raise UserError(f"--ray-cpus-per-task must be at least 1, got {cpus_per_task}.")
        self.cpus_per_task = cpus_per_task
        self.progress = progress
        self.gpu = False
        self.started_ray = False
        if not self.ray.is_initialized():
            if address:
                check_reachable(address)
            env = dict(runtime_env or {})
            if os.environ.get(PLUGIN_ENV):  # workers load the plugins this driver loads
                env["env_vars"] = {PLUGIN_ENV: os.environ[PLUGIN_ENV], **env.get("env_vars", {})}
            try:
                self.ray.init(address=address, runtime_env=env or None, logging_level="WARNING",
                              configure_logging=True, log_to_driver=True)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                where = f"at --ray-address {address}" if address else "on this machine"
                raise UserError(f"Could not connect to a Ray cluster {where} ({str(exc).splitlines()[0]}).") from None
            self.started_ray = True
        self._remote = self.ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(train_group)

    def close(self) -> None:
        """Disconnect from Ray if this executor connected (a local Ray it started then stops)."""
        if self.started_ray and self.ray.is_initialized():
            self.ray.shutdown()
        self.started_ray = False

    def default_concurrency(self, device_name: str) -> int:
        """Five runs per group on a GPU, one on CPUs (as locally); decides whether tasks ask for a GPU."""
        from bench_harness.runner import default_concurrency

        gpus = self.ray.cluster_resources().get("GPU", 0)
        if device_name == "cpu":
            self.gpu = False
        elif device_name == "auto":
            self.gpu = gpus > 0
        elif gpus == 0:
            raise UserError(f"--device {device_name} asks a GPU for each group, but the Ray cluster has none; "
                            f"use --device cpu or auto, or add GPU nodes.")
        else:
            self.gpu = True
        import torch

        return default_concurrency(torch.device("cuda" if self.gpu else "cpu"))

    def _slots(self) -> int:
        """Groups the cluster can train at once now."""
        resources = self.ray.cluster_resources()
        if self.gpu:
            return max(1, int(resources.get("GPU", 0)))
        return max(1, int(resources.get("CPU", 0) // self.cpus_per_task))

    def _submit(self, group: list[RunConfig], pending):
        task = GroupTask(
            configs=group, gpu=self.gpu, data_dir=None if pending.data_dir is None else str(pending.data_dir),
            use_cuda_graph=pending.use_cuda_graph, checkpoint_every=pending.checkpoint_every,
            save_models=pending.save_models, provenance={c.run_id(): pending.provenance[c.run_id()] for c in group},
            ship_every_seconds=SHIP_EVERY_SECONDS if pending.checkpoint_every is None else 0.0,
        )
        for config in group:
            data = pending.store.read_checkpoint(config)
            if data is not None:
                task.checkpoints[config.run_id()] = data
            task.checkpoint_names[config.run_id()] = str(pending.store.checkpoint_path(config))
        options = {"num_gpus": 1, "num_cpus": 1} if self.gpu else {"num_cpus": self.cpus_per_task}
        return self._remote.options(**options).remote(task)

    def run(self, pending) -> None:
        """Send every group ``pending.next_group`` hands out and store what comes back (see the module)."""
        import torch

        from bench_harness.runner import dense_accuracy, dense_references

        ray, store, found = self.ray, pending.store, pending.registries
        progress = self.progress
        flights: dict = {}
        by_id: dict[str, RunConfig] = {}
        recorded: set[str] = set()
        dense_in_flight: set[str] = set()
        held: dict[str, list[tuple[RunConfig, dict]]] = {}
        more = True

        def write(config: RunConfig, record: dict) -> None:
            if record.get("status") == "ok":
                records.flag_at_chance(record, dense_accuracy(store, found, config))
            pending.stored(config, record)
            dense_in_flight.discard(config.run_id())
            for waiting_config, waiting_record in held.pop(config.run_id(), []):
                release(waiting_config, waiting_record)

        def release(config: RunConfig, record: dict) -> None:
            waiting = [ref.run_id() for ref in dense_references(found, config) if ref.run_id() in dense_in_flight]
            if waiting and record.get("status") == "ok":
                # As locally, a pruned run is flagged against its dense reference, trained first here
                # but maybe finishing later there: its record waits for the reference's.
                held.setdefault(waiting[0], []).append((config, record))
            else:
                write(config, record)

        def deliver(record: dict, model: bytes | None) -> None:
            run_id = record.get("run_id")
            if run_id not in by_id or run_id in recorded:
                return  # a retried attempt's repeat
            recorded.add(run_id)
            config = by_id[run_id]
            if model is not None:
                from bench_harness.store import write_bytes_atomically

                path = store.models_dir / f"{run_id}.pt"
                write_bytes_atomically(path, model)
                record["model_file"] = str(path)
            release(config, record)

        def handle(event: tuple) -> None:
            kind = event[0]
            if kind == "record":
                deliver(event[1], event[2])
            elif kind == "report":
                if progress is not None and event[1] not in recorded:
                    progress.run_epoch(by_id[event[1]], event[2])
            elif kind == "checkpoint":
                if event[1] not in recorded:
                    store.write_checkpoint(by_id[event[1]], event[2])
            elif kind == "drop_checkpoint":
                if event[1] not in recorded:
                    store.remove_checkpoint(by_id[event[1]])

        def fail_rest(flight: _Flight, exc: BaseException) -> None:
            for config in flight.configs:
                if config.run_id() not in recorded:
                    deliver(records.mark_failed(records.for_run(config, found, torch.device("cpu")), exc), None)

        try:
            while flights or more:
                while more and len(flights) < 2 * self._slots():
                    group = pending.next_group()
                    if not group:
                        more = False
                        break
                    for config in group:
                        by_id[config.run_id()] = config
                        if not found.pruners.get(config.pruner).prunes:
                            dense_in_flight.add(config.run_id())
                    flights[self._submit(group, pending)] = _Flight(group)
                    if progress is not None:
                        progress.group_sent(group)
                if not flights:
                    break
                ready, _ = ray.wait(list(flights), num_returns=1, timeout=0.5)
                for generator in ready:
                    flight = flights[generator]
                    try:
                        item = ray.get(next(generator))
                    except StopIteration:
                        fail_rest(flight, RuntimeError(f"the Ray task on {flight.host} ended without the run's record"))
                        del flights[generator]
                        continue
                    except ray.exceptions.RayTaskError as exc:
                        cause = getattr(exc, "cause", None)
                        del flights[generator]
                        if isinstance(cause, UserError):
                            raise UserError(f"A Ray worker on {flight.host} could not train its group: {cause}") from None
                        fail_rest(flight, cause if isinstance(cause, BaseException) else exc)
                        continue
                    except ray.exceptions.RayError as exc:
                        del flights[generator]
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                        fail_rest(flight, RuntimeError(
                            f"its Ray task failed on every one of {MAX_RETRIES + 1} attempts ({type(exc).__name__}: {first})"))
                        continue
                    if item["kind"] == "start":
                        flight.host = item["host"]
                        if progress is not None:
                            progress.group_started(flight.configs, item["host"])
                    for event in item.get("events", []):
                        handle(event)
                    if item["kind"] == "end":
                        for record, model in item["records"]:
                            if record is not None:
                                deliver(record, model)
                        fail_rest(flight, RuntimeError(f"the Ray task on {flight.host} ended without the run's record"))
                        del flights[generator]
                if progress is not None:
                    progress.refresh()
        finally:
            for generator in flights:
                try:
                    ray.cancel(generator, force=True)
                except Exception:  # noqa: BLE001 - best effort: the driver is leaving anyway
                    pass
            for waiting in list(held.values()):  # their references never came: kept, unchecked, as locally
                for config, record in waiting:
                    try:
                        pending.stored(config, record)
                    except Exception:  # noqa: BLE001 - stopping already; the rerun trains it again
                        warnings.warn(f"Could not store the record of {config.run_id()}; the next run trains it again.", stacklevel=2)
            held.clear()
