"""Optimiser, learning-rate schedule and loss from the model's recipe keys."""

from typing import Any

import keras

from runner.errors import ConfigError


def base_learning_rate(model_cfg: Any, batch_size: int) -> float:
    """model.learning_rate, scaled linearly by batch_size / model.lr_reference_batch when set."""
    lr = float(model_cfg.learning_rate)
    if model_cfg.lr_reference_batch:
        lr *= batch_size / model_cfg.lr_reference_batch
    return lr


def build_schedule(model_cfg: Any, batch_size: int):
    lr = base_learning_rate(model_cfg, batch_size)
    if model_cfg.schedule == "constant":
        return lr
    if model_cfg.schedule == "piecewise":
        # BiT's seed schedule: lr x decay^k after the k-th boundary (in optimiser steps).
        boundaries = list(model_cfg.lr_boundaries)
        values = [lr * model_cfg.lr_decay**k for k in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    raise ConfigError(
        f"model.schedule={model_cfg.schedule!r} is not one of constant, piecewise."
    )


def build_optimizer(model_cfg: Any, batch_size: int) -> keras.optimizers.Optimizer:
    schedule = build_schedule(model_cfg, batch_size)
    if model_cfg.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=schedule, momentum=model_cfg.momentum)
    if model_cfg.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=schedule)
    raise ConfigError(f"model.optimizer={model_cfg.optimizer!r} is not one of sgd, adam.")


def uses_one_hot_labels(model_cfg: Any) -> bool:
    """Label smoothing needs one-hot labels; otherwise labels stay sparse integers."""
    return model_cfg.label_smoothing > 0


def build_loss(model_cfg: Any) -> keras.losses.Loss:
    if uses_one_hot_labels(model_cfg):
        return keras.losses.CategoricalCrossentropy(
            from_logits=model_cfg.from_logits, label_smoothing=model_cfg.label_smoothing
        )
    return keras.losses.SparseCategoricalCrossentropy(from_logits=model_cfg.from_logits)
