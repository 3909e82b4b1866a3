"""What a run reports about itself: train.log, env.json's environment, status.json as readers
should take it, and metrics.json's Ascend figures. Nothing here imports TensorFlow: runner.summarize
reads sweeps with it. Where each file goes: runner/record/run_folder.py.
"""
from __future__ import annotations

import logging
import platform
import subprocess
from pathlib import Path
from typing import Any

from runner.ascend.modelzoo import case_name
from runner.record.lock import lock_holder
from runner.record.run_folder import INTERRUPTED, LOG_FILE, RUNNING, read_status, resume_command
from runner.versions import installed_tensorflow, installed_version

LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] %(message)s"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def attach_log_file(run_dir: Path) -> logging.Handler:
    """Send the root logger to run_dir/train.log too (the console handler is Hydra's)."""
    handler = logging.FileHandler(run_dir / LOG_FILE)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler


def detach_log_file(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
    handler.close()


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(device: dict[str, Any], keras_api: dict[str, str]) -> dict[str, Any]:
    """keras_api: the Keras the run used ({"module": "tf_keras", "version": "2.21.0"})."""
    packages = ("keras", "tf-keras", "tensorflow-datasets", "tensorflow-hub", "hydra-core")
    # TensorFlow under its version whichever wheel brought it (tensorflow-cpu on Ascend hosts).
    tensorflow_distribution, tensorflow_version = installed_tensorflow() or (None, None)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "keras_api": keras_api,
        "packages": {"tensorflow": tensorflow_version,
                     **{name: installed_version(name) for name in packages}},
        "tensorflow_distribution": tensorflow_distribution,
        "git_commit": git_commit(),
        "device": device,
    }


def current_status(run_dir: Path) -> dict[str, Any] | None:
    """status.json as readers should take it. A run killed outright (SIGKILL, out of memory, power
    or node lost) never recorded its end and still says `running`: if nobody holds the folder's
    lock (run_folder.py), its process is gone, so it is shown as interrupted, with the resume
    command. A run that does hold it gets `holder`: pid, host and start of the process."""
    status = read_status(run_dir)
    if not status or status.get("status") != RUNNING:
        return status
    holder = lock_holder(run_dir)
    if holder is not None:
        return {**status, "holder": holder.describe()}
    return {
        **status, "status": INTERRUPTED, "resume": resume_command(run_dir),
        "reason": f"pid {status.get('pid')} on {status.get('host', 'its host')} is gone and the "
                  "folder is unlocked: killed before it could record its end",
    }


def ascend_figures(metrics: dict[str, Any], seconds_per_step: float, rank_size: int,
                   case_kind: str, network: str | None = None) -> dict[str, Any]:
    """The figures the Ascend scripts' shell wrappers report, under their names, as the runner
    measures them (a `modelzoo=` run replaces the first four by its recipe's: runner/ascend/modelzoo.py).

    ActualFPS is the whole run's steady-state throughput (the global batch per step);
    TrainingTime milliseconds per step; TrainAccuracy the final evaluation's val_accuracy;
    ActualLoss the last epoch's mean training loss; E2ETrainingTime the run's seconds.
    CaseName starts with the ModelZoo network's name, or the model's when there is none.
    """
    return {
        "ActualFPS": metrics["images_per_sec"],
        "TrainingTime": round(seconds_per_step * 1000, 2),
        "TrainAccuracy": metrics["val_accuracy"],
        "ActualLoss": metrics["train_loss"],
        "E2ETrainingTime": metrics["wall_seconds"],
        "DeviceType": metrics["device"],
        "RankSize": rank_size,
        "BatchSize": metrics["batch_size"],
        "CaseName": case_name(network or metrics["model"], metrics["batch_size"], rank_size, case_kind),
    }
