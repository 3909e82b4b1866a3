"""The Ascend NPU through CANN's TensorFlow adapter, `npu_device` (DESIGN.md section 4).

The composed config becomes npu_device options (precision here, debug tools in runner/debug.py),
all set on `npu_device.global_options()` BEFORE `npu_device.open(id).as_default()`: the adapter
reads them once, when the device opens. Multi-card runs (device.num_devices>1, one process per
card) shard the training data, all-reduce the gradients and broadcast the initial weights through
`npu_device.distribute`, as the Ascend multi-card scripts do.
"""

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from runner.debug import npu_debug_options
from runner.errors import ConfigError

log = logging.getLogger(__name__)


def import_npu_device():
    try:
        import npu_device
    except ImportError:
        raise ConfigError(
            "device=npu needs the `npu_device` package, which ships with CANN's TensorFlow "
            "adapter (not on PyPI). Install CANN and its TF2 adapter and `source "
            "/usr/local/Ascend/ascend-toolkit/set_env.sh`, or run with device=cpu or device=gpu."
        ) from None
    return npu_device


def npu_options(cfg: Any) -> dict[str, Any]:
    """Every option this run sets on npu_device.global_options(), nested as it nests them."""
    return {"precision_mode": str(cfg.precision.mode), **npu_debug_options(cfg.debug)}


def open_npu(cfg: Any) -> tf.distribute.Strategy:
    """Set the options, then open the NPU as the default device (the order the adapter needs)."""
    npu_device = import_npu_device()
    options = npu_options(cfg)
    _make_output_folders(options)
    _set_options(npu_device.global_options(), options)
    # device.id null: the adapter reads $ASCEND_DEVICE_ID (0 when unset), as the Ascend scripts do.
    npu_device.open(device_id=cfg.device.id).as_default()
    log.info("npu_device opened (device.id=%s) with options %s", cfg.device.id, options)
    return tf.distribute.get_strategy()


def _make_output_folders(options: dict[str, Any]) -> None:
    """The graph engine writes into existing folders only."""
    dump_path = options.get("dump_config", {}).get("dump_path")
    profiling = options.get("profiling_config", {}).get("profiling_options")
    for folder in (dump_path, profiling and json.loads(profiling)["output"]):
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)


def _set_options(target: Any, options: dict[str, Any], prefix: str = "") -> None:
    for name, value in options.items():
        if isinstance(value, dict):
            _set_options(getattr(target, name), value, f"{prefix}{name}.")
            continue
        try:
            setattr(target, name, value)
        except (ValueError, TypeError) as error:
            raise ConfigError(
                f"npu_device refused option {prefix}{name}={value!r} ({error}). An older CANN may "
                "not know this value (the bf16 precision modes and auto_tune differ between "
                "versions): pick another precision= or debug= option, or update CANN."
            ) from None


def is_multi_card(device_cfg: Any) -> bool:
    return str(device_cfg.type) == "npu" and device_cfg.num_devices > 1


def training_shard(device_cfg: Any) -> Callable | None:
    """(dataset, global_batch) -> (this card's share, its batch), or None on one device."""
    return import_npu_device().distribute.shard_and_rebatch_dataset if is_multi_card(device_cfg) else None


def distributed_optimizer(device_cfg: Any, optimizer: keras.optimizers.Optimizer):
    """The optimiser, all-reducing gradients across cards on a multi-card run."""
    if not is_multi_card(device_cfg):
        return optimizer
    return import_npu_device().distribute.npu_distributed_keras_optimizer_wrapper(optimizer)


def multi_card_callbacks(device_cfg: Any) -> list[keras.callbacks.Callback]:
    return [BroadcastInitialWeights()] if is_multi_card(device_cfg) else []


class BroadcastInitialWeights(keras.callbacks.Callback):
    """Every card starts from rank 0's weights (after any restore from a backup)."""

    def on_train_begin(self, logs=None):
        import_npu_device().distribute.broadcast(self.model.variables, root_rank=0)
