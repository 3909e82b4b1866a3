"""train(cfg): compose -> device -> data -> model -> fit -> evaluate -> record, for one run folder.

Tests call `train` directly with a composed config; `python -m runner` is a thin Hydra shell
around it. The run folder (runner/record/run_folder.py) keeps the files, the lock and the status
however a run ends; this module tells the story. TensorFlow is imported from `_run` on only, so
config errors stay fast.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from omegaconf import DictConfig

from runner.config.checks import check_config
from runner.device.workers import current_worker, worker_run_dir
from runner.errors import RunFailed
from runner.record.report import ascend_figures, attach_log_file, detach_log_file, environment
from runner.record.resume import StopSignals
from runner.record.run_folder import METRICS_FILE, RunFolder, read_history, read_metrics
from runner.record.tracking import NoTracker, start_tracking, write_hparams

log = logging.getLogger(__name__)


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
        if finished is not None:
            log.info("%s already holds a finished run (%s); nothing to do", folder.path, METRICS_FILE)
            folder.settle_finished(finished)  # killed right after writing metrics.json?
            return finished
        is_chief = folder.path == Path(cfg.output_dir)
        # BiT-HyperRule completes the config from the data: config.yaml waits for it (_load_data).
        folder.save_config(cfg, hydra_cfg if is_chief else None, final=cfg.model.schedule != "hyperrule")
        return _attempt(cfg, folder, hydra_cfg.overrides.task if hydra_cfg else ())


def _attempt(cfg: DictConfig, folder: RunFolder, task_overrides: Sequence[str]) -> dict[str, Any]:
    """One attempt in the locked folder: status.json and the tracker record how it ends."""
    handler = attach_log_file(folder.path)
    folder.start_attempt()
    tracker = NoTracker()
    try:
        check_config(cfg, task_overrides)  # compose: what Hydra's schema cannot check
        tracker = start_tracking(cfg, folder.path)  # an unreachable store stops the run here
        folder.record_running()
        metrics = _run(cfg, folder, tracker)
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


def _run(cfg: DictConfig, folder: RunFolder, tracker: NoTracker) -> dict[str, Any]:
    """The stages, in order."""
    from runner.device.debug import tf_debug_tools
    from runner.fit.network import compiled_model

    strategy, policy = _set_up_device(cfg, folder)
    folder.prepare_resume(cfg)
    # GPU/CPU debug tools are process-wide: on for this run only.
    with tf_debug_tools(cfg.debug, cfg.device.type) as debug_callbacks:
        cfg, splits = _load_data(cfg, folder)
        with strategy.scope():
            model = compiled_model(cfg, len(splits.class_names))
        log.info("model %s: %s parameters", model.name, f"{model.count_params():,}")
        step_logger, console, stopping = _fit(cfg, folder, model, splits, tracker, debug_callbacks)
        metrics = _evaluate(cfg, folder, model, splits, step_logger, policy, stopping)
        rank_size = max(strategy.num_replicas_in_sync, current_worker(cfg.device).size)
        return _record(cfg, folder, metrics, step_logger, console, rank_size)


def _set_up_device(cfg: DictConfig, folder: RunFolder):
    """The strategy with threads, seed and determinism (on the NPU: its options, then open, then
    the seed) and the precision policy; env.json records where the run runs. Returns (strategy,
    policy)."""
    from runner.device.precision import apply_precision
    from runner.device.strategy import describe_devices, set_up_device
    from runner.keras2 import keras_api

    strategy = set_up_device(cfg)
    policy = apply_precision(cfg.precision.mode, cfg.device.type)
    device = describe_devices(strategy, cfg.device.type)
    folder.write_env(environment(device, keras_api()))
    log.info(
        "run %s: model=%s dataset=%s device=%s (%d replica(s)) policy=%s",
        folder.path, cfg.model.name, cfg.dataset.name, cfg.device.type, device["replicas"], policy,
    )
    return strategy, policy


def _load_data(cfg: DictConfig, folder: RunFolder):
    """The splits, and the config they are built with: with model.schedule=hyperrule,
    BiT-HyperRule's effective config, decided from the data and written as the run's config.
    Returns (cfg, splits)."""
    from runner.device.npu import training_shard
    from runner.fit.datasets import build_splits, load_source
    from runner.fit.hyperrule import with_hyperrule

    source = load_source(cfg.dataset, cfg.seed)
    if cfg.model.schedule == "hyperrule":
        cfg = with_hyperrule(cfg, source.train)
        folder.save_effective_config(cfg)
    splits = build_splits(cfg, source, drop_remainder=static_shape(cfg), shard=training_shard(cfg.device))
    folder.write_labels(splits.class_names)
    log.info(
        "data: %d training / %d validation images, %d classes",
        splits.train_examples, splits.val_examples, len(splits.class_names),
    )
    return cfg, splits


def static_shape(cfg: DictConfig) -> bool:
    """static_shape, or the device's default when null: the NPU needs static shapes."""
    return cfg.static_shape if cfg.static_shape is not None else cfg.device.type == "npu"


def _fit(cfg: DictConfig, folder: RunFolder, model, splits, tracker: NoTracker, debug_callbacks: list):
    """model.fit() over the run's epochs, resumable (runner/fit/run_callbacks.py). Returns the
    StepLogger (throughput), for a `modelzoo=` run its recipe's ConsoleLines (else None), and the
    early stopping (None when off)."""
    from runner.device.npu import multi_card_callbacks
    from runner.fit.callbacks import ModelZooLines, StepLogger
    from runner.fit.datasets import epoch_input
    from runner.fit.run_callbacks import early_stopping, epochs_to_run, run_callbacks

    step_logger = StepLogger(cfg.log_steps, cfg.batch_size, cfg.epochs)
    console = _modelzoo_console(cfg)
    train_data, steps_per_epoch = epoch_input(splits.train, cfg.steps_per_epoch)
    _log_speed_switches(model, train_data)
    stopping = early_stopping(cfg, folder)
    with StopSignals() as signals:
        model.fit(
            train_data,
            validation_data=splits.val,
            epochs=epochs_to_run(cfg, folder, model, stopping),
            steps_per_epoch=steps_per_epoch,
            callbacks=[*run_callbacks(cfg, folder, step_logger, signals, tracker, stopping),
                       *multi_card_callbacks(cfg.device), *debug_callbacks,
                       *([ModelZooLines(console)] if console else [])],
            shuffle=False,  # the pipeline shuffles
            # A modelzoo run prints Keras 2.6's verbose=2 epoch lines itself, on both stacks.
            verbose=0 if console else progress_verbosity(sys.stdout, os.environ),
        )
    return step_logger, console, stopping


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


def _evaluate(cfg: DictConfig, folder: RunFolder, model, splits, step_logger, policy: str,
              stopping) -> dict[str, Any]:
    """metrics.json's figures: the final weights' validation figures, and the training as
    history.csv holds it (not fit()'s History: history.csv holds the epochs of earlier attempts too)."""
    from runner.fit.validation import final_validation, training_divergence, warn_if_not_a_number

    history = read_history(folder.path)
    _fail_if_diverged(training_divergence(history), cfg, folder)
    final = final_validation(model, splits.val, history, stopping is not None)
    warn_if_not_a_number(final)
    last_epoch = history[-1] if history else {}
    return {
        "val_accuracy": float(final["accuracy"]),
        "val_loss": float(final["loss"]),
        "train_accuracy": float(last_epoch.get("accuracy", float("nan"))),
        "train_loss": float(last_epoch.get("loss", float("nan"))),
        "epochs_completed": len(history),
        "optimizer_steps": int(model.optimizer.iterations.numpy()),
        "images_per_sec": round(step_logger.images_per_sec, 2),
        "wall_seconds": folder.clock.seconds,
        "batch_size": cfg.batch_size,
        "model": cfg.model.name,
        "dataset": cfg.dataset.name,
        "device": str(cfg.device.type),
        "precision_policy": policy,
        "num_classes": len(splits.class_names),
    }


def _fail_if_diverged(what: str | None, cfg: DictConfig, folder: RunFolder) -> None:
    """A training loss that is not a number is a failed run, not a result (a sweeper cannot rank
    NaN). The backup holds the diverged weights: dropped, so that the folder starts afresh (with
    another config)."""
    if what:
        folder.drop_backup()
        raise RunFailed(
            f"{what}: training diverged. Lower model.learning_rate (now {cfg.model.learning_rate}), "
            f"change batch_size (now {cfg.batch_size}) or precision, or check the data for NaN/inf "
            "values."
        )


def _record(cfg: DictConfig, folder: RunFolder, metrics: dict[str, Any], step_logger, console,
            rank_size: int) -> dict[str, Any]:
    """metrics.json with the Ascend figures, TensorBoard's HParams, then the finishing sequence."""
    figures = _figures(cfg, metrics, step_logger, console, rank_size, folder.path)
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
    return metrics


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


def _reset_keras() -> None:
    """Another run may follow in this process (a sweep's basic launcher, tests): free the model
    and graph and leave float32 behind, whatever this run's precision policy was."""
    if "runner.keras2" in sys.modules:
        from runner.keras2 import reset_session

        reset_session()
