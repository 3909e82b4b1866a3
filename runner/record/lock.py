"""A run folder has one writer, and must be writable at all. No TensorFlow here.

The lock is `run.lock` in the run folder, held with `flock` for the whole run: the kernel drops it
when its process ends in any way (SIGKILL and out-of-memory kills included), so a folder left by a
dead process is simply taken by the next one. The file keeps the last holder's pid, host and start
time, for the message a second process prints and for readers of status.json.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from runner.errors import ConfigError

LOCK_FILE = "run.lock"
# How long a start waits when the lock looks held by nobody alive: a reader's probe, or a process
# that took it an instant ago and has not written its pid yet.
SETTLE_SECONDS, SETTLE_STEP = 1.0, 0.05

# The locks this process holds: folder -> [file descriptor, nesting depth]. A second flock from the
# same process would conflict with its own, and `python -m runner` holds the folder around train().
_held: dict[Path, list[int]] = {}


@dataclass(frozen=True)
class Holder:
    """Who took a run folder's lock (the last one to, if nobody holds it now)."""

    pid: int
    host: str
    since: str

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} (since {self.since})"

    def is_alive(self) -> bool:
        """Whether the process still exists; a process on another host counts as alive."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process
            return True
        return True


class RunFolderBusy(ConfigError):
    """Another process holds the run folder; nothing was written into it."""


def ensure_writable(folder: Path, key: str) -> None:
    """Create `folder` if needed; ConfigError naming it, `key` and the fix if it cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):  # also false on a read-only file system
            raise PermissionError(13, "no write permission", str(folder))
    except OSError as error:
        raise _unwritable(folder, key, error) from None


def _unwritable(folder: Path, key: str, error: OSError) -> ConfigError:
    where = f" ({error.filename})" if error.filename and str(error.filename) != str(folder) else ""
    return ConfigError(
        f"Cannot write the output folder {folder}: {error.strerror or error}{where}. Runs need a "
        "folder they can create and write (not under /proc or /sys, not through a file, with "
        f"write permission and free space). Pass {key}=<a writable folder>, or fix the folder's "
        "permissions or free some space."
    )


def read_holder(run_dir: Path) -> Holder | None:
    """The pid, host and time the lock file records (None: no lock file, or not written yet)."""
    try:
        data: dict[str, Any] = json.loads((run_dir / LOCK_FILE).read_text())
        return Holder(int(data["pid"]), str(data["host"]), str(data["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def lock_holder(run_dir: Path) -> Holder | None:
    """Who holds run_dir's lock now; None when nobody does (the run ended, or its process died)."""
    key = run_dir.resolve()
    if key in _held:
        return read_holder(run_dir)
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:  # no lock file: no run ever held this folder
        return None
    try:
        # A shared lock for an instant: it fails only while some process holds the exclusive one.
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_holder(run_dir) or Holder(0, "unknown", "unknown")
    finally:
        os.close(fd)  # closing drops the shared lock too
    return None


def _busy_message(run_dir: Path, holder: Holder | None) -> str:
    who = holder.describe() if holder else "another process (it has not written its pid yet)"
    stop = f" (kill {holder.pid} on {holder.host})" if holder else ""
    return (
        f"The run folder {run_dir} is in use: {who} holds its lock ({run_dir / LOCK_FILE}), so this "
        "process stops without writing anything there (two writers would mix their results). Wait "
        f"for that run to end, or stop it{stop}, then start this command again: it resumes or "
        "re-uses the folder. For a separate run, pass another hydra.run.dir."
    )


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _acquire(run_dir: Path) -> int:
    """The locked file descriptor of run_dir's lock file; RunFolderBusy if another process has it."""
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise _unwritable(run_dir, "hydra.run.dir", error) from None
    deadline = time.monotonic() + SETTLE_SECONDS
    while not _try_lock(fd):
        holder = read_holder(run_dir)
        if (holder is not None and holder.is_alive()) or time.monotonic() > deadline:
            os.close(fd)
            raise RunFolderBusy(_busy_message(run_dir, holder))
        time.sleep(SETTLE_STEP)
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.now().isoformat(timespec="seconds"), "command": sys.argv}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    except OSError as error:  # a full disk shows here, before the run starts
        os.close(fd)
        raise _unwritable(run_dir, "hydra.run.dir", error) from None
    return fd


@contextmanager
def hold_run_folder(run_dir: Path) -> Iterator[None]:
    """Hold run_dir's exclusive lock for the block (creating the folder); nestable in one process.

    Raises RunFolderBusy, before anything is written, when another live process holds it.
    """
    ensure_writable(run_dir, "hydra.run.dir")
    key = run_dir.resolve()
    if key not in _held:
        _held[key] = [_acquire(run_dir), 0]
    _held[key][1] += 1
    try:
        yield
    finally:
        _held[key][1] -= 1
        if not _held[key][1]:
            os.close(_held.pop(key)[0])  # closing the file releases the lock


class OutputFolderCheck(Callback):
    """Before Hydra creates the run (or sweep) folder: one paragraph and exit 2 if it cannot be
    written, instead of Hydra's traceback."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_or_exit(Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_or_exit(Path(config.hydra.sweep.dir), "hydra.sweep.dir")


def _check_or_exit(folder: Path, key: str) -> None:
    try:
        ensure_writable(folder, key)
    except ConfigError as error:
        print(f"Error: {error}", file=sys.stderr)
        # SystemExit, not an exception: Hydra turns a callback's exceptions into warnings.
        raise SystemExit(2) from None
