"""train(cfg): one run in its folder, told as the keras-io scripts it came from tell it: the
device, the data, the model, fit(), the final evaluation; then the record (metrics.json with the
Ascend figures, the trackers).

Tests call `train` directly with a composed config; `python -m runner` is a thin Hydra shell
around it. The run folder (runner/record/run_folder.py) keeps the files, the lock and the status
however a run ends; this module tells the story, and one object, `Run`, carries what each stage
hands the next. TensorFlow is imported from `_run` on only, so config errors stay fast.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from omegaconf import DictConfig

from runner.device.workers import current_worker, worker_run_dir
from runner.errors import ConfigError, TrainingDiverged
from runner.preflight import check_config
from runner.record.environment import environment
from runner.record.placement import placement
from runner.record.resume import StopSignals
from runner.record.run_folder import (
    METRICS_FILE,
    RunFolder,
    attach_log_file,
    detach_log_file,
    read_history,
    read_metrics,
)
from runner.record.tracking import NoTracker, start_tracking, write_hparams

if TYPE_CHECKING:
    import tensorflow as tf

    from runner.ascend.figures import AscendFigures
    from runner.fit.callbacks import ResumableEarlyStopping, StepLogger, StopOnLossExplosion
    from runner.fit.datasets import Splits

log = logging.getLogger(__name__)


@dataclass
class Run:
    """What the stages hand on, filled in top to bottom by the stage named beside each field."""

    cfg: DictConfig  # from _load_data on, the effective config (BiT-HyperRule's, when chosen)
    folder: RunFolder
    tracker: NoTracker
    sweep_dir: str | None = None  # a multirun job's sweep folder (train)
    strategy: tf.distribute.Strategy | None = None  # _set_up_device
    policy: str = ""  # _set_up_device: the Keras dtype policy
    splits: Splits | None = None  # _load_data
    model: Any = None  # _build_model: the compiled keras.Model
    ascend: AscendFigures | None = None  # _fit: metrics.json's Ascend figures, a modelzoo= console
    step_logger: StepLogger | None = None  # _fit: the throughput
    stopping: ResumableEarlyStopping | None = None  # _fit: early stopping, None when off
    explosion: StopOnLossExplosion | None = None  # _fit: what a loss explosion stopped on


def train(cfg: DictConfig, hydra_cfg: DictConfig | None = None) -> dict[str, Any]:
    """Train and evaluate one run in cfg.output_dir; return (and write) its final metrics.

    The run folder is locked first: another process holding it raises RunFolderBusy before anything
    is written. A run directory that already holds metrics.json is finished: its metrics are
    returned as they are. One with a backup from an interrupted run resumes from its last completed
    epoch. status.json says how the last attempt ended (finished, failed + reason, interrupted).
    hydra_cfg: Hydra's own config, under `python -m runner`, for the .hydra/ files.
    """
    folder = RunFolder(worker_run_dir(Path(cfg.output_dir), cfg.device))  # rank_<id>/ beside the chief's
    with folder.hold():
        finished = read_metrics(folder.path)
        try:
            folder.refuse_other_config(cfg, finished is not None)
        except ConfigError as refused:  # nothing written: the folder stays as the run left it
            log.error("%s", refused)
            raise
        if finished is not None:
            log.info("%s already holds a finished run (%s); nothing to do", folder.path, METRICS_FILE)
            folder.settle_finished(finished)  # killed right after writing metrics.json?
            return finished
        is_chief = folder.path == Path(cfg.output_dir)
        # BiT-HyperRule completes the config from the data: config.yaml waits for it (_load_data).
        folder.save_config(cfg, hydra_cfg if is_chief else None, final=cfg.model.schedule != "hyperrule")
        return _attempt(cfg, folder, hydra_cfg.overrides.task if hydra_cfg else (), _sweep_dir(hydra_cfg))


def _sweep_dir(hydra_cfg: DictConfig | None) -> str | None:
    from hydra.types import RunMode

    return str(hydra_cfg.sweep.dir) if hydra_cfg and hydra_cfg.mode == RunMode.MULTIRUN else None


def _attempt(cfg: DictConfig, folder: RunFolder, task_overrides: Sequence[str],
             sweep_dir: str | None) -> dict[str, Any]:
    """One attempt in the locked folder: status.json and the tracker record how it ends."""
    handler = attach_log_file(folder.path)
    folder.start_attempt()
    tracker = NoTracker()
    try:
        check_config(cfg, task_overrides)  # compose: what Hydra's schema cannot check
        tracker = start_tracking(cfg, folder.path)  # an unreachable store stops the run here
        folder.record_running()
        metrics = _run(Run(cfg, folder, tracker, sweep_dir))
        tracker.finish(folder.path)
        return metrics
    except KeyboardInterrupt:
        folder.record_interruption()
        tracker.end("KILLED")
        raise
    except Exception as error:
        tracker.end("FAILED", folder.record_failure(error))
        raise
    finally:
        _reset_keras()
        detach_log_file(handler)


def _run(run: Run) -> dict[str, Any]:
    """The stages, in order."""
    from runner.device.debug import tf_debug_tools

    _set_up_device(run)
    run.folder.prepare_resume(run.cfg)
    # GPU/CPU debug tools are process-wide: on for this run only.
    with tf_debug_tools(run.cfg.debug, run.cfg.device.type) as debug_callbacks:
        _load_data(run)
        _build_model(run)
        _fit(run, debug_callbacks)
        metrics = _evaluate(run)
        return _record(run, metrics)


def _set_up_device(run: Run) -> None:
    """The strategy with threads, seed and determinism (on the NPU: its options, then open, then
    the seed) and the precision policy; env.json records where the run runs."""
    from runner.device.precision import apply_precision
    from runner.device.strategy import describe_devices, set_up_device
    from runner.keras2 import keras_api

    cfg = run.cfg
    run.strategy = set_up_device(cfg, run.sweep_dir)
    run.policy = apply_precision(cfg.precision.mode, cfg.device.type)
    device = describe_devices(run.strategy, cfg.device.type)
    run.folder.write_env(environment(device, keras_api(), placement(cfg.device)))
    log.info(
        "run %s: model=%s dataset=%s device=%s (%d replica(s)) policy=%s",
        run.folder.path, cfg.model.name, cfg.dataset.name, cfg.device.type, device["replicas"],
        run.policy,
    )


def _load_data(run: Run) -> None:
    """The splits, and the config they are built with: with model.schedule=hyperrule,
    BiT-HyperRule's effective config, decided from the data and written as the run's config."""
    from runner.device.npu import training_shard
    from runner.device.strategy import static_shape
    from runner.fit.datasets import build_splits, load_source
    from runner.fit.hyperrule import with_hyperrule

    cfg = run.cfg
    source = load_source(cfg.dataset, cfg.seed)
    if cfg.model.schedule == "hyperrule":
        run.cfg = cfg = with_hyperrule(cfg, source.train)
        run.folder.save_effective_config(cfg)
    drop_remainder = static_shape(cfg.static_shape, cfg.device.type)
    run.splits = splits = build_splits(cfg, source, drop_remainder, shard=training_shard(cfg.device))
    run.folder.write_labels(splits.class_names)
    log.info(
        "data: %d training / %d validation images, %d classes",
        splits.train_examples, splits.val_examples, len(splits.class_names),
    )


def _build_model(run: Run) -> None:
    """The network, compiled for the run, under the device's strategy."""
    from runner.fit.network import compiled_model

    with run.strategy.scope():
        run.model = compiled_model(run.cfg, len(run.splits.class_names))
    log.info("model %s: %s parameters", run.model.name, f"{run.model.count_params():,}")


def _fit(run: Run, debug_callbacks: list) -> None:
    """model.fit() over the run's epochs, resumable (runner/fit/run_callbacks.py), measuring the
    throughput; a `modelzoo=` run prints its recipe's console lines (runner/ascend/figures.py)."""
    from runner.ascend.figures import AscendFigures
    from runner.device.npu import multi_card_callbacks
    from runner.fit.callbacks import StepLogger, StopOnLossExplosion
    from runner.fit.datasets import epoch_input
    from runner.fit.run_callbacks import early_stopping, epochs_to_run, run_callbacks

    cfg, folder, model = run.cfg, run.folder, run.model
    run.step_logger = StepLogger(cfg.log_steps, cfg.batch_size, cfg.epochs)
    run.ascend = AscendFigures.for_run(cfg)
    train_data, steps_per_epoch = epoch_input(run.splits.train, cfg.steps_per_epoch)
    _log_speed_switches(model, train_data)
    run.stopping = early_stopping(cfg.model.early_stopping_patience, folder)
    run.explosion = StopOnLossExplosion(cfg.divergence_factor)
    verbose = 0 if run.ascend.prints_epochs else progress_verbosity(sys.stdout, os.environ)
    with StopSignals() as signals:
        model.fit(
            train_data,
            validation_data=run.splits.val,
            epochs=epochs_to_run(cfg.epochs, folder, model, run.stopping),
            steps_per_epoch=steps_per_epoch,
            callbacks=[*progress_bar(verbose),
                       *run_callbacks(cfg.logger, cfg.device, folder, run.step_logger, signals,
                                      run.tracker, run.stopping), run.explosion,
                       *multi_card_callbacks(cfg.device), *debug_callbacks, *run.ascend.callbacks()],
            shuffle=False,  # the pipeline shuffles
            verbose=verbose,
        )


def _evaluate(run: Run) -> dict[str, Any]:
    """metrics.json's figures: the final weights' validation figures, and the training as
    history.csv holds it (not fit()'s History: history.csv holds the epochs of earlier attempts too)."""
    from runner.fit.validation import final_validation, training_divergence, warn_if_not_a_number

    cfg, model = run.cfg, run.model
    history = read_history(run.folder.path)
    _fail_if_diverged(training_divergence(history) or run.explosion.what, run)
    final = final_validation(model, run.splits.val, history, run.stopping is not None)
    warn_if_not_a_number(final)
    last_epoch = history[-1] if history else {}
    return {
        "val_accuracy": float(final["accuracy"]),
        "val_loss": float(final["loss"]),
        "train_accuracy": float(last_epoch.get("accuracy", float("nan"))),
        "train_loss": float(last_epoch.get("loss", float("nan"))),
        "epochs_completed": len(history),
        "optimizer_steps": int(model.optimizer.iterations.numpy()),
        "images_per_sec": round(run.step_logger.images_per_sec, 2),
        "wall_seconds": run.folder.clock.seconds,
        "batch_size": cfg.batch_size,
        "model": cfg.model.name,
        "dataset": cfg.dataset.name,
        "device": str(cfg.device.type),
        "precision_policy": run.policy,
        "num_classes": len(run.splits.class_names),
    }


def _record(run: Run, metrics: dict[str, Any]) -> dict[str, Any]:
    """metrics.json with the Ascend figures, TensorBoard's HParams, then the finishing sequence."""
    cfg, folder = run.cfg, run.folder
    rank_size = max(run.strategy.num_replicas_in_sync, current_worker(cfg.device).size)
    figures = run.ascend.figures(metrics, run.step_logger.seconds_per_step, rank_size, folder.path)
    metrics.update(figures)
    if cfg.logger.tensorboard and cfg.logger.tensorboard.hparams:
        write_hparams(cfg, folder.path, metrics)
    folder.finish(metrics)
    log.info(
        "finished: val_accuracy %.4f val_loss %.4f epochs %d wall %.1fs imgs/s: %.2f",
        metrics["val_accuracy"], metrics["val_loss"], metrics["epochs_completed"],
        metrics["wall_seconds"], metrics["images_per_sec"],
    )
    log.info("%s", " ".join(f"{name}: {value}" for name, value in figures.items()))  # Ascend's names
    for line in where_to_look(folder.path, cfg.logger):
        log.info("%s", line)
    return metrics


def where_to_look(run_dir: Path, logger_cfg: DictConfig) -> list[str]:
    """The run's last lines: its folder and the commands that show it (the first runner line,
    which names the folder too, is far up by then)."""
    run_dir = run_dir.resolve()
    lines = [f"run folder: {run_dir} (metrics.json, history.csv, train.log, checkpoints/)",
             f"  evaluate it: python -m runner.evaluate run={run_dir}"]
    if logger_cfg.tensorboard:
        lines.append(f"  TensorBoard: tensorboard --logdir {run_dir}")
    if logger_cfg.mlflow:
        uri = str(logger_cfg.mlflow.tracking_uri)
        lines.append(f"  MLflow: mlflow ui --backend-store-uri {uri}" if uri.startswith(("sqlite:", "file:"))
                     else f"  MLflow: {uri}")
    return lines


def progress_bar(verbose: int) -> list:
    """Keras' bar, first among the callbacks: Keras appends its own last, so the bar would end its
    epoch after the epoch line had been written onto the bar's line."""
    from runner.keras2 import keras

    return [keras.callbacks.ProgbarLogger(count_mode="steps")] if verbose else []


def progress_verbosity(stream: TextIO, environ: dict[str, str]) -> int:
    """Keras' progress bar (1) on a terminal; nothing (0) in files and CI logs, where StepLogger
    already writes plain per-step and per-epoch lines and a bar would be a wall of redraws."""
    return 1 if stream.isatty() and not environ.get("CI") else 0


def _log_speed_switches(model, train_data) -> None:
    """The speed switches as the model, TensorFlow and the pipeline hold them, not as configured:
    train.log shows what ran."""
    from data.pipeline import caches_in_memory
    from runner.device.threads import thread_pools
    from runner.keras2 import compiled_switches

    switches = {**compiled_switches(model), **{f"threads.{k}": v for k, v in thread_pools().items()},
                "pipeline.cache": caches_in_memory(train_data)}
    log.info("speed switches in effect: %s", " ".join(f"{k}={v}" for k, v in switches.items()))


def _fail_if_diverged(what: str | None, run: Run) -> None:
    """A training loss that is not a number is a failed run, not a result (a sweeper cannot rank
    NaN). The backup holds the diverged weights: dropped, so that the folder starts afresh (with
    another config)."""
    if what:
        run.folder.drop_backup()
        cfg = run.cfg
        raise TrainingDiverged(
            f"{what}: training diverged. Lower model.learning_rate (now {cfg.model.learning_rate}), "
            f"change batch_size (now {cfg.batch_size}) or precision, or check the data for NaN/inf "
            "values."
        )


def _reset_keras() -> None:
    """Another run may follow in this process (a sweep's basic launcher, tests): free the model
    and graph and leave float32 behind, whatever this run's precision policy was."""
    if "runner.keras2" in sys.modules:
        from runner.keras2 import reset_session

        reset_session()
