"""SIGKILL at chosen moments, restart each time: the run folder ends with every epoch exactly once,
loadable best/last weights, a valid metrics.json, and evaluate/export working on it.

The moments are chosen by watching the run folder (no hook in the runner): the test polls every
couple of milliseconds and kills the moment it sees the sign, so each kill lands in the stretch
that sign opens: the second epoch's end writes (best/last weights, history row, backup) once a
weights file changes after the first epoch's backup; the final evaluation once the last epoch is
backed up; the final writes (status.json, backup removal) once metrics.json appears. One
module-scoped sequence of attempts on the cheap toy BiT run is shared by the tests below.
"""
from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from runner.resume import backup_epoch
from tests.conftest import runner_env

pytestmark = pytest.mark.ascend_stack  # also in the Ascend stack's CI subset

EPOCHS = 3
STEPS = 3  # per epoch (toy_bit_run)


class Attempt:
    """One `python -m runner` in the run folder, and what it wrote since it started."""

    def __init__(self, run_dir: Path, overrides: list[str], stderr_file: Path):
        self.run_dir = run_dir
        log = run_dir / "train.log"
        self.log_offset = log.stat().st_size if log.is_file() else 0
        self.started_ns = time.time_ns()
        self.stderr_file = stderr_file
        with open(stderr_file, "w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "runner", *overrides, f"hydra.run.dir={run_dir}"],
                stdout=subprocess.DEVNULL, stderr=stderr, text=True, env=runner_env(),
            )

    def new_log(self) -> str:
        try:
            with open(self.run_dir / "train.log") as f:
                f.seek(self.log_offset)
                return f.read()
        except OSError:
            return ""

    def logged(self, pattern: str) -> bool:
        return re.search(pattern, self.new_log()) is not None

    def backup_state(self) -> Path:
        return self.run_dir / "checkpoints" / "backup" / "chief" / "checkpoint"

    def backed_up(self, epochs: int) -> bool:
        return self.backup_state().is_file() and backup_epoch(self.backup_state().parent.parent) >= epochs

    def writing_weights_after_a_backup(self) -> bool:
        """The first epoch is backed up and a best/last weights file (or its temporary) was written
        after that: the next epoch's epoch-end writes have begun."""
        if not self.backed_up(1):
            return False
        since = self.backup_state().stat().st_mtime_ns
        for path in (self.run_dir / "checkpoints").glob("*weights*.h5"):
            try:
                if path.stat().st_mtime_ns > since:
                    return True
            except OSError:  # renamed away between glob and stat
                continue
        return False

    def kill_when(self, sign: Callable[[], bool], timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not sign():
            assert self.process.poll() is None, self.stderr_file.read_text()[-3000:]
            assert time.monotonic() < deadline, "the moment to kill never came"
            time.sleep(0.002)
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)

    def finish(self, timeout: float = 300) -> int:
        return self.process.wait(timeout=timeout)


def history_epochs(run_dir: Path) -> list[str]:
    lines = (run_dir / "history.csv").read_text().splitlines()
    return [line.split(",")[0] for line in lines[1:]]


@pytest.fixture(scope="module")
def killed_and_restarted(tmp_path_factory, toy_bit_run):
    root = tmp_path_factory.mktemp("kills")
    run_dir = root / "run"
    overrides = [o for o in toy_bit_run if not o.startswith("epochs=")] + [f"epochs={EPOCHS}"]
    moments: list[tuple[str, Callable[[Attempt], bool]]] = [
        ("during the second epoch's end writes", lambda a: a.writing_weights_after_a_backup()),
        ("after the last epoch's backup: the final evaluation", lambda a: a.backed_up(EPOCHS)),
        ("as metrics.json appears: the final writes", lambda a: (run_dir / "metrics.json").exists()),
    ]
    seen = {}
    for number, (moment, sign) in enumerate(moments):
        attempt = Attempt(run_dir, overrides, root / f"stderr_{number}.txt")
        attempt.kill_when(lambda a=attempt, s=sign: s(a))
        seen[moment] = {"log": attempt.new_log(), "metrics": (run_dir / "metrics.json").exists(),
                        "seconds": (time.time_ns() - attempt.started_ns) / 1e9}
    last = Attempt(run_dir, overrides, root / "stderr_last.txt")
    assert last.finish() == 0, last.stderr_file.read_text()[-3000:]
    return run_dir, seen, last.stderr_file.read_text()


def test_every_epoch_is_in_history_exactly_once(killed_and_restarted):
    run_dir, _, _ = killed_and_restarted
    assert history_epochs(run_dir) == [str(e) for e in range(EPOCHS)]


def test_metrics_are_valid_and_count_every_epoch_and_step_once(killed_and_restarted):
    run_dir, seen, last_stderr = killed_and_restarted
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_completed"] == EPOCHS
    assert metrics["optimizer_steps"] == EPOCHS * STEPS  # the optimiser state survived each kill
    assert all(math.isfinite(metrics[key]) for key in ("val_accuracy", "val_loss", "train_loss"))
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    assert "already holds a finished run" in last_stderr
    checkpoints = run_dir / "checkpoints"
    assert not (checkpoints / "backup").exists() and not list(checkpoints.glob("*.tmp.h5"))
    # docs/sweeps.md: the attempt that wrote metrics.json resumed with no epoch left to train, so
    # its images_per_sec is 0.0; and wall_seconds leaves out the attempts killed with SIGKILL (the
    # first two), so it is at most that last attempt's own life.
    assert metrics["images_per_sec"] == 0.0
    last_writer = seen["as metrics.json appears: the final writes"]
    assert 0 < metrics["wall_seconds"] <= last_writer["seconds"]


def test_each_restart_took_over_the_killed_runs_folder(killed_and_restarted):
    _, seen, _ = killed_and_restarted
    logs = list(seen.values())
    assert all("taking its folder over" in log["log"] for log in logs[1:])
    assert "resuming after epoch" in logs[1]["log"]  # the first kill came after a backup
    # Killed after the last backup, before metrics.json: the next attempt resumed without training.
    final_evaluation, final_writes = logs[1], logs[2]
    assert not final_evaluation["metrics"]
    assert f"resuming after epoch {EPOCHS}" in final_writes["log"]
    assert not re.search(r"epoch: \d+ step: ", final_writes["log"])


def test_best_and_last_weights_load_and_evaluate_and_export_work(killed_and_restarted, tmp_path):
    from runner.checkpoint import load_run
    from runner.evaluate import evaluate_run
    from runner.export import export_run

    run_dir, _, _ = killed_and_restarted
    metrics = json.loads((run_dir / "metrics.json").read_text())
    last = evaluate_run(load_run(run_dir, "last"))
    assert last["accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-6)
    best = evaluate_run(load_run(run_dir, "best"))
    assert 0.0 <= best["accuracy"] <= 1.0 and math.isfinite(best["loss"])
    out = export_run(load_run(run_dir, "best"), tmp_path / "exported")
    assert (out / "saved_model.pb").is_file()
