"""A run stopped after fit() but before metrics.json (the final evaluation, a crash writing the
results) resumes from its backup with no epoch left to train, instead of training from epoch 0.

Keras deletes BackupAndRestore's backup when fit() ends; the runner keeps it until metrics.json is
written (runner/keras2.py, runner/train.py). The run is made to stop there for real, in process:
metrics.json is a folder, so writing the results fails after fit() and the final evaluation.
"""
from __future__ import annotations

import json

import pytest

from runner.resume import backup_epoch
from runner.train import BACKUP_DIR, CHECKPOINTS, train
from tests.conftest import compose_config

pytestmark = pytest.mark.ascend_stack  # the two stacks' BackupAndRestore differ

FIRST_STEP_LINE = "epoch: 1 step: 1 ,"  # StepLogger's line for the first step of epoch 1


@pytest.fixture(scope="module")
def stopped_then_resumed(tmp_path_factory, toy_bit_run) -> dict:
    run_dir = tmp_path_factory.mktemp("after_fit") / "run"
    cfg = compose_config(toy_bit_run, run_dir)
    (run_dir / "metrics.json").mkdir(parents=True)  # os.replace onto it fails: the run stops there
    with pytest.raises(OSError):
        train(cfg)
    stopped = {
        "status": json.loads((run_dir / "status.json").read_text()),
        "backup_epochs": backup_epoch(run_dir / CHECKPOINTS / BACKUP_DIR),
        "log": (run_dir / "train.log").read_text(),
    }
    (run_dir / "metrics.json").rmdir()
    metrics = train(cfg)
    return {"run_dir": run_dir, "stopped": stopped, "metrics": metrics,
            "log": (run_dir / "train.log").read_text()}


def test_the_backup_outlives_fit_until_metrics_json(stopped_then_resumed):
    stopped = stopped_then_resumed["stopped"]
    assert stopped["status"]["status"] == "failed"
    assert FIRST_STEP_LINE in stopped["log"]  # it trained before it stopped
    assert stopped["backup_epochs"] == 2  # both epochs, after fit() ended


def test_the_resumed_run_trains_no_epoch_again(stopped_then_resumed):
    log, metrics = stopped_then_resumed["log"], stopped_then_resumed["metrics"]
    assert "resuming after epoch 2" in log
    assert log.count(FIRST_STEP_LINE) == 1  # the first attempt's only
    assert metrics["epochs_completed"] == 2
    assert metrics["optimizer_steps"] == 6  # 2 epochs x 3 steps, restored from the backup


def test_the_backup_is_removed_once_metrics_json_is_written(stopped_then_resumed):
    run_dir = stopped_then_resumed["run_dir"]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs_completed"] == 2
    assert json.loads((run_dir / "status.json").read_text())["status"] == "finished"
    assert not (run_dir / CHECKPOINTS / BACKUP_DIR).exists()

