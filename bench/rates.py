"""Images per second, measured the same way for the runner and the plain script.

Every training rate comes from the runner's own StepLogger (steady state: the first
WARMUP_STEPS steps, which include tracing, are left out), so both sides use one stopwatch.
"""

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf

from runner.callbacks import WARMUP_STEPS, StepLogger
from runner.datasets import build_splits, load_source
from runner.optim import uses_one_hot_labels
from runner.train import compiled_model, train

QUIET = 10**9  # log_steps for a meter that should not log


def meter(batch_size: int) -> StepLogger:
    return StepLogger(QUIET, batch_size, epochs=1)


def median(values: list[float]) -> float:
    return statistics.median(values)


def fresh_session(policy: str = "float32") -> None:
    """Each measurement starts from an empty Keras session and the given dtype policy."""
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy(policy)


def runner_train_rate(cfg: DictConfig) -> float:
    """Steady-state images/s of the runner's own code path: train(cfg), every callback on."""
    fresh_session()
    return float(train(cfg)["images_per_sec"])


def plain_train_rate(train_plain: Callable[[list], keras.Model], batch_size: int) -> float:
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
    model: keras.Model, data: tf.data.Dataset, batch_size: int, steady_steps: int
) -> StepLogger:
    """Fits `model` on in-memory batches; the meter holds its steady-state images/s and its
    first step's time (tracing, and compiling with XLA)."""
    step_meter = meter(batch_size)
    per_call = model.steps_per_execution
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
