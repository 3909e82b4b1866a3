"""`python -m runner` measured as real subprocesses: start-up costs and whole runs."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from runner.record.run_folder import LOG_FILE, read_metrics
from tests.conftest import runner_env

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FIRST_STEP_MARK = "first training step finished"  # runner/fit/callbacks.py StepLogger
LOG_TIME_FORMAT = "%Y-%m-%d %H:%M:%S,%f"  # logging's asctime
TIMEOUT_S = 600


def wall_seconds(args: list[str]) -> float:
    """Wall time of one command, start to exit."""
    return timed_output(args)[0]


def timed_output(args: list[str]) -> tuple[float, str]:
    """Wall time of one command, start to exit, and what it printed."""
    started = time.perf_counter()
    done = subprocess.run(args, cwd=PROJECT_ROOT, env=runner_env(), capture_output=True, check=True,
                          text=True, timeout=TIMEOUT_S)
    return time.perf_counter() - started, done.stdout


def cfg_job_seconds() -> float:
    """`python -m runner --cfg job`: compose and print the config (no TensorFlow import)."""
    return wall_seconds([sys.executable, "-m", "runner", "--cfg", "job"])


def import_tensorflow_seconds() -> float:
    """The floor under any training start-up: the interpreter plus `import tensorflow`."""
    return wall_seconds([sys.executable, "-c", "import tensorflow"])


def whole_run(overrides: list[str], run_dir: Path) -> tuple[float, float]:
    """(wall seconds from launch to exit, steady-state images/s from the run's metrics.json)."""
    seconds = wall_seconds([sys.executable, "-m", "runner", *overrides, f"hydra.run.dir={run_dir}"])
    return seconds, float(read_metrics(run_dir)["images_per_sec"])


def first_step_seconds(overrides: list[str], run_dir: Path) -> float:
    """From launching `python -m runner` to the end of its first training step.

    Reads the StepLogger's first-step line from train.log, then stops the run: what follows
    the first step is measured by the throughput sections.
    """
    launched = datetime.now()
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", *overrides, f"hydra.run.dir={run_dir}"],
        cwd=PROJECT_ROOT, env=runner_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        stamp = _wait_for_first_step(run_dir / LOG_FILE, process)
    finally:
        process.terminate()
        process.wait(timeout=60)
    return (stamp - launched).total_seconds()


def first_step_logged(log_text: str) -> datetime | None:
    """When train.log's first-step line was logged (its `[YYYY-MM-DD HH:MM:SS,mmm]` stamp)."""
    for line in log_text.splitlines():
        if FIRST_STEP_MARK in line:
            return datetime.strptime(line[1:24], LOG_TIME_FORMAT)
    return None


def _wait_for_first_step(log_file: Path, process: subprocess.Popen) -> datetime:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        stamp = first_step_logged(log_file.read_text()) if log_file.is_file() else None
        if stamp is not None:
            return stamp
        if process.poll() is not None:
            raise RuntimeError(f"python -m runner exited ({process.returncode}) before its first step")
        time.sleep(0.05)
    raise TimeoutError(f"no first training step in {log_file} after {TIMEOUT_S}s")
