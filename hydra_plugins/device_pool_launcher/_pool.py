"""The sweep's side of a device pool: starts each job as a process of its own on a free device,
gives a device freed by a finished or failed job to the next job, passes Ctrl-C/SIGTERM on to
the jobs, and records where and how each job ran in <sweep dir>/device_pool.jsonl (record.py)."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hydra_plugins.device_pool_launcher._child import PARENT_ENV
from hydra_plugins.device_pool_launcher.devices import Device
from hydra_plugins.device_pool_launcher.record import append_record

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2


@dataclass
class Job:
    number: int  # Hydra's job number (hydra.job.num)
    overrides: list[str]
    payload: Any  # what _child.run unpickles: the job's config, task, Hydra context


@dataclass
class Running:
    job: Job
    device: Device
    process: subprocess.Popen
    result_file: Path
    started: float = field(default_factory=time.time)


@dataclass
class Outcome:
    """How a job's process ended: its JobReturn if it produced one, and the record."""

    job_return: Any
    record: dict[str, Any]


class DevicePool:
    def __init__(self, devices: Sequence[Device], jobs_per_device: int, stagger_seconds: float,
                 stop_timeout_seconds: float, sweep_dir: Path) -> None:
        self.devices, self.jobs_per_device = list(devices), max(1, jobs_per_device)
        self.stagger_seconds, self.stop_timeout = stagger_seconds, stop_timeout_seconds
        self.sweep_dir = sweep_dir
        self.running: list[Running] = []
        self.stop_signal: int | None = None
        self._last_start = -float("inf")
        self._stopped_at: float | None = None

    def run(self, jobs: Sequence[Job], pickle_job: Callable[[Job], bytes]) -> dict[int, Outcome]:
        """Run every job (unless stopped); their outcomes by job number. A stop (signal) raises
        SystemExit(128 + signal) once every started job has ended."""
        pending, outcomes = list(jobs), {}
        with tempfile.TemporaryDirectory(prefix="device_pool-") as tmp, self._forwarding_signals():
            try:
                while self.running or (pending and self.stop_signal is None):
                    self._start_what_fits(pending, pickle_job, Path(tmp))
                    self._kill_if_stop_overdue()
                    for ended in self._reap():
                        outcomes[ended.job.number] = self._outcome(ended)
                    time.sleep(POLL_SECONDS)
            finally:
                self._stop_all()  # only after an error in this loop: none is running otherwise
        if self.stop_signal is not None:
            name = signal.Signals(self.stop_signal).name
            log.warning("sweep stopped by %s: %d job(s) not started; to go on, run the same command "
                        "again with hydra.sweep.dir=%s", name, len(pending), self.sweep_dir)
            raise SystemExit(128 + self.stop_signal)
        return outcomes

    # --- starting ---------------------------------------------------------------------------

    def _free_device(self) -> Device | None:
        """The device with the fewest jobs, among those with room: jobs spread before they share."""
        load = {device.label: 0 for device in self.devices}
        for running in self.running:
            load[running.device.label] += 1
        free = [device for device in self.devices if load[device.label] < self.jobs_per_device]
        return min(free, key=lambda device: load[device.label], default=None)

    def _start_what_fits(self, pending: list[Job], pickle_job: Callable[[Job], bytes], tmp: Path) -> None:
        while pending and self.stop_signal is None:
            device = self._free_device()
            if device is None or time.monotonic() < self._last_start + self.stagger_seconds:
                return
            self._start(pending.pop(0), device, pickle_job, tmp)

    def _start(self, job: Job, device: Device, pickle_job: Callable[[Job], bytes], tmp: Path) -> None:
        job_file, result_file = tmp / f"{job.number}.job", tmp / f"{job.number}.result"
        job_file.write_bytes(pickle_job(job))
        env = {**os.environ, **device.environment(os.environ), PARENT_ENV: str(os.getpid()),
               # The job imports what this process imported, from the same places.
               "PYTHONPATH": os.pathsep.join(os.path.abspath(p or ".") for p in sys.path)}
        process = subprocess.Popen(
            [sys.executable, "-m", "hydra_plugins.device_pool_launcher._child", str(job_file),
             str(result_file)],
            env=env, start_new_session=True,  # a terminal's Ctrl-C reaches the sweep only
        )
        self.running.append(Running(job, device, process, result_file))
        self._last_start = time.monotonic()
        log.info("job #%d on %s (pid %d): %s", job.number, device.label, process.pid,
                 " ".join(job.overrides))

    # --- ending -----------------------------------------------------------------------------

    def _reap(self) -> list[Running]:
        ended = [running for running in self.running if running.process.poll() is not None]
        self.running = [running for running in self.running if running not in ended]
        return ended

    def _outcome(self, ended: Running) -> Outcome:
        result = _read_result(ended.result_file)
        code = ended.process.returncode
        how = ("returned" if result.get("job_return") is not None
               else "interrupted" if self.stop_signal is not None else "died")
        now = time.time()
        record = {  # started/ended: when the device was taken and freed (the process's own times
            # are the job's process_started/process_ended)
            **result.get("record", {}),
            "job": ended.job.number, "overrides": ended.job.overrides, "device": ended.device.label,
            "pid": ended.process.pid, "exit_code": code, "ended_as": how,
            "started": ended.started, "ended": now, "wall_seconds": round(now - ended.started, 2),
        }
        if how == "died":
            log.error("job #%d on %s: its process ended with exit code %s and no result (killed, out "
                      "of memory?); it counts as a failed job", ended.job.number, ended.device.label, code)
        else:
            log.info("job #%d on %s: %s after %.1f s", ended.job.number, ended.device.label, how,
                     record["wall_seconds"])
        self._append_record(record)
        return Outcome(result.get("job_return"), record)

    def _append_record(self, record: dict[str, Any]) -> None:
        if "run_dir" in record:  # relative: the sweep folder may be moved
            record["run_dir"] = os.path.relpath(record["run_dir"], self.sweep_dir)
        append_record(self.sweep_dir, record)

    # --- stopping ---------------------------------------------------------------------------

    @contextmanager
    def _forwarding_signals(self) -> Iterator[None]:
        """Ctrl-C or SIGTERM: start nothing more and pass the signal on to every running job (a
        second one passes on again: the runner then stops at once)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signal_number: int, frame: Any) -> None:
        self.stop_signal = signal_number
        self._stopped_at = self._stopped_at or time.monotonic()
        for running in self.running:
            _send(running.process, signal_number)

    def _kill_if_stop_overdue(self) -> None:
        """A job still running stop_timeout seconds after a stop (a long step, the final
        evaluation) is killed: its last completed epoch is backed up, so it resumes all the same."""
        if self._stopped_at is not None and time.monotonic() > self._stopped_at + self.stop_timeout:
            for running in self.running:
                if running.process.poll() is None:
                    log.warning("job #%d on %s did not stop within %.0f s: killed",
                                running.job.number, running.device.label, self.stop_timeout)
                    running.process.kill()

    def _stop_all(self) -> None:
        """Leave no job behind: SIGTERM, then SIGKILL after stop_timeout seconds."""
        for running in self.running:
            _send(running.process, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for running in self.running:
            try:
                running.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                running.process.kill()
                running.process.wait()
        self.running = []


def _send(process: subprocess.Popen, signal_number: int) -> None:
    if process.poll() is None:
        try:
            process.send_signal(signal_number)
        except ProcessLookupError:
            pass


def _read_result(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    import cloudpickle

    try:
        return cloudpickle.loads(path.read_bytes())
    except Exception as error:  # e.g. an exception class the sweep process cannot import
        log.warning("could not read the job's result %s: %s", path, error)
        return {}
