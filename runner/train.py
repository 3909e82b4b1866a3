"""train(cfg): compose -> device -> data -> model -> fit -> report, for one run directory.

Tests call `train` directly with a composed config; `python -m runner` is a thin Hydra shell
around it. TensorFlow is imported inside `_fit_and_report` only, so config errors stay fast.
"""

import csv
import logging
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from runner.checks import check_config
from runner.errors import ConfigError
from runner.report import (
    METRICS_FILE,
    attach_log_file,
    detach_log_file,
    environment,
    read_metrics,
    write_json_atomic,
)

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
BEST_WEIGHTS = "best.weights.h5"
LAST_WEIGHTS = "last.weights.h5"
LABELS_FILE = "labels.txt"


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train and evaluate one run in cfg.output_dir; return (and write) its final metrics.

    A run directory that already holds metrics.json is finished: its metrics are returned as they
    are. One with a backup from an interrupted run resumes from its last completed epoch.
    """
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    finished = read_metrics(run_dir)
    if finished is not None:
        log.info("%s already holds a finished run (%s); nothing to do", run_dir, METRICS_FILE)
        return finished
    handler = attach_log_file(run_dir)
    try:
        check_config(cfg)
        _save_config(cfg, run_dir)
        return _fit_and_report(cfg, run_dir)
    except ConfigError as error:
        log.error("%s", error)
        raise
    finally:
        detach_log_file(handler)


def _save_config(cfg: DictConfig, run_dir: Path) -> None:
    """Hydra writes .hydra/config.yaml; a run started by a test gets the same file from here."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        path.parent.mkdir(exist_ok=True)
        OmegaConf.save(cfg, path, resolve=True)


def static_shape(cfg: DictConfig) -> bool:
    """static_shape, or the device's default when null: the NPU needs static shapes."""
    return cfg.static_shape if cfg.static_shape is not None else cfg.device.type == "npu"


def _best_val_accuracy_so_far(history_csv: Path) -> float | None:
    """Best val_accuracy of the epochs an interrupted run already finished (for resume)."""
    if not history_csv.is_file():
        return None
    with open(history_csv) as f:
        values = [float(row["val_accuracy"]) for row in csv.DictReader(f) if row.get("val_accuracy")]
    return max(values, default=None)


def _callbacks(cfg: DictConfig, run_dir: Path, step_logger) -> list:
    import keras

    ckpt_dir = run_dir / CHECKPOINTS
    callbacks = [
        # First: an epoch's backup is saved before anything else records that epoch as done.
        keras.callbacks.BackupAndRestore(str(ckpt_dir / "backup"), double_checkpoint=True),
        keras.callbacks.ModelCheckpoint(
            str(ckpt_dir / BEST_WEIGHTS), monitor="val_accuracy", mode="max",
            save_best_only=True, save_weights_only=True,
            initial_value_threshold=_best_val_accuracy_so_far(run_dir / "history.csv"),
        ),
        keras.callbacks.ModelCheckpoint(str(ckpt_dir / LAST_WEIGHTS), save_weights_only=True),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(run_dir / "tensorboard")),
        step_logger,
    ]
    if cfg.model.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", mode="max", patience=cfg.model.early_stopping_patience,
                restore_best_weights=True,
            )
        )
    return callbacks


def _with_hyperrule(cfg: DictConfig, source, run_dir: Path) -> DictConfig:
    """Fill in BiT-HyperRule's choices and record them where evaluate/export read the config."""
    from runner.datasets import count_examples, first_image_shape
    from runner.hyperrule import apply_hyperrule, bit_hyperrule

    train_examples = count_examples(source.train)
    rule = bit_hyperrule(train_examples, *first_image_shape(source.train))
    effective, changes = apply_hyperrule(cfg, rule, train_examples)
    log.info("BiT-HyperRule for %d training images: %s", train_examples, changes)
    config_file = run_dir / ".hydra" / "config.yaml"
    config_file.replace(config_file.with_name("config.composed.yaml"))
    OmegaConf.save(effective, config_file, resolve=True)
    return effective


def _fit_and_report(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from runner.callbacks import StepLogger
    from runner.datasets import build_splits, load_source
    from runner.device import build_strategy, configure_threads, describe_devices
    from runner.network import build_network
    from runner.optim import build_loss, build_optimizer
    from runner.precision import apply_precision

    started = time.perf_counter()
    configure_threads(cfg.threads)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    strategy = build_strategy(cfg.device)
    policy = apply_precision(cfg.precision.mode, cfg.device.type)
    device = describe_devices(strategy, cfg.device.type)
    write_json_atomic(run_dir / "env.json", environment(device))
    log.info(
        "run %s: model=%s dataset=%s device=%s (%d replica(s)) policy=%s",
        run_dir, cfg.model.name, cfg.dataset.name, cfg.device.type, device["replicas"], policy,
    )

    source = load_source(cfg.dataset, cfg.seed)
    if cfg.model.schedule == "hyperrule":
        cfg = _with_hyperrule(cfg, source, run_dir)
    splits = build_splits(cfg, source, drop_remainder=static_shape(cfg))
    (run_dir / CHECKPOINTS).mkdir(exist_ok=True)
    (run_dir / CHECKPOINTS / LABELS_FILE).write_text("\n".join(splits.class_names) + "\n")
    log.info(
        "data: %d training / %d validation images, %d classes",
        splits.train_examples, splits.val_examples, len(splits.class_names),
    )

    with strategy.scope():
        model = build_network(cfg.model, len(splits.class_names), cfg.dataset.image_size)
        model.compile(
            optimizer=build_optimizer(cfg.model, cfg.batch_size),
            loss=build_loss(cfg.model),
            metrics=["accuracy"],
            jit_compile="auto" if cfg.jit_compile is None else cfg.jit_compile,
            steps_per_execution=cfg.steps_per_execution,
        )
    log.info("model %s: %s parameters", model.name, f"{model.count_params():,}")

    step_logger = StepLogger(cfg.log_steps, cfg.batch_size, cfg.epochs)
    train_data = splits.train.repeat() if cfg.steps_per_epoch else splits.train
    history = model.fit(
        train_data,
        validation_data=splits.val,
        epochs=cfg.epochs,
        steps_per_epoch=cfg.steps_per_epoch,
        callbacks=_callbacks(cfg, run_dir, step_logger),
        shuffle=False,  # the pipeline shuffles
        verbose=1 if sys.stdout.isatty() else 0,
    )
    final = model.evaluate(splits.val, return_dict=True, verbose=0)
    last_epoch = {k: v[-1] for k, v in history.history.items()}
    metrics = {
        "val_accuracy": float(final["accuracy"]),
        "val_loss": float(final["loss"]),
        "train_accuracy": float(last_epoch.get("accuracy", float("nan"))),
        "train_loss": float(last_epoch.get("loss", float("nan"))),
        "epochs_completed": int(history.epoch[-1]) + 1 if history.epoch else cfg.epochs,
        "images_per_sec": round(step_logger.images_per_sec, 2),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "batch_size": cfg.batch_size,
        "model": cfg.model.name,
        "dataset": cfg.dataset.name,
        "device": str(cfg.device.type),
        "precision_policy": policy,
        "num_classes": len(splits.class_names),
    }
    write_json_atomic(run_dir / METRICS_FILE, metrics)
    log.info(
        "finished: val_accuracy %.4f val_loss %.4f epochs %d wall %.1fs imgs/s: %.2f",
        metrics["val_accuracy"], metrics["val_loss"], metrics["epochs_completed"],
        metrics["wall_seconds"], metrics["images_per_sec"],
    )
    return metrics
