"""The results store: one JSON file per run under ``RESULTS/runs/``, written atomically.

A record is written to a temporary file in the same folder, flushed to disk, then renamed over its
final name, so an interrupted run never leaves a half-written record, and an earlier record is only
replaced by a complete new one. A temporary file is named after its writer (host and process id),
so the next ``bench run`` removes those whose writer is gone (:meth:`ResultsStore.clean_orphans`)
and never one that a live process is still writing.

Besides ``runs/``, a results folder holds ``checkpoints/`` (one file per run in progress, removed
when its record is written), ``claims/`` (one lock file per run being trained, so two ``bench
run`` commands on one folder never train the same run), ``failures/`` (a failed attempt at a run whose
``ok`` record stays in ``runs/``: a failure never replaces a success) and ``models/``.

A write that fails (a full disk, a permission) raises :class:`~bench_harness.errors.StoreError`:
one sentence, and the grid stops, since no later run could store its record either.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import tempfile
import time
import warnings
from pathlib import Path

from bench_harness.config import RunConfig
from bench_harness.errors import StoreError
from bench_harness.record import incomplete_reason, now, same_plugins

try:
    import fcntl
except ImportError:  # not on Windows: claims are then not enforced (see ResultsStore.claim)
    fcntl = None

HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
"""This machine's name as it appears in temporary-file names and claims (no dots)."""

_TEMPORARY = re.compile(r"^\.(?P<final>.+)\.(?P<host>[^.]*)-(?P<pid>\d+)\.[^.]+\.tmp$")
"""``.FINAL.HOST-PID.RANDOM.tmp``: a temporary file of :func:`write_bytes_atomically`."""

ORPHAN_AGE_SECONDS = {"other host": 24 * 3600, "unnamed": 600}
"""A temporary file this old is an orphan even when its writer cannot be checked: written by
another machine sharing the folder (a day), or by an older version that did not name its writer."""


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def describe_os_error(path: Path, exc: OSError, doing: str = "write") -> str:
    """One sentence for a failed file operation, saying what to do about it."""
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"Could not {doing} {path}: the disk is full (no space left on device); free some space, or choose another folder."
    if code in (errno.EACCES, errno.EPERM):
        return f"Could not {doing} {path}: permission denied; choose a folder you can write to."
    if code == errno.EROFS:
        return f"Could not {doing} {path}: the file system is read-only; choose another folder."
    if code == errno.ENOTDIR:
        return f"Could not {doing} {path}: a part of that path is a file, not a folder; choose another path."
    if code == errno.EISDIR:
        return f"Could not {doing} {path}: it is a folder; name a file."
    return f"Could not {doing} {path}: {exc.strerror or exc}."


def write_json_atomically(path: Path, payload: dict) -> None:
    """Write ``payload`` as JSON to ``path`` so that readers see the old file or the new one, never half.

    A payload that is not JSON (a NaN, an infinity) raises ``ValueError`` before anything is written.
    """
    write_text_atomically(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so no reader sees half of it."""
    write_bytes_atomically(path, text.encode("utf-8"))


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so no reader sees half of it.

    Any failure (or interruption) removes the temporary file; an ``OSError`` becomes a
    :class:`~bench_harness.errors.StoreError` with one sentence.
    """
    path = Path(path)
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{HOST}-{os.getpid()}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        # mkstemp creates the file readable by its owner only; give it the permissions of a normal file.
        os.chmod(temporary, 0o666 & ~_current_umask())
        os.replace(temporary, path)
    except BaseException as exc:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StoreError(describe_os_error(path, exc)) from None
        raise


def probe_writable(folder: Path, what: str, size: int = 1 << 20) -> None:
    """Check that ``folder`` can take files, by creating it if needed and writing (and removing) a
    probe of ``size`` bytes, flushed to disk; raise :class:`StoreError` naming ``what`` (``the
    results folder``) otherwise.

    Done before any training, so a read-only folder, a path that is a file or a full disk is found
    in a second rather than after the first run has trained.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise StoreError(f"Could not write into {what} {folder}: it is a file, not a folder; choose a folder.")
    temporary = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".write-probe.{HOST}-{os.getpid()}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as stream:
            stream.write(b"\0" * size)
            stream.flush()
            os.fsync(stream.fileno())
    except OSError as exc:
        raise StoreError(describe_os_error(folder, exc, f"write into {what}")) from None
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process has nothing in flight when it cleans up (it does so first)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    except OSError:
        return True
    return True


def _orphan(path: Path) -> bool:
    """Whether a temporary file's writer is gone (see :data:`ORPHAN_AGE_SECONDS`)."""
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return False
    match = _TEMPORARY.match(path.name)
    if match is None:
        return age > ORPHAN_AGE_SECONDS["unnamed"]
    if match["host"] != HOST:
        return age > ORPHAN_AGE_SECONDS["other host"]
    return not _pid_alive(int(match["pid"]))


class Claim:
    """The exclusive right of this process to train one run: an advisory lock on its claim file.

    The lock is the operating system's (``flock``), so it ends when its owner ends, however it ends
    (a ``kill -9`` included): the next ``bench run`` takes it over with no stale-lock guessing. The
    file holds the owner's process id and host, to tell the user who is training the run.
    """

    def __init__(self, path: Path, handle: int | None) -> None:
        self.path = path
        self._handle = handle

    def release(self) -> None:
        """Give the run up: remove the claim file, then drop the lock."""
        if self._handle is None:
            return
        try:
            if os.fstat(self._handle).st_ino == os.stat(self.path).st_ino:
                self.path.unlink()
        except OSError:
            pass
        os.close(self._handle)
        self._handle = None


class ResultsStore:
    """Run records of one results folder, with the checkpoints and claims of the runs in progress."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.models_dir = self.root / "models"
        self.checkpoints_dir = self.root / "checkpoints"
        self.claims_dir = self.root / "claims"
        self.failures_dir = self.root / "failures"
        self._warned: set[str] = set()

    def _warn_once(self, path: Path, message: str) -> None:
        # A file is read more than once in a command (resume checks it, then again after claiming):
        # its problem is told once.
        if str(path) not in self._warned:
            self._warned.add(str(path))
            warnings.warn(message, stacklevel=3)

    def path_for(self, config: RunConfig) -> Path:
        """Where the record of ``config`` lives."""
        return self.runs_dir / f"{config.run_id()}.json"

    @staticmethod
    def _load(path: Path) -> tuple[dict | None, str | None]:
        """(the JSON object in ``path``, None), or (None, why it is not one)."""
        try:
            with open(path, encoding="utf-8") as stream:
                record = json.load(stream)
        except (OSError, ValueError) as exc:  # ValueError: bad JSON, and bytes that are not UTF-8
            return None, f"unreadable: {exc}"
        if not isinstance(record, dict):
            return None, f"it holds a JSON {type(record).__name__}, not an object"
        return record, None

    def read(self, path: Path) -> dict | None:
        """One record, or None (with a warning naming the file) if it is not a JSON object."""
        record, problem = self._load(path)
        if problem:
            self._warn_once(path, f"Skipping run record {path}: {problem}.")
        return record

    def is_complete(self, config: RunConfig, provenance: dict, finished_after: str | None = None) -> bool:
        """True if a finished run with exactly this config hash is already recorded, by the same
        versions of its pruner, dataset and model plugins (``provenance``, see ``record.plugin_provenance``).

        A record that is unreadable, or marked ok but missing what a finished run holds
        (``record.incomplete_reason``), is named in one warning and counts as not done, so the run is
        trained again and the file replaced. ``finished_after`` (a ``record.now()`` time) counts only
        records finished since then: ``--force`` redoes older ones, but not one another process has
        just written.
        """
        path = self.path_for(config)
        if not os.path.lexists(path):
            return False
        record, problem = self._load(path)
        if problem:
            self._warn_once(path, f"Run record {path} is {problem}; the run is trained again.")
            return False
        if record.get("status") != "ok":
            return False
        problem = incomplete_reason(record, config)
        if problem:
            self._warn_once(path, f"Run record {path} is incomplete ({problem}); the run is trained again.")
            return False
        if finished_after is not None and str(record.get("finished_at") or "") <= finished_after:
            return False  # (times are to the second: one finished in the command's first second is redone)
        return record.get("config_hash") == config.config_hash() and same_plugins(record, provenance)

    def _holds_success(self, config: RunConfig) -> bool:
        record, _ = self._load(self.path_for(config))
        return record is not None and record.get("status") == "ok" and incomplete_reason(record, config) is None

    def write(self, config: RunConfig, record: dict) -> Path:
        """Store a run's record atomically and return its path.

        A record that is not ``ok`` never replaces an ``ok`` one of the same run (another process,
        or an earlier command, finished it): it goes to ``failures/`` instead, so the failure is kept
        and the success stays counted.
        """
        if record.get("status") != "ok" and self._holds_success(config):
            path = self.failures_dir / f"{config.run_id()}.json"
        else:
            path = self.path_for(config)
        write_json_atomically(path, record)
        return path

    # -- checkpoints --------------------------------------------------------------------------------

    def checkpoint_path(self, config: RunConfig) -> Path:
        """Where the checkpoint of a run in progress lives."""
        return self.checkpoints_dir / f"{config.run_id()}.pt"

    def write_checkpoint(self, config: RunConfig, data: bytes) -> None:
        """Replace the run's checkpoint atomically (a kill mid-write leaves the previous one)."""
        write_bytes_atomically(self.checkpoint_path(config), data)

    def read_checkpoint(self, config: RunConfig) -> bytes | None:
        """The run's checkpoint, or None if there is none (or it cannot be read, with a warning)."""
        path = self.checkpoint_path(config)
        if not path.exists():
            return None
        try:
            return path.read_bytes()
        except OSError as exc:
            self._warn_once(path, f"Ignoring checkpoint {path}: {exc.strerror or exc}; the run starts over.")
            return None

    def remove_checkpoint(self, config: RunConfig) -> None:
        """Forget a run's checkpoint (its record is written, or it must start over)."""
        try:
            self.checkpoint_path(config).unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(describe_os_error(self.checkpoint_path(config), exc, "remove")) from None

    # -- claims -------------------------------------------------------------------------------------

    def claim_path(self, config: RunConfig) -> Path:
        """The claim file of a run."""
        return self.claims_dir / f"{config.run_id()}.lock"

    def claim(self, config: RunConfig) -> Claim | None:
        """Take the exclusive right to train ``config``, or None if a live process holds it.

        The caller must check again, after claiming, whether the run is complete: the previous
        owner may have just finished it.
        """
        path = self.claim_path(config)
        while True:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                raise StoreError(describe_os_error(path, exc, "create")) from None
            if fcntl is None:
                return Claim(path, handle)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(handle)
                return None
            except OSError:  # a file system without locks: train anyway, and say what that risks
                self._warn_once(self.claims_dir, f"The file system of {self.claims_dir} does not support file locks; "
                                "two bench runs on this folder could train the same run twice.")
                return Claim(path, handle)
            # Its previous owner may have removed (and another process re-created) the file between
            # our open and our lock: a lock on a file no longer at that path claims nothing.
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = None
            if current != os.fstat(handle).st_ino:
                os.close(handle)
                continue
            os.ftruncate(handle, 0)
            os.write(handle, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": now()}).encode())
            return Claim(path, handle)

    def holder(self, config: RunConfig) -> str:
        """Who holds a run's claim, for a message: ``process 123 on host x``."""
        try:
            owner = json.loads(self.claim_path(config).read_text(encoding="utf-8"))
            return f"process {owner['pid']} on host {owner['host']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    # -- cleaning -----------------------------------------------------------------------------------

    def clean_orphans(self) -> list[Path]:
        """Remove what interrupted commands left behind: temporary files whose writer is gone, and
        claim files no live process holds. Returns the temporary files removed."""
        removed = []
        folders = [self.root, self.runs_dir, self.models_dir, self.checkpoints_dir, self.failures_dir, self.root / "plots"]
        for folder in folders:
            if not folder.is_dir():
                continue
            for path in folder.glob(".*.tmp"):
                if path.is_file() and _orphan(path):
                    try:
                        path.unlink()
                        removed.append(path)
                    except OSError:
                        pass
        if self.claims_dir.is_dir() and fcntl is not None:
            for path in self.claims_dir.glob("*.lock"):
                try:
                    handle = os.open(path, os.O_RDWR)
                except OSError:
                    continue
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while a live owner holds it
                    if os.stat(path).st_ino == os.fstat(handle).st_ino:
                        path.unlink()
                except OSError:
                    pass
                finally:
                    os.close(handle)
        return removed

    # -- reading a folder ---------------------------------------------------------------------------

    def records(self) -> list[dict]:
        """Every usable record in the folder, each run once, in file-name order.

        A file that is not a record (unreadable, not a JSON object, no pruner, finished without
        metrics) is left out with a warning naming it. Two files holding the same run id (a copied
        file) count once: a finished record wins over an unfinished one, then the later one.
        """
        if not self.runs_dir.is_dir():
            return []
        kept: dict[str, tuple[Path, dict]] = {}
        for path in sorted(self.runs_dir.glob("*.json")):
            record = self.read(path)
            if record is None:
                continue
            problem = _malformed(record)
            if problem:
                warnings.warn(f"Skipping run record {path}: {problem}.", stacklevel=2)
                continue
            run_id = str(record.get("run_id") or path.stem)
            if run_id in kept:
                other_path, other = kept[run_id]
                if _preference(record) > _preference(other):
                    kept[run_id] = (path, record)
                    other_path, path = path, other_path
                warnings.warn(f"Skipping run record {path}: it repeats run {run_id} of {other_path}, counted once.", stacklevel=2)
                continue
            kept[run_id] = (path, record)
        return [record for _, record in kept.values()]


def _malformed(record: dict) -> str | None:
    """Why a JSON object is not a usable run record, or None if it is one."""
    config = record.get("config")
    if config is not None and not isinstance(config, dict):
        return "its config is not an object"
    if not (record.get("pruner") or (config or {}).get("pruner")):
        return "it names no pruner"
    if record.get("status") == "ok" and not isinstance(record.get("metrics"), dict):
        return "it is marked ok but holds no metrics"
    return None


def _preference(record: dict) -> tuple:
    """Which of two records of the same run to keep: a finished one, then the later one."""
    return (record.get("status") == "ok", str(record.get("finished_at") or ""))
