"""A finished run directory -> (config, model with its weights, class names).

Shared by evaluate, predict and export. The model is rebuilt from the run's own config
(`.hydra/config.yaml`) and its `*_weights.h5` loaded into it, never reloaded from a `.keras` file:
a BiT model holding a SavedModel layer reloads only with safe_mode=False.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from runner.errors import ConfigError
from runner.record.run_folder import BEST_WEIGHTS, CHECKPOINTS, CONFIG_FILE, LABELS_FILE, LAST_WEIGHTS

WEIGHTS_FILES = {"best": BEST_WEIGHTS, "last": LAST_WEIGHTS}


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: DictConfig
    model: Any  # keras.Model
    class_names: list[str]
    which: str  # "best" or "last"


def load_run_config(run_dir: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """The run's composed config with `key=value` overrides applied (only keys it already has)."""
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise ConfigError(f"run={str(run_dir)!r} does not exist. Pass a run directory of "
                          "`python -m runner` (the folder holding .hydra/, checkpoints/ and metrics.json).")
    config_file = run_dir / CONFIG_FILE
    if not config_file.is_file():
        raise ConfigError(
            f"{run_dir} has no {CONFIG_FILE}: it is not a run directory of `python -m runner`, or the "
            "run failed before writing its config. Pass the folder that holds .hydra/, checkpoints/ "
            "and metrics.json (for a multirun, one of its numbered sub-folders)."
        )
    cfg = OmegaConf.load(config_file)
    OmegaConf.set_struct(cfg, True)  # an override may change a key, not invent one
    try:
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as error:
        raise ConfigError(
            f"Cannot apply {' '.join(overrides)} to the config of {run_dir}: {error}"
        ) from None


def weights_file(run_dir: Path, which: str) -> Path:
    """checkpoints/best_weights.h5 (best val_accuracy) or checkpoints/last_weights.h5 (final epoch)."""
    if which not in WEIGHTS_FILES:
        raise ConfigError(f"which={which!r} is not one of {', '.join(WEIGHTS_FILES)}.")
    path = run_dir / CHECKPOINTS / WEIGHTS_FILES[which]
    if not path.is_file():
        folder = run_dir / CHECKPOINTS
        found = sorted(p.name for p in folder.glob("*_weights.h5")) if folder.is_dir() else []
        raise ConfigError(
            f"{run_dir} has no checkpoint {CHECKPOINTS}/{WEIGHTS_FILES[which]} (found: "
            f"{', '.join(found) or 'no checkpoints at all'}): the run stopped before finishing an "
            "epoch, or this is not a run directory. "
            + ("Pass which=last to load the other checkpoint." if found else "Train it first.")
        )
    return path


def read_class_names(run_dir: Path) -> list[str]:
    path = run_dir / CHECKPOINTS / LABELS_FILE
    if not path.is_file():
        raise ConfigError(
            f"{run_dir} has no {CHECKPOINTS}/{LABELS_FILE} (the class names, one per line, written "
            "when training starts): the run did not get as far as reading its data."
        )
    return path.read_text().splitlines()


def load_run(run_dir: str | Path, which: str = "best", overrides: Sequence[str] = ()) -> LoadedRun:
    """Rebuild the run's model from its config and load the `which` checkpoint into it."""
    run_dir = Path(run_dir).expanduser()
    cfg = load_run_config(run_dir, overrides)
    weights = weights_file(run_dir, which)
    class_names = read_class_names(run_dir)
    from runner.fit.network import build_network

    model = build_network(cfg.model, len(class_names), cfg.dataset.image_size)
    try:
        model.load_weights(weights)
    except ValueError as error:
        raise ConfigError(
            f"{weights} does not fit the model rebuilt from {run_dir / CONFIG_FILE}: {error}. "
            "Undo any model.* override, or check that the checkpoint belongs to this run."
        ) from None
    return LoadedRun(run_dir, cfg, model, class_names, which)


def to_probabilities(outputs: np.ndarray, from_logits: bool) -> np.ndarray:
    """Class probabilities from the model's outputs: BiT ends in logits, DenseNet in softmax."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if not from_logits:
        return outputs.astype(np.float32)
    shifted = np.exp(outputs - outputs.max(axis=-1, keepdims=True))  # stable softmax
    return (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)


def predict_outputs(run: LoadedRun, batches) -> np.ndarray:
    """The model's raw outputs (float32) for an iterable of float32 pixel batches."""
    outputs = [np.asarray(run.model.predict_on_batch(images), np.float32) for images in batches]
    return np.concatenate(outputs) if outputs else np.zeros((0, len(run.class_names)), np.float32)
