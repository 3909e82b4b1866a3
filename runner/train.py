"""train(cfg): compose -> device -> data -> model -> fit -> report, for one run directory.

Tests call `train` directly with a composed config; `python -m runner` is a thin Hydra shell
around it. TensorFlow is imported inside `_fit_and_report` only, so config errors stay fast.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from omegaconf import DictConfig, OmegaConf

from runner.config.checks import check_config
from runner.device.workers import current_worker, worker_run_dir
from runner.errors import ConfigError, RunFailed
from runner.record.lock import hold_run_folder
from runner.record.report import (
    FAILED,
    FINISHED,
    HISTORY_FILE,
    INTERRUPTED,
    METRICS_FILE,
    RUNNING,
    ascend_figures,
    attach_log_file,
    detach_log_file,
    environment,
    read_history,
    read_metrics,
    read_status,
    write_json_atomic,
    write_status,
)
from runner.record.resume import StopSignals, backup_epoch, check_same_config, resume_command
from runner.record.tracking import NoTracker, start_tracking, write_hparams

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
# Keras 2's HDF5 weights, which both stacks read. (Not "*.weights.h5": for such names tf-keras
# writes Keras 3's weights format, which TF 2.6's Keras cannot read.)
BEST_WEIGHTS = "best_weights.h5"
LAST_WEIGHTS = "last_weights.h5"
LABELS_FILE = "labels.txt"
BACKUP_DIR = "backup"  # under checkpoints/: Keras' BackupAndRestore, deleted once metrics.json is written
RESUME_CONFIG = "resume_config.yaml"  # under checkpoints/: the config the backup was trained with


@dataclass
class RunClock:
    """Wall time of a run across its attempts: earlier attempts' seconds come from status.json."""

    earlier_seconds: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    @property
    def seconds(self) -> float:
        return round(self.earlier_seconds + time.perf_counter() - self.started, 2)


def train(cfg: DictConfig, hydra_cfg: DictConfig | None = None) -> dict[str, Any]:
    """Train and evaluate one run in cfg.output_dir; return (and write) its final metrics.

    The run folder is locked first: another process holding it raises RunFolderBusy before anything
    is written. A run directory that already holds metrics.json is finished: its metrics are
    returned as they are. One with a backup from an interrupted run resumes from its last completed
    epoch. status.json says how the last attempt ended (finished, failed + reason, interrupted).
    hydra_cfg: Hydra's own config, under `python -m runner`, for the .hydra/ files.
    """
    run_dir = worker_run_dir(Path(cfg.output_dir), cfg.device)  # rank_<id>/ beside the chief's
    with hold_run_folder(run_dir):
        finished = read_metrics(run_dir)
        if finished is not None:
            log.info("%s already holds a finished run (%s); nothing to do", run_dir, METRICS_FILE)
            _settle_finished(run_dir, finished)  # killed right after writing metrics.json?
            return finished
        is_chief = run_dir == Path(cfg.output_dir)
        _save_config(cfg, run_dir, hydra_cfg if is_chief else None)
        return _train_in_locked_folder(cfg, run_dir, hydra_cfg.overrides.task if hydra_cfg else ())


def _train_in_locked_folder(cfg: DictConfig, run_dir: Path,
                            task_overrides: Sequence[str]) -> dict[str, Any]:
    handler = attach_log_file(run_dir)
    previous = read_status(run_dir) or {}
    if previous.get("status") == RUNNING:
        log.warning("the previous attempt (pid %s on %s) ended without recording how: it was "
                    "killed; taking its folder over", previous.get("pid"), previous.get("host"))
    clock = RunClock(previous.get("wall_seconds", 0.0))
    tracker = NoTracker()
    try:
        check_config(cfg, task_overrides)
        tracker = start_tracking(cfg, run_dir)  # an unreachable store stops the run here
        write_status(run_dir, RUNNING, pid=os.getpid(), host=socket.gethostname(),
                     wall_seconds=clock.seconds)
        metrics = _fit_and_report(cfg, run_dir, clock, tracker)
        tracker.finish(run_dir)
        return metrics
    except KeyboardInterrupt:
        _record_interruption(run_dir, clock)
        tracker.end("KILLED")
        raise
    except Exception as error:
        _record_failure(run_dir, error, clock)
        tracker.end("FAILED", (read_status(run_dir) or {}).get("reason", ""))
        raise
    finally:
        _reset_keras()
        detach_log_file(handler)


def _record_interruption(run_dir: Path, clock: RunClock) -> None:
    epochs_done = backup_epoch(run_dir / CHECKPOINTS / BACKUP_DIR)
    write_status(
        run_dir, INTERRUPTED, epochs_completed=epochs_done, resume=resume_command(run_dir),
        wall_seconds=clock.seconds,
    )
    log.warning(
        "interrupted after %d completed epoch(s); resume with: %s", epochs_done,
        resume_command(run_dir),
    )


def _record_failure(run_dir: Path, error: Exception, clock: RunClock) -> None:
    """status.json gets the reason (one line); the log gets the message, or for an error that is
    not the user's input the traceback too."""
    expected = isinstance(error, (ConfigError, RunFailed))
    log.error("run failed: %s", error, exc_info=not expected)
    reason = str(error).strip() if expected else f"{type(error).__name__}: {error}"
    write_status(run_dir, FAILED, reason=one_line(reason) or type(error).__name__,
                 error=type(error).__name__, wall_seconds=clock.seconds)


def one_line(message: str, limit: int = 1000) -> str:
    """A message as one line of at most about `limit` characters. All of it, not its first line:
    TensorFlow's errors start "Graph execution error:" and name the cause (a missing file, the
    op that ran out of memory) at the end, which a long message keeps."""
    text = " ".join(message.split())
    return text if len(text) <= limit else f"{text[:limit // 3]} ... {text[-(limit * 2 // 3):]}"


def _reset_keras() -> None:
    """Another run may follow in this process (a sweep's basic launcher, tests): free the model
    and graph and leave float32 behind, whatever this run's precision policy was."""
    if "runner.keras2" in sys.modules:
        from runner.keras2 import reset_session

        reset_session()


def _save_config(cfg: DictConfig, run_dir: Path, hydra_cfg: DictConfig | None) -> None:
    """.hydra/: under `python -m runner`, the three files Hydra writes itself elsewhere
    (conf/config.yaml sets hydra.output_subdir to null so that they are written here, under the
    folder's lock); a run started by a test gets config.yaml, resolved."""
    folder = run_dir / ".hydra"
    folder.mkdir(exist_ok=True)
    if hydra_cfg is None:
        if not (folder / "config.yaml").is_file():
            OmegaConf.save(cfg, folder / "config.yaml", resolve=True)
        return
    files = {"config.yaml": cfg, "hydra.yaml": OmegaConf.create({"hydra": hydra_cfg}),
             "overrides.yaml": hydra_cfg.overrides.task}
    for name, content in files.items():
        (folder / name).write_text(OmegaConf.to_yaml(content))  # as Hydra writes them


def static_shape(cfg: DictConfig) -> bool:
    """static_shape, or the device's default when null: the NPU needs static shapes."""
    return cfg.static_shape if cfg.static_shape is not None else cfg.device.type == "npu"


def progress_verbosity(stream: TextIO, environ: dict[str, str]) -> int:
    """Keras' progress bar (1) on a terminal; nothing (0) in files and CI logs, where StepLogger
    already writes plain per-step and per-epoch lines and a bar would be a wall of redraws."""
    return 1 if stream.isatty() and not environ.get("CI") else 0


def _prepare_resume(cfg: DictConfig, run_dir: Path) -> None:
    """A backup resumes only under the config it was trained with; a fresh start records it."""
    saved = run_dir / CHECKPOINTS / RESUME_CONFIG
    if backup_epoch(run_dir / CHECKPOINTS / BACKUP_DIR) and saved.is_file():
        check_same_config(cfg, saved)
    else:
        saved.parent.mkdir(exist_ok=True)
        OmegaConf.save(cfg, saved, resolve=True)


def _best_val_accuracy_so_far(run_dir: Path) -> float | None:
    """Best val_accuracy of the epochs an interrupted run already finished (for resume)."""
    values = [row["val_accuracy"] for row in read_history(run_dir) if "val_accuracy" in row]
    return max(values, default=None)


def _early_stopping(cfg: DictConfig, run_dir: Path):
    """Early stopping on val_accuracy that restores the best epoch's weights; None when off."""
    if not cfg.model.early_stopping_patience:
        return None
    from runner.fit.callbacks import ResumableEarlyStopping

    return ResumableEarlyStopping(
        run_dir, run_dir / CHECKPOINTS / BEST_WEIGHTS, monitor="val_accuracy", mode="max",
        patience=cfg.model.early_stopping_patience, restore_best_weights=True,
    )


def _epochs_to_run(cfg: DictConfig, run_dir: Path, model) -> int:
    """cfg.epochs, except for a run whose early stopping fired before it was killed (during the
    final evaluation): the epochs its backup holds. Keras 2's fit() looks at stop_training only
    after a step, so it would train a step of one more epoch, validate and record it. With no
    epoch left, fit() still restores the backup and the best epoch's weights."""
    epochs_done = backup_epoch(run_dir / CHECKPOINTS / BACKUP_DIR)
    early_stopping = _early_stopping(cfg, run_dir)
    if not epochs_done or early_stopping is None:
        return cfg.epochs
    early_stopping.set_model(model)
    stopped = early_stopping.replay(read_history(run_dir)[:epochs_done])
    return epochs_done if stopped else cfg.epochs


def _callbacks(cfg: DictConfig, run_dir: Path, step_logger, signals: StopSignals,
               tracker: NoTracker) -> list:
    from runner.fit.callbacks import (
        AtomicModelCheckpoint,
        HistoryResume,
        StopOnSignal,
        TrackEpochs,
    )
    from runner.keras2 import backup_and_restore, best_checkpoint, keras

    ckpt_dir = run_dir / CHECKPOINTS
    backup = backup_and_restore(str(ckpt_dir / BACKUP_DIR))
    callbacks = [
        HistoryResume(ckpt_dir / BACKUP_DIR, run_dir / HISTORY_FILE),  # before CSVLogger opens it
        keras.callbacks.TerminateOnNaN(),
        best_checkpoint(
            str(ckpt_dir / BEST_WEIGHTS), monitor="val_accuracy", mode="max",
            best_so_far=_best_val_accuracy_so_far(run_dir), checkpoint_class=AtomicModelCheckpoint,
        ),
        AtomicModelCheckpoint(str(ckpt_dir / LAST_WEIGHTS), save_weights_only=True),
        keras.callbacks.CSVLogger(str(run_dir / HISTORY_FILE), append=True),
        *([keras.callbacks.TensorBoard(str(run_dir / "tensorboard"))] if cfg.logger.tensorboard else []),
        step_logger,
        TrackEpochs(tracker),
    ]
    if not current_worker(cfg.device).is_chief and not cfg.device.multi_worker:
        # Only rank 0 writes checkpoints; every rank keeps its own backup so that each can resume.
        # (Under TensorFlow's multi-worker strategy every worker must save, since saving runs
        # collectives; Keras writes a non-chief's copy to a temporary folder and deletes it.)
        callbacks = [c for c in callbacks if not isinstance(c, keras.callbacks.ModelCheckpoint)]
    early_stopping = _early_stopping(cfg, run_dir)
    if early_stopping is not None:
        callbacks.append(early_stopping)
    # The backup last: an epoch is done once it is backed up, after its history row and checkpoints
    # were written. A kill before that runs the epoch again (history.csv is trimmed to the backup),
    # so no epoch is lost or listed twice. Its on_train_begin, restoring the backup, still runs
    # before the first step. StopOnSignal after it: stops once the epoch is recorded.
    return [*callbacks, backup, StopOnSignal(signals)]


def compiled_model(cfg: DictConfig, num_classes: int):
    """The network, compiled with the run's optimiser, loss and speed switches (under the
    current strategy scope and dtype policy)."""
    from runner.device.npu import npu_optimizer
    from runner.fit.network import build_network
    from runner.fit.optim import build_loss, build_optimizer
    from runner.keras2 import compile_options, create_optimizer_state

    model = build_network(cfg.model, num_classes, cfg.dataset.image_size)
    model.compile(
        optimizer=npu_optimizer(cfg, build_optimizer(cfg.model, cfg.batch_size)),
        loss=build_loss(cfg.model),
        metrics=["accuracy"],
        steps_per_execution=cfg.steps_per_execution,
        **compile_options(cfg.jit_compile),
    )
    create_optimizer_state(model)
    return model


def _log_speed_switches(model, train_data) -> None:
    """The speed switches as the model, TensorFlow and the pipeline hold them, not as configured:
    train.log shows what ran."""
    from data.pipeline import caches_in_memory
    from runner.device.strategy import thread_pools
    from runner.keras2 import compiled_switches

    switches = {**compiled_switches(model), **{f"threads.{k}": v for k, v in thread_pools().items()},
                "pipeline.cache": caches_in_memory(train_data)}
    log.info("speed switches in effect: %s", " ".join(f"{k}={v}" for k, v in switches.items()))


def _with_hyperrule(cfg: DictConfig, source, run_dir: Path) -> DictConfig:
    """Fill in BiT-HyperRule's choices and record them where evaluate/export read the config."""
    from runner.fit.datasets import count_examples, first_image_shape
    from runner.fit.hyperrule import apply_hyperrule, bit_hyperrule

    train_examples = count_examples(source.train)
    rule = bit_hyperrule(train_examples, *first_image_shape(source.train))
    effective, changes = apply_hyperrule(cfg, rule, train_examples)
    log.info("BiT-HyperRule for %d training images: %s", train_examples, changes)
    config_file = run_dir / ".hydra" / "config.yaml"
    config_file.replace(config_file.with_name("config.composed.yaml"))
    OmegaConf.save(effective, config_file, resolve=True)
    return effective


def _drop_backup(run_dir: Path) -> None:
    """The backup outlives fit() until metrics.json is written: a finished run needs it no more."""
    shutil.rmtree(run_dir / CHECKPOINTS / BACKUP_DIR, ignore_errors=True)


def _settle_finished(run_dir: Path, metrics: dict[str, Any]) -> None:
    """What follows metrics.json (the mark of a finished run), done again if a kill cut it short:
    status.json says finished; the backup and any weights file cut short by a kill are gone."""
    if (read_status(run_dir) or {}).get("status") != FINISHED:
        write_status(run_dir, FINISHED, wall_seconds=metrics["wall_seconds"])
    _drop_backup(run_dir)
    for partial in (run_dir / CHECKPOINTS).glob("*.tmp.h5"):
        partial.unlink()


def _check_loss_is_finite(history: list[dict[str, float]], cfg: DictConfig, run_dir: Path) -> None:
    """TerminateOnNaN stopped fit() early and quietly: make that a failed run, not a result. Its
    backup holds NaN weights: dropped, so that the folder starts afresh (with another config)."""
    if history and not math.isfinite(history[-1].get("loss", 0.0)):
        _drop_backup(run_dir)
        raise RunFailed(
            f"The training loss became {history[-1]['loss']} in epoch {int(history[-1]['epoch']) + 1}"
            f" and training stopped (TerminateOnNaN): it diverged. Lower model.learning_rate "
            f"(now {cfg.model.learning_rate}), change batch_size (now {cfg.batch_size}) or "
            "precision, or check the data for NaN/inf values."
        )


def _modelzoo_console(cfg: DictConfig):
    """The recipe's ConsoleLines for a `modelzoo=` run (runner/ascend/modelzoo.py), else None."""
    if cfg.modelzoo is None:
        return None
    from runner.ascend.modelzoo import CONSOLES

    return CONSOLES[str(cfg.modelzoo)](cfg.batch_size, cfg.log_steps, cfg.epochs)


def _figures(cfg: DictConfig, metrics: dict[str, Any], step_logger, console, rank_size: int,
             run_dir: Path) -> dict[str, Any]:
    """metrics.json's Ascend figures; a `modelzoo=` run's are its recipe's, and it writes the
    loss file that recipe's scripts extract."""
    from runner.ascend.modelzoo import NETWORKS, loss_file_name

    case = str(cfg.case_kind)
    network = NETWORKS[str(cfg.modelzoo)] if console is not None else None
    figures = ascend_figures(metrics, step_logger.seconds_per_step, rank_size, case, network)
    if console is not None:
        figures.update(console.figures(case))
        losses = "".join(f"{loss}\n" for loss in console.losses(case))
        (run_dir / loss_file_name(figures["CaseName"])).write_text(losses)
    return figures


def _fit_and_report(cfg: DictConfig, run_dir: Path, clock: RunClock,
                    tracker: NoTracker) -> dict[str, Any]:
    from runner.device.debug import tf_debug_tools
    from runner.device.precision import apply_precision
    from runner.device.strategy import build_strategy, configure_threads, describe_devices
    from runner.keras2 import keras_api, set_op_determinism, set_random_seed

    configure_threads(cfg.threads)
    set_random_seed(cfg.seed)
    set_op_determinism(cfg.deterministic)
    _prepare_resume(cfg, run_dir)
    strategy = build_strategy(cfg)  # on the NPU: precision and debug options, then open
    policy = apply_precision(cfg.precision.mode, cfg.device.type)
    device = describe_devices(strategy, cfg.device.type)
    write_json_atomic(run_dir / "env.json", environment(device, keras_api()))
    log.info(
        "run %s: model=%s dataset=%s device=%s (%d replica(s)) policy=%s",
        run_dir, cfg.model.name, cfg.dataset.name, cfg.device.type, device["replicas"], policy,
    )
    # GPU/CPU debug tools are process-wide: on for this run's training only.
    with tf_debug_tools(cfg.debug, cfg.device.type) as debug_callbacks:
        return _train_and_report(cfg, run_dir, strategy, policy, clock, debug_callbacks, tracker)


def _train_and_report(cfg: DictConfig, run_dir: Path, strategy, policy: str, clock: RunClock,
                      debug_callbacks: list, tracker: NoTracker) -> dict[str, Any]:
    from runner.device.npu import multi_card_callbacks, training_shard
    from runner.fit.callbacks import ModelZooLines, StepLogger
    from runner.fit.datasets import build_splits, load_source

    source = load_source(cfg.dataset, cfg.seed)
    if cfg.model.schedule == "hyperrule":
        cfg = _with_hyperrule(cfg, source, run_dir)
    splits = build_splits(
        cfg, source, drop_remainder=static_shape(cfg), shard=training_shard(cfg.device)
    )
    (run_dir / CHECKPOINTS).mkdir(exist_ok=True)
    (run_dir / CHECKPOINTS / LABELS_FILE).write_text("\n".join(splits.class_names) + "\n")
    log.info(
        "data: %d training / %d validation images, %d classes",
        splits.train_examples, splits.val_examples, len(splits.class_names),
    )

    with strategy.scope():
        model = compiled_model(cfg, len(splits.class_names))
    log.info("model %s: %s parameters", model.name, f"{model.count_params():,}")

    step_logger = StepLogger(cfg.log_steps, cfg.batch_size, cfg.epochs)
    console = _modelzoo_console(cfg)
    train_data = splits.train.repeat() if cfg.steps_per_epoch else splits.train
    _log_speed_switches(model, train_data)
    with StopSignals() as signals:
        model.fit(
            train_data,
            validation_data=splits.val,
            epochs=_epochs_to_run(cfg, run_dir, model),
            steps_per_epoch=cfg.steps_per_epoch,
            callbacks=[*_callbacks(cfg, run_dir, step_logger, signals, tracker),
                       *multi_card_callbacks(cfg.device), *debug_callbacks,
                       *([ModelZooLines(console)] if console else [])],
            shuffle=False,  # the pipeline shuffles
            # A modelzoo run prints Keras 2.6's verbose=2 epoch lines itself, on both stacks.
            verbose=0 if console else progress_verbosity(sys.stdout, os.environ),
        )
    # history.csv, not fit()'s History: it holds the epochs of earlier attempts too.
    history = read_history(run_dir)
    _check_loss_is_finite(history, cfg, run_dir)
    final = model.evaluate(splits.val, return_dict=True, verbose=0)
    last_epoch = history[-1] if history else {}
    metrics = {
        "val_accuracy": float(final["accuracy"]),
        "val_loss": float(final["loss"]),
        "train_accuracy": float(last_epoch.get("accuracy", float("nan"))),
        "train_loss": float(last_epoch.get("loss", float("nan"))),
        "epochs_completed": len(history),
        "optimizer_steps": int(model.optimizer.iterations.numpy()),
        "images_per_sec": round(step_logger.images_per_sec, 2),
        "wall_seconds": clock.seconds,
        "batch_size": cfg.batch_size,
        "model": cfg.model.name,
        "dataset": cfg.dataset.name,
        "device": str(cfg.device.type),
        "precision_policy": policy,
        "num_classes": len(splits.class_names),
    }
    rank_size = max(strategy.num_replicas_in_sync, current_worker(cfg.device).size)
    figures = _figures(cfg, metrics, step_logger, console, rank_size, run_dir)
    metrics.update(figures)
    if cfg.logger.tensorboard and cfg.logger.tensorboard.hparams:
        write_hparams(cfg, run_dir, metrics)
    write_json_atomic(run_dir / METRICS_FILE, metrics)
    _settle_finished(run_dir, metrics)
    log.info(
        "finished: val_accuracy %.4f val_loss %.4f epochs %d wall %.1fs imgs/s: %.2f",
        metrics["val_accuracy"], metrics["val_loss"], metrics["epochs_completed"],
        metrics["wall_seconds"], metrics["images_per_sec"],
    )
    log.info("%s", " ".join(f"{name}: {value}" for name, value in figures.items()))  # Ascend's names
    return metrics
