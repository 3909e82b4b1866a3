"""The checks before a run: what Hydra's schema cannot check (values that cannot train, files that
must exist, the devices' environment, the stack device=npu needs), without TensorFlow, so a bad
value fails in a fraction of a second. Above the config, the devices, the models and the data,
whose rules it applies; train() runs it first.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from runner.config.keys import did_you_mean
from runner.config.npu_option_tree import check_npu_options
from runner.config.precision_modes import PRECISION_MODES
from runner.device.workers import current_worker
from runner.errors import ConfigError
from runner.fit.network import DENSENET_FAMILY, MODEL_NAMES, resizer_target_size
from runner.versions import ASCEND_STACK, installed_tensorflow

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# The one mapping whose keys a user adds (`+device.npu_options.deterministic=1`).
OPEN_MAPPING = "device.npu_options"

# npu_device's aoe_config.aoe_mode values.
AOE_MODES = {"1": "subgraph tuning", "2": "operator tuning", "4": "gradient split tuning"}

MISSING_HINTS = {
    "dataset.data_dir": "the folder holding <name>/<version>/ of a TFDS-prepared dataset, "
    "e.g. dataset.data_dir=/home/data for /home/data/tf_flowers/3.0.1/",
    "dataset.path": "a folder with one sub-folder of images per class, "
    "e.g. dataset.path=/data/pets for /data/pets/cat/*.jpg and /data/pets/dog/*.jpg",
}


@dataclass(frozen=True)
class Range:
    """The values a number may take: low/high bounds, each closed (allowed) or open."""

    low: float
    high: float = math.inf
    low_closed: bool = True
    high_closed: bool = False
    meaning: str = ""

    def holds(self, value: float) -> bool:
        above = value >= self.low if self.low_closed else value > self.low
        below = value <= self.high if self.high_closed else value < self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>=' if self.low_closed else '>'} {self.low:g}"
        return (f"in {'[' if self.low_closed else '('}{self.low:g}, {self.high:g}"
                f"{']' if self.high_closed else ')'}")


# Values that cannot train (a negative rate "diverges" a minute in): refused before TensorFlow.
# Keys a model or dataset lacks are skipped; null means "off" where the config allows it.
VALUE_RANGES = {
    "model.learning_rate": Range(0, low_closed=False, meaning="a step size; 0 would not train"),
    "model.momentum": Range(0, 1, meaning="SGD momentum; 0 is plain SGD"),
    "model.bn_momentum": Range(0, 1, high_closed=True, meaning="BatchNorm's moving-average factor"),
    "model.label_smoothing": Range(0, 1, meaning="0 is off; 1 would erase the labels"),
    "model.mixup_alpha": Range(0, meaning="MixUp's Beta(alpha, alpha); 0 is off"),
    "model.lr_decay": Range(0, 1, low_closed=False, high_closed=True,
                            meaning="the factor at each boundary; 1 keeps the rate"),
    "model.lr_warmup_steps": Range(0, meaning="optimiser steps; 0 is no warm-up"),
    "model.early_stopping_patience": Range(0, meaning="epochs; 0 or null is off"),
    "dataset.val_fraction": Range(0, 1, low_closed=False, meaning="the share held out for validation"),
    "divergence_factor": Range(1, low_closed=False,
                               meaning="times the first step's loss that counts as diverged; null is off"),
}


def _check_value_ranges(cfg: DictConfig) -> None:
    for key, valid in VALUE_RANGES.items():
        value = OmegaConf.select(cfg, key)
        if value is not None and not valid.holds(value):
            raise ConfigError(
                f"{key}={value} is out of range: {key} must be {valid} ({valid.meaning}). "
                "Set it to such a value on the command line or in the model/dataset file."
            )


def check_config(cfg: DictConfig, task_overrides: Sequence[str] = ()) -> None:
    """Raise ConfigError naming the first bad value and its fix (task_overrides: the command
    line's, under `python -m runner`)."""
    _check_added_keys(task_overrides, cfg)
    _check_missing(cfg)
    for key in ("batch_size", "epochs", "log_steps", "steps_per_execution"):
        if cfg[key] <= 0:
            raise ConfigError(f"{key}={cfg[key]} must be a positive integer, e.g. {key}=32.")
    if cfg.steps_per_epoch is not None and cfg.steps_per_epoch <= 0:
        raise ConfigError(
            f"steps_per_epoch={cfg.steps_per_epoch} must be positive, or null for one pass "
            "over the training split."
        )
    _check_value_ranges(cfg)
    _check_model(cfg.model, cfg.dataset.image_size)
    _check_dataset_files(cfg.dataset)
    if cfg.model.name == "bit":
        _check_bit_files(cfg.model)
    _check_device(cfg.device)
    _check_debug(cfg.debug, cfg.precision.mode, cfg.device.type)
    if cfg.device.type == "npu":
        _check_npu_loop(cfg.steps_per_execution, cfg.steps_per_epoch)
        _check_ascend_stack()  # last: the config's own mistakes are worth fixing on any stack


def _check_added_keys(task_overrides: Sequence[str], cfg: DictConfig) -> None:
    """`+key=value` adds a key no config has, which the runner never reads: a misspelt key would
    be ignored without a word (and Hydra's own error for one suggests that `+`). Adding a group
    (`+experiment=...`) and Hydra's own keys stay allowed; `++key` sets a key that exists."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(list(task_overrides)):
        key = override.key_or_group
        if not override.is_add() or key.startswith("hydra") or (CONF_DIR / key).is_dir():
            continue
        if key.startswith(f"{OPEN_MAPPING}."):  # its keys are checked as the adapter checks them
            continue
        parent = key.rpartition(".")[0]
        siblings = list(OmegaConf.select(cfg, parent) if parent else cfg)
        raise ConfigError(
            f"{override.input_line} adds the key {key}, which no config has and the runner never "
            f"reads: it would be ignored.{did_you_mean(key, siblings)} Set an existing key, without "
            "the +; python -m runner --cfg job prints them."
        )


def _check_missing(cfg: DictConfig) -> None:
    for key, hint in MISSING_HINTS.items():
        try:
            OmegaConf.select(cfg, key, throw_on_missing=True)
        except MissingMandatoryValue:
            raise ConfigError(
                f"{key} is not set for dataset={cfg.dataset.name}: pass {hint}."
            ) from None


def _check_model(model_cfg: DictConfig, image_size: int) -> None:
    if model_cfg.name not in MODEL_NAMES:
        raise ConfigError(f"model.name={model_cfg.name!r} is not one of {', '.join(MODEL_NAMES)}.")
    if image_size <= 0:
        raise ConfigError(f"dataset.image_size={image_size} must be positive.")
    if model_cfg.name in DENSENET_FAMILY:
        target = resizer_target_size(model_cfg, image_size)
        if not 32 <= target <= image_size:
            raise ConfigError(
                f"model.target_size={target} must lie between 32 (DenseNet-121's smallest input) "
                f"and the input size dataset.image_size={image_size}: the resizer shrinks images. "
                "Set model.target_size in that range, or change dataset.image_size."
            )
    crop = model_cfg.get("crop_size")
    if crop is not None and not 0 < crop <= image_size:
        raise ConfigError(
            f"model.crop_size={crop} must be positive and at most dataset.image_size={image_size}: "
            "training crops the resized image. Set model.crop_size at most "
            f"{image_size} (null: no crop), or raise dataset.image_size (e.g. dataset.image_size="
            f"{max(crop, 1) * 8 // 7})."
        )
    if model_cfg.name in DENSENET_FAMILY and crop is not None and crop != image_size:
        # models/resizer.py builds its input at dataset.image_size, which validation reads uncropped.
        raise ConfigError(
            f"model.crop_size={crop} with model={model_cfg.name}: the network takes "
            f"dataset.image_size={image_size} px images, and validation images are not cropped. "
            "Leave model.crop_size null (no random crop), or set it to dataset.image_size."
        )


def _check_bit_files(model_cfg: DictConfig) -> None:
    """Local handles and weights files fail here, before TensorFlow; URLs resolve at build time."""
    if model_cfg.backbone == "native":
        if model_cfg.weights is not None and not Path(model_cfg.weights).expanduser().is_file():
            raise ConfigError(
                f"model.weights={model_cfg.weights!r} does not exist. Download the official "
                "BiT-M-R50x1.npz (storage.googleapis.com/bit_models/BiT-M-R50x1.npz) on a machine "
                "with network and pass its path, or model.weights=null for a random init."
            )
    elif not str(model_cfg.handle).startswith(("http://", "https://")):
        from models.hub_handle import resolve_handle

        resolve_handle(model_cfg.handle, model_cfg.get("cache_dir"))  # checks it; extracts an archive once


def _check_dataset_files(dataset_cfg: DictConfig) -> None:
    from data.checks import find_tfds_version_dir, list_image_folder

    if dataset_cfg.source == "tfds":
        find_tfds_version_dir(dataset_cfg.data_dir, dataset_cfg.name, dataset_cfg.version)
    elif dataset_cfg.source == "image_folder":
        list_image_folder(dataset_cfg.path)


def _check_device(device_cfg: DictConfig) -> None:
    if device_cfg.num_devices < 1:
        raise ConfigError(f"device.num_devices={device_cfg.num_devices} must be at least 1.")
    if device_cfg.type != "npu" and device_cfg.num_devices != 1:
        raise ConfigError(
            f"device.num_devices={device_cfg.num_devices} is for device=npu (one process per "
            f"card). device={device_cfg.type} uses every visible device (limit them with "
            "CUDA_VISIBLE_DEVICES); for several machines use device.multi_worker=true with TF_CONFIG."
        )
    if device_cfg.type == "npu" and device_cfg.multi_worker:
        raise ConfigError(
            "device.multi_worker=true is TensorFlow's multi-worker strategy (GPU/CPU). On the NPU "
            "use device.num_devices=N with RANK_SIZE, RANK_ID and RANK_TABLE_FILE in each process."
        )
    _check_npu_options(device_cfg)
    current_worker(device_cfg)  # a missing or bad RANK_* / TF_CONFIG variable fails here


def _check_npu_options(device_cfg: DictConfig) -> None:
    """device.npu_options: the NPU's only, and what the adapter would refuse, refused now."""
    options = OmegaConf.to_container(device_cfg.npu_options, resolve=True)
    check_npu_options(options)
    if options and device_cfg.type != "npu":  # a sweep over devices may share them: not an error
        log.warning("device.npu_options (%s) are CANN's TF adapter options, read on the NPU only: "
                    "device=%s runs without them", ", ".join(options), device_cfg.type)


def _check_npu_loop(steps_per_execution: int, steps_per_epoch: int | None) -> None:
    """The npu loop size is steps_per_execution: every call of the device's loop consumes that many
    batches, so an epoch must be a whole number of calls (Keras would shorten the last one)."""
    if steps_per_execution > 1 and (not steps_per_epoch or steps_per_epoch % steps_per_execution):
        raise ConfigError(
            f"steps_per_execution={steps_per_execution} on the NPU sets the npu loop size, so each "
            f"epoch must be a whole number of loops, but steps_per_epoch={steps_per_epoch}. Set "
            f"steps_per_epoch to a multiple of {steps_per_execution}, or steps_per_execution=1."
        )


def _check_ascend_stack() -> None:
    """device=npu runs where CANN's npu_device runs: TensorFlow 2.6 (read without importing it)."""
    tensorflow = installed_tensorflow()
    version = tensorflow[1] if tensorflow else None
    if version is not None and not version.startswith("2.6."):
        raise ConfigError(
            f"device=npu needs the Ascend stack: CANN's npu_device is built for TensorFlow 2.6.5 "
            f"and Keras 2.6 only, and this environment has TensorFlow {version}. Set up {ASCEND_STACK}, "
            "`source /usr/local/Ascend/ascend-toolkit/set_env.sh`, and run there; or use device=cpu "
            "or device=gpu here."
        )


def _check_debug(debug_cfg: DictConfig, precision_mode: str, device_type: str) -> None:
    if debug_cfg.dump.enabled and OmegaConf.is_missing(debug_cfg.dump, "path"):
        raise ConfigError(
            "debug.dump.enabled=true without debug.dump.path: choose the tool with debug=dump (it "
            "dumps into <run dir>/dump), or set debug.dump.path=DIR."
        )
    aoe_mode = str(debug_cfg.auto_tune.aoe_mode)
    if debug_cfg.auto_tune.enabled and aoe_mode not in AOE_MODES:
        raise ConfigError(
            f"debug.auto_tune.aoe_mode={aoe_mode} is not an AOE mode: use "
            + ", ".join(f"{mode} ({what})" for mode, what in AOE_MODES.items()) + "."
        )
    if debug_cfg.mixlist.enabled and not PRECISION_MODES[str(precision_mode)].uses_mixlist:
        raise ConfigError(
            f"debug=mixlist edits the mixed-precision op lists, which only precision="
            f"allow_mix_precision uses; this run has precision={precision_mode}. Add "
            "precision=allow_mix_precision, or drop mixlist from debug=."
        )
    _check_debug_output_folders(debug_cfg)
    if device_type != "npu":  # the files below are read by the NPU only (mixlist logs its own)
        if debug_cfg.fusion_off.enabled and debug_cfg.fusion_off.file is not None:
            log.warning("debug.fusion_off.file=%s is read on the NPU only: device=%s does not read "
                        "it, and turns grappler's fusion passes off instead",
                        debug_cfg.fusion_off.file, device_type)
        return
    for name, file in (("fusion_off", debug_cfg.fusion_off.file), ("mixlist", debug_cfg.mixlist.file)):
        if debug_cfg[name].enabled and file is not None and not Path(file).is_file():
            raise ConfigError(
                f"debug={name} reads debug.{name}.file={file}, which is not a file (relative paths "
                f"start from {Path.cwd()}). Pass its path, e.g. debug.{name}.file=/path/to/{Path(file).name}."
            )


def _check_debug_output_folders(debug_cfg: DictConfig) -> None:
    """The folders the debug tools write into must be folders (or not exist yet): a file there
    fails deep in TensorFlow or the NPU's runtime, with a traceback naming neither."""
    for name in ("dump", "overflow", "profiling", "auto_tune"):
        tool = debug_cfg[name]
        if not tool.enabled or OmegaConf.is_missing(tool, "path"):
            continue
        path = Path(str(tool.path)).expanduser()
        if path.exists() and not path.is_dir():
            raise ConfigError(
                f"debug.{name}.path={tool.path} is a file, and debug={name} writes a folder of "
                f"files there. Pass a folder that does not exist yet or is one, e.g. "
                f"debug.{name}.path={path.parent / (path.name + '_' + name)}; the default is "
                f"<run dir>/{name if name != 'auto_tune' else 'aoe'}."
            )
