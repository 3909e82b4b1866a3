"""Optimiser, learning-rate schedule and loss from the model's recipe keys."""

from typing import Any

import tensorflow as tf

from runner.errors import ConfigError
from runner.keras2 import keras, optimizers


def base_learning_rate(model_cfg: Any, batch_size: int) -> float:
    """model.learning_rate, scaled linearly by batch_size / model.lr_reference_batch when set."""
    lr = float(model_cfg.learning_rate)
    if model_cfg.lr_reference_batch:
        lr *= batch_size / model_cfg.lr_reference_batch
    return lr


class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Rises linearly from 0 to `peak` over `warmup_steps`, then follows `after`."""

    def __init__(self, after, warmup_steps: int, peak: float):
        self.after = after
        self.warmup_steps = warmup_steps
        self.peak = peak

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        after = self.after(step) if callable(self.after) else self.after
        return tf.where(step < self.warmup_steps, self.peak * step / self.warmup_steps, after)

    def get_config(self):
        return {"after": self.after, "warmup_steps": self.warmup_steps, "peak": self.peak}


def build_schedule(model_cfg: Any, batch_size: int):
    """constant, or piecewise: lr x decay^k after the k-th boundary (optimiser steps), as BiT's
    seed; hyperrule is piecewise once runner/fit/hyperrule.py filled in its boundaries. Then an
    optional linear warm-up."""
    lr = base_learning_rate(model_cfg, batch_size)
    if model_cfg.schedule == "constant":
        schedule = lr
    elif model_cfg.schedule in ("piecewise", "hyperrule"):
        boundaries = list(model_cfg.lr_boundaries)
        values = [lr * model_cfg.lr_decay**k for k in range(len(boundaries) + 1)]
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    else:
        raise ConfigError(
            f"model.schedule={model_cfg.schedule!r} is not one of constant, piecewise, hyperrule."
        )
    if model_cfg.lr_warmup_steps:
        return LinearWarmup(schedule, model_cfg.lr_warmup_steps, lr)
    return schedule


def build_optimizer(model_cfg: Any, batch_size: int) -> optimizers.Optimizer:
    schedule = build_schedule(model_cfg, batch_size)
    if model_cfg.optimizer == "sgd":
        return optimizers.SGD(learning_rate=schedule, momentum=model_cfg.momentum)
    if model_cfg.optimizer == "adam":
        return optimizers.Adam(learning_rate=schedule)
    raise ConfigError(f"model.optimizer={model_cfg.optimizer!r} is not one of sgd, adam.")


def uses_one_hot_labels(model_cfg: Any) -> bool:
    """Label smoothing and MixUp need one-hot labels; otherwise labels stay sparse integers."""
    return model_cfg.label_smoothing > 0 or model_cfg.mixup_alpha > 0


def build_accuracy(model_cfg: Any) -> keras.metrics.Metric:
    """The accuracy metric for the run's label format. An object, not Keras' "accuracy" string:
    the string's metric is built, and its variables created, inside the first train step, and a
    tf.function that creates variables is traced twice (once more for the whole network)."""
    if uses_one_hot_labels(model_cfg):
        return keras.metrics.CategoricalAccuracy(name="accuracy")
    return keras.metrics.SparseCategoricalAccuracy(name="accuracy")


def build_loss(model_cfg: Any) -> keras.losses.Loss:
    if uses_one_hot_labels(model_cfg):
        return keras.losses.CategoricalCrossentropy(
            from_logits=model_cfg.from_logits, label_smoothing=model_cfg.label_smoothing
        )
    return keras.losses.SparseCategoricalCrossentropy(from_logits=model_cfg.from_logits)
