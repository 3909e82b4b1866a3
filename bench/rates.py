"""Images per second, measured the same way for the runner and the plain script.

Every training rate comes from the runner's own StepLogger (steady state: the first
WARMUP_STEPS steps, which include tracing, are left out), so both sides use one stopwatch.

Two Kerases can live in one process: on the default stack the runner's tf-keras (Keras 2) and the
plain script's Keras 3 keep separate sessions and global dtype policies, so each measurement
resets both, and sets a policy on the Keras whose model it measures.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf

from bench import plain_keras
from runner.fit.callbacks import WARMUP_STEPS, StepLogger
from runner.fit.datasets import build_splits, load_source
from runner.fit.network import compiled_model
from runner.fit.optim import uses_one_hot_labels
from runner.keras2 import keras, reset_session
from runner.train import train

QUIET = 10**9  # log_steps for a meter that should not log


def meter(batch_size: int) -> StepLogger:
    return StepLogger(QUIET, batch_size, epochs=1)


def median(values: list[float]) -> float:
    return statistics.median(values)


def fresh_session(policy: str = "float32") -> None:
    """Empty sessions in both Kerases, float32 in the plain script's, `policy` in the runner's
    (on TensorFlow 2.6 they are one Keras: the runner's policy is set last)."""
    plain_keras.reset_session("float32")
    reset_session()
    keras.mixed_precision.set_global_policy(policy)


def runner_train_rate(cfg: DictConfig) -> float:
    """Steady-state images/s of the runner's own code path: train(cfg), every callback on."""
    fresh_session()
    return float(train(cfg)["images_per_sec"])


def plain_train_rate(train_plain: Callable[[list], object], batch_size: int) -> float:
    """Steady-state images/s of a plain script's `fit` (train_plain receives the callbacks)."""
    fresh_session()
    step_meter = meter(batch_size)
    train_plain([step_meter])
    return step_meter.images_per_sec


def runner_model(cfg: DictConfig, num_classes: int, jit_compile: bool, steps_per_execution: int):
    """The model as train(cfg) builds and compiles it, with these speed switches."""
    switches = {"jit_compile": jit_compile, "steps_per_execution": steps_per_execution}
    return compiled_model(OmegaConf.merge(cfg, switches), num_classes)


def constant_batch(cfg: DictConfig, side: int, num_classes: int) -> tf.data.Dataset:
    """One batch repeated forever: the model's step rate with no input pipeline in the way."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (cfg.batch_size, side, side, 3)).astype(np.float32)
    labels = rng.integers(0, num_classes, cfg.batch_size)
    if uses_one_hot_labels(cfg.model):
        labels = np.eye(num_classes, dtype=np.float32)[labels]
    return tf.data.Dataset.from_tensors((images, labels)).repeat()


def model_step_rate(
    model: keras.Model, data: tf.data.Dataset, batch_size: int, steady_steps: int,
    steps_per_execution: int = 1,
) -> StepLogger:
    """Fits `model` (compiled with `steps_per_execution`) on in-memory batches; the meter holds
    its steady-state images/s and its first step's time (tracing, and compiling with XLA)."""
    step_meter = meter(batch_size)
    per_call = steps_per_execution  # Keras 2.6 keeps it in a private variable only
    steps = -(-(WARMUP_STEPS + steady_steps) // per_call) * per_call  # whole executions only
    model.fit(data, epochs=1, steps_per_epoch=steps, callbacks=[step_meter], verbose=0, shuffle=False)
    return step_meter


def pipeline_pass_rates(cfg: DictConfig, passes: int = 2) -> list[float]:
    """Images/s the runner's training pipeline delivers on each pass over the split, alone.

    With pipeline.cache on, the first pass decodes (and fills the cache), later ones read it.
    Each pass is timed from a fresh iterator, so it includes the shuffle buffer's fill.
    """
    splits = build_splits(cfg, load_source(cfg.dataset, cfg.seed), drop_remainder=False)
    rates = []
    for _ in range(passes):
        started, images = time.perf_counter(), 0
        for batch_images, _ in splits.train:
            images += int(batch_images.shape[0])
        rates.append(images / (time.perf_counter() - started))
    return rates


def new_run_dir(work_dir: Path, name: str) -> Path:
    """A run directory not used before (train() returns early from a finished one)."""
    return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work_dir)) / "run"
