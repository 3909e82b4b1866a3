"""One run's folder: its layout (each file name defined here, once), train.log's handler,
status.json (as written, and as readers should take it), the wall clock across attempts, the
config files, resume preparation and the finishing sequence. Its lock is runner/record/lock.py's;
env.json's content runner/record/environment.py's. No TensorFlow at import (reading a backup's
epoch imports it).

<run dir>/
  .hydra/config.yaml            the config the run trains with (evaluate, predict, export rebuild
                                the model from it); with model.schedule=hyperrule the effective one,
                                written once BiT-HyperRule has seen the data
  .hydra/config.composed.yaml   hyperrule runs only: the config as composed
  .hydra/hydra.yaml, overrides.yaml   under `python -m runner`: Hydra's own, written under the lock
  run.lock, status.json, env.json, train.log, history.csv, metrics.json (the mark of a finished run)
  checkpoints/best_weights.h5, last_weights.h5, labels.txt
  checkpoints/resume_config.yaml   the config the backup was trained with (a resume must match it)
  checkpoints/backup/           until the run finishes: Keras' BackupAndRestore
  tensorboard/                  logger.tensorboard: Keras' scalars and the HParams session
  eval/<split>/                 python -m runner.evaluate's reports
  rank_<id>/                    every other process of a multi-process run, laid out the same
"""
from __future__ import annotations

import csv
import errno
import json
import logging
import os
import shlex
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner.errors import ConfigError, RunFailed
from runner.record.lock import hold_run_folder, lock_holder

log = logging.getLogger(__name__)

HYDRA_DIR = Path(".hydra")
CONFIG_FILE = HYDRA_DIR / "config.yaml"
COMPOSED_CONFIG_FILE = HYDRA_DIR / "config.composed.yaml"
HYDRA_FILE = HYDRA_DIR / "hydra.yaml"
OVERRIDES_FILE = HYDRA_DIR / "overrides.yaml"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
ENV_FILE = "env.json"
LOG_FILE = "train.log"
TENSORBOARD_DIR = "tensorboard"
EVAL_DIR = "eval"  # python -m runner.evaluate: eval/<split>[-last]/
CHECKPOINTS = "checkpoints"
# Keras 2's HDF5 weights, which both stacks read. (Not "*.weights.h5": for such names tf-keras
# writes Keras 3's weights format, which TF 2.6's Keras cannot read.)
BEST_WEIGHTS = "best_weights.h5"
LAST_WEIGHTS = "last_weights.h5"
LABELS_FILE = "labels.txt"
BACKUP_DIR = "backup"  # under checkpoints/: Keras' BackupAndRestore, deleted once metrics.json is written
RESUME_CONFIG = "resume_config.yaml"  # under checkpoints/: the config the backup was trained with

# status.json's "status": what the run's last attempt is doing or how it ended.
RUNNING, FINISHED, FAILED, INTERRUPTED = "running", "finished", "failed", "interrupted"

RESUME_PREFIX = "resume="
# Top-level keys a resumed run may change: they do not change what is trained.
MAY_CHANGE_ON_RESUME = {"output_dir", "log_steps", "logger", "optimized_metric"}
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] %(message)s"


@dataclass
class RunClock:
    """Wall time of a run across its attempts: earlier attempts' seconds come from status.json."""

    earlier_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    @property
    def seconds(self) -> float:
        return round(self.earlier_seconds + time.perf_counter() - self.started, 2)


class RunFolder:
    """One attempt's hold on a run folder: where each file goes, and the sequences that keep the
    folder consistent however the attempt ends (train() passes it to the stages that write)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.checkpoints = self.path / CHECKPOINTS
        self.best_weights = self.checkpoints / BEST_WEIGHTS
        self.last_weights = self.checkpoints / LAST_WEIGHTS
        self.backup = self.checkpoints / BACKUP_DIR
        self.history = self.path / HISTORY_FILE
        self.tensorboard = self.path / TENSORBOARD_DIR
        self.clock = RunClock()

    @contextmanager
    def hold(self) -> Iterator[RunFolder]:
        """The folder's lock for the block (runner/record/lock.py): RunFolderBusy if taken."""
        with hold_run_folder(self.path):
            yield self

    def start_attempt(self) -> None:
        """The clock goes on from earlier attempts; an attempt that never recorded its end is named."""
        previous = read_status(self.path) or {}
        if previous.get("status") == RUNNING:
            log.warning("the previous attempt (pid %s on %s) ended without recording how: it was "
                        "killed; taking its folder over", previous.get("pid"), previous.get("host"))
        self.clock = RunClock(previous.get("wall_seconds", 0.0))

    def record_running(self) -> None:
        write_status(self.path, RUNNING, pid=os.getpid(), host=socket.gethostname(),
                     wall_seconds=self.clock.seconds)

    def save_config(self, cfg: DictConfig, hydra_cfg: DictConfig | None, final: bool = True) -> None:
        """.hydra/: under `python -m runner`, the three files Hydra writes itself elsewhere
        (conf/config.yaml sets hydra.output_subdir to null so that they are written here, under the
        folder's lock); a run started by a test gets config.yaml, resolved. final=False (a config
        BiT-HyperRule completes): the composed config goes to config.composed.yaml, and config.yaml
        waits for save_effective_config."""
        folder = self.path / HYDRA_DIR
        folder.mkdir(exist_ok=True)
        config_file = self.path / (CONFIG_FILE if final else COMPOSED_CONFIG_FILE)
        if hydra_cfg is None:
            if not config_file.is_file():
                OmegaConf.save(cfg, config_file, resolve=True)
            return
        files = {config_file: cfg, self.path / HYDRA_FILE: OmegaConf.create({"hydra": hydra_cfg}),
                 self.path / OVERRIDES_FILE: hydra_cfg.overrides.task}
        for path, content in files.items():
            path.write_text(OmegaConf.to_yaml(content))  # as Hydra writes them

    def save_effective_config(self, cfg: DictConfig) -> None:
        """config.yaml, where evaluate/predict/export read the config the run trained with."""
        OmegaConf.save(cfg, self.path / CONFIG_FILE, resolve=True)

    def refuse_other_config(self, cfg: DictConfig, finished: bool) -> None:
        """Before an attempt writes anything: a backup resumes, and a finished run stands, only
        for the config it was trained with (a refused attempt leaves the folder as it was)."""
        saved = self.checkpoints / RESUME_CONFIG
        if saved.is_file() and (finished or self.backup_epochs()):
            check_same_config(cfg, saved, finished)

    def prepare_resume(self, cfg: DictConfig) -> None:
        """A fresh start records its config, which a backup then resumes under only."""
        saved = self.checkpoints / RESUME_CONFIG
        if not (self.backup_epochs() and saved.is_file()):
            saved.parent.mkdir(exist_ok=True)
            OmegaConf.save(cfg, saved, resolve=True)

    def backup_epochs(self) -> int:
        return backup_epoch(self.backup)

    def best_val_accuracy_so_far(self) -> float | None:
        """Best val_accuracy of the epochs an interrupted run already finished (for resume)."""
        values = [row["val_accuracy"] for row in read_history(self.path) if "val_accuracy" in row]
        return max(values, default=None)

    def write_labels(self, class_names: list[str]) -> None:
        self.checkpoints.mkdir(exist_ok=True)
        (self.checkpoints / LABELS_FILE).write_text("\n".join(class_names) + "\n")

    def write_env(self, environment: dict[str, Any]) -> None:
        write_json_atomic(self.path / ENV_FILE, environment)

    def record_interruption(self) -> None:
        epochs_done = self.backup_epochs()
        write_status(
            self.path, INTERRUPTED, epochs_completed=epochs_done,
            resume=resume_command(self.path), wall_seconds=self.clock.seconds,
        )
        log.warning("interrupted after %d completed epoch(s); resume with: %s", epochs_done,
                    resume_command(self.path))

    def record_failure(self, error: Exception) -> str:
        """status.json gets the reason (one line, returned); the log gets the message, or for an
        error that is not the user's input the traceback too. A full disk is the user's to fix,
        and may leave status.json unwritable too: then the console says so."""
        full = out_of_space(error)
        expected = full or isinstance(error, (ConfigError, RunFailed))
        message = self._out_of_space_message(error) if full else str(error).strip()
        log.error("run failed: %s", message, exc_info=not expected)
        reason = one_line(message if expected else f"{type(error).__name__}: {error}") or type(error).__name__
        try:
            write_status(self.path, FAILED, reason=reason, error=type(error).__name__,
                         wall_seconds=self.clock.seconds)
        except OSError as unwritable:
            log.error("status.json could not record this failure (%s): it still says %r", unwritable,
                      (read_status(self.path) or {}).get("status"))
        return reason

    def _out_of_space_message(self, error: Exception) -> str:
        return (f"The disk holding {self.path} is full (errno {errno.ENOSPC}, ENOSPC: {error}). Free "
                "space there and run the same command again: the run resumes from its last completed "
                "epoch, whose checkpoints are whole (each is written to a temporary file first).")

    def finish(self, metrics: dict[str, Any]) -> None:
        """metrics.json, the mark of a finished run, then what follows it."""
        write_json_atomic(self.path / METRICS_FILE, metrics)
        self.settle_finished(metrics)

    def settle_finished(self, metrics: dict[str, Any]) -> None:
        """What follows metrics.json, done again if a kill cut it short: status.json says
        finished; the backup and any weights file cut short by a kill are gone."""
        if (read_status(self.path) or {}).get("status") != FINISHED:
            write_status(self.path, FINISHED, wall_seconds=metrics["wall_seconds"])
        self.drop_backup()
        for partial in self.checkpoints.glob("*.tmp.h5"):
            partial.unlink()

    def drop_backup(self) -> None:
        """The backup outlives fit() until metrics.json is written: a finished run needs it no more."""
        shutil.rmtree(self.backup, ignore_errors=True)


def one_line(message: str, limit: int = 1000) -> str:
    """A message as one line of at most about `limit` characters. All of it, not its first line:
    TensorFlow's errors start "Graph execution error:" and name the cause (a missing file, the
    op that ran out of memory) at the end, which a long message keeps."""
    text = " ".join(message.split())
    return text if len(text) <= limit else f"{text[:limit // 3]} ... {text[-(limit * 2 // 3):]}"


BACKUP_EPOCH_KEY = "ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"  # Keras 2's WorkerTrainingState


def backup_epoch(backup_dir: Path) -> int:
    """Epochs completed according to a Keras BackupAndRestore backup; 0 when there is none."""
    chief = backup_dir / "chief"
    if not (chief / "checkpoint").is_file():
        return 0
    import tensorflow as tf

    checkpoint = tf.train.latest_checkpoint(str(chief))
    try:
        saved_epoch = int(tf.train.load_variable(checkpoint, BACKUP_EPOCH_KEY)) if checkpoint else -1
    except (tf.errors.OpError, ValueError):  # cut short by a kill or a full disk
        return 0
    return saved_epoch + 1  # the index of the last epoch backed up (-1: none yet)


def flat_config(cfg: DictConfig) -> dict[str, object]:
    flat: dict[str, object] = {}

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix.rstrip(".")] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return flat


def check_same_config(cfg: DictConfig, saved_config: Path, finished: bool = False) -> None:
    """Refuse to resume a backup with a different config (it would train something else), or to
    pass a finished run off as the result of a different config."""
    before, now = _moved(flat_config(OmegaConf.load(saved_config)), flat_config(cfg)), flat_config(cfg)
    changed = sorted(
        key for key in before.keys() | now.keys()
        if key.split(".")[0] not in MAY_CHANGE_ON_RESUME and before.get(key) != now.get(key)
    )
    if not changed:
        return
    shown = ", ".join(f"{key}: {before.get(key)!r} -> {now.get(key)!r}" for key in changed[:5])
    more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
    if finished:
        raise ConfigError(
            f"{cfg.output_dir} holds a finished run trained with a different config ({shown}{more}): "
            "its results are not this config's. Run it in a new folder (leave hydra.run.dir out, "
            "or name another one)."
        )
    raise ConfigError(
        f"{cfg.output_dir} holds an unfinished run started with a different config ({shown}{more}). "
        f"Resume it with its own overrides ({resume_command(Path(cfg.output_dir))}), "
        "or start a new run in another folder."
    )


def _moved(before: dict[str, object], now: dict[str, object]) -> dict[str, object]:
    """The saved config's paths inside its run folder (debug tools' folders, ${output_dir}/...)
    as they read from where the folder is now: a run folder copied or moved is the same run."""
    old, new = str(before.get("output_dir")), str(now.get("output_dir"))
    return {key: new + value[len(old):] if isinstance(value, str) and value.startswith(old + "/")
            else value for key, value in before.items()}


def resume_command(run_dir: Path) -> str:
    return f"python -m runner {shlex.quote(RESUME_PREFIX + str(run_dir))}"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write to a temporary file then rename: readers see the old file or the whole new one (and a
    write that fails, on a full disk say, leaves no temporary file)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError:
        with suppress(OSError):
            tmp.unlink()
        raise


def out_of_space(error: BaseException) -> bool:
    """A full disk, as Python, h5py or TensorFlow's checkpoint writer report it."""
    return getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error)


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def read_metrics(run_dir: Path) -> dict[str, Any] | None:
    return _read_json(run_dir / METRICS_FILE)


def read_env(run_dir: Path) -> dict[str, Any] | None:
    return _read_json(run_dir / ENV_FILE)


def write_status(run_dir: Path, status: str, **details: Any) -> None:
    """Record the run's state (RUNNING, FINISHED, FAILED or INTERRUPTED) and why, in status.json."""
    write_json_atomic(run_dir / STATUS_FILE, {"status": status, **details})


def read_status(run_dir: Path) -> dict[str, Any] | None:
    return _read_json(run_dir / STATUS_FILE)


def current_status(run_dir: Path) -> dict[str, Any] | None:
    """status.json as readers should take it. A run killed outright (SIGKILL, out of memory, power
    or node lost) never recorded its end and still says `running`: if nobody holds the folder's
    lock (runner/record/lock.py), its process is gone, so it is shown as interrupted, with the resume
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


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """history.csv's complete rows as numbers (a row cut short by a kill is left out)."""
    path = run_dir / HISTORY_FILE
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = [row for row in csv.DictReader(f) if None not in row.values()]
    return [{key: _number(value) for key, value in row.items()} for row in rows]


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:  # CSVLogger writes "NA" for a metric an epoch did not log
        return float("nan")
