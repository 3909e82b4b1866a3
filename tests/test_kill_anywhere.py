"""SIGKILL at chosen moments, restart each time: the run folder ends with every epoch exactly once,
loadable best/last weights, a valid metrics.json, and evaluate/export working on it.

The moments are chosen by watching the run folder (no hook in the runner): the test polls every
couple of milliseconds and kills the moment it sees the sign, so each kill lands in the stretch
that sign opens: the second epoch's end writes (best/last weights, history row, backup) once a
weights file changes after the first epoch's backup; the final evaluation once the last epoch is
backed up; the final writes (status.json, backup removal) once metrics.json appears. One
module-scoped sequence of attempts on the cheap toy BiT run is shared by the tests below.

A second sequence kills a run whose early stopping fired, during its final evaluation, and resumes
it: no further epoch, and the final evaluation is the best epoch's, as in an uninterrupted run.
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

from runner.record.run_folder import backup_epoch, read_history
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
    from runner.evaluate import evaluate_run
    from runner.export import export_run
    from runner.tools.checkpoint import load_run

    run_dir, _, _ = killed_and_restarted
    metrics = json.loads((run_dir / "metrics.json").read_text())
    last = evaluate_run(load_run(run_dir, "last"))
    assert last["accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-6)
    best = evaluate_run(load_run(run_dir, "best"))
    assert 0.0 <= best["accuracy"] <= 1.0 and math.isfinite(best["loss"])
    out = export_run(load_run(run_dir, "best"), tmp_path / "exported")
    assert (out / "saved_model.pb").is_file()


ES_EPOCHS = 5  # early stopping fires after the second: epochs remain when the run is killed
# Patience 1, and a rate at which the toy learns the class frequencies only: its pooled features
# hardly differ between images, so it predicts one class for every image and val_accuracy stays at
# 0.1 (the classes are balanced) while val_loss moves by ~0.01 an epoch: the best epoch (the first
# of equals) and the last differ in their weights.
FLAT_VAL_ACCURACY = ["model.early_stopping_patience=1", "model.learning_rate=3"]
CHECKPOINT_FILES = ("best_weights.h5", "last_weights.h5")


def early_stopping_fired(rows: list[dict[str, float]]) -> bool:
    """With patience 1: the last epoch's val_accuracy is no gain on the best before it."""
    return len(rows) >= 2 and rows[-1]["val_accuracy"] <= max(r["val_accuracy"] for r in rows[:-1])


@pytest.fixture(scope="module")
def early_stopped_killed_and_resumed(tmp_path_factory, toy_bit_run):
    """Killed once early stopping fired and its epoch was backed up (fit() is over: the final
    evaluation), then started again in the same folder."""
    root = tmp_path_factory.mktemp("early_stopped")
    run_dir = root / "run"
    overrides = [o for o in toy_bit_run if not o.startswith(("epochs=", "model.early_stopping"))]
    overrides += [f"epochs={ES_EPOCHS}", *FLAT_VAL_ACCURACY]
    killed = Attempt(run_dir, overrides, root / "stderr_killed.txt")

    def stopped_and_backed_up() -> bool:
        rows = read_history(run_dir)
        return early_stopping_fired(rows) and killed.backed_up(len(rows))

    killed.kill_when(stopped_and_backed_up)
    checkpoints = run_dir / "checkpoints"
    before = {
        "history": read_history(run_dir), "metrics": (run_dir / "metrics.json").exists(),
        "weights": {name: (checkpoints / name).read_bytes() for name in CHECKPOINT_FILES},
    }
    resumed = Attempt(run_dir, overrides, root / "stderr_resumed.txt")
    assert resumed.finish() == 0, resumed.stderr_file.read_text()[-3000:]
    return run_dir, before, resumed.new_log()


def test_a_resumed_early_stopped_run_trains_no_further_epoch(early_stopped_killed_and_resumed):
    run_dir, before, resumed_log = early_stopped_killed_and_resumed
    assert not before["metrics"] and 2 <= len(before["history"]) < ES_EPOCHS
    assert read_history(run_dir) == before["history"]  # no row added, none rewritten
    assert f"resuming after epoch {len(before['history'])}" in resumed_log
    assert not re.search(r"epoch: \d+ step: ", resumed_log)  # not a single training step
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_completed"] == len(before["history"])
    assert metrics["optimizer_steps"] == len(before["history"]) * STEPS
    checkpoints = run_dir / "checkpoints"
    assert {name: (checkpoints / name).read_bytes() for name in CHECKPOINT_FILES} == before["weights"]


def test_a_resumed_early_stopped_run_evaluates_the_best_epochs_weights(early_stopped_killed_and_resumed):
    from runner.evaluate import evaluate_run
    from runner.tools.checkpoint import load_run

    run_dir, before, _ = early_stopped_killed_and_resumed
    rows = before["history"]
    best = max(rows, key=lambda row: row["val_accuracy"])  # the first of equals, as Keras keeps
    assert best is not rows[-1] and abs(best["val_loss"] - rows[-1]["val_loss"]) > 1e-3
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val_accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-6)
    assert metrics["val_loss"] == pytest.approx(best["val_loss"], abs=1e-5)
    # The weights evaluated were best_weights.h5's, not last_weights.h5's (the last epoch's).
    assert evaluate_run(load_run(run_dir, "best"))["loss"] == pytest.approx(metrics["val_loss"], abs=1e-5)
    assert evaluate_run(load_run(run_dir, "last"))["loss"] != pytest.approx(metrics["val_loss"], abs=1e-3)


def test_weights_are_written_beside_the_file_and_renamed_over_it(tmp_path):
    """README: weights are written to `*.tmp.h5` and renamed, so a kill or a full disk mid-write
    leaves the previous file whole: a reader of the previous file still reads all of it."""
    import numpy as np

    from runner.fit.callbacks import AtomicModelCheckpoint
    from runner.keras2 import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    final = tmp_path / "last_weights.h5"
    checkpoint = AtomicModelCheckpoint(str(final), save_weights_only=True)
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {})
    first = final.read_bytes()
    with open(final, "rb") as previous:
        model.set_weights([w + 1.0 for w in model.get_weights()])
        checkpoint.on_epoch_end(1, {})
        assert previous.read() == first  # replaced by a rename, not rewritten in place
    assert [p.name for p in tmp_path.iterdir()] == ["last_weights.h5"]  # no .tmp.h5 left
    expected = model.get_weights()
    model.set_weights([np.zeros_like(w) for w in expected])
    model.load_weights(str(final))
    np.testing.assert_allclose(model.get_weights()[0], expected[0])


def test_metrics_and_status_json_are_replaced_whole(tmp_path):
    """README: metrics.json is written atomically; a reader sees the previous file or the new one."""
    from runner.record.run_folder import write_json_atomic

    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"epochs_completed": 1})
    with open(path) as previous:
        write_json_atomic(path, {"epochs_completed": 2})
        assert json.loads(previous.read()) == {"epochs_completed": 1}
    assert json.loads(path.read_text()) == {"epochs_completed": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
