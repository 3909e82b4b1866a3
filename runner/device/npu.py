"""The Ascend NPU through CANN's TensorFlow adapter, `npu_device` (TF Adapter 2.x).

`npu_device` exists for TensorFlow 2.6.5 only (the Ascend stack, README "Setting up the Ascend stack"): it is
compiled against TF 2.6.5 and patches Keras-2.6 internals. The composed config becomes
npu_device options (precision here, debug tools in runner/device/debug.py), all set on
`npu_device.global_options()` BEFORE `npu_device.open(id).as_default()`: the adapter reads them
once, when the device opens, and silently ignores later changes. Then:

- the npu loop size follows steps_per_execution (the device runs that many steps per call and
  must be fed as many batches);
- precision modes that compute in float16 train through `NpuLossScaleOptimizer` (dynamic loss
  scaling; overflow read from the device's float status, or in INF/NaN mode found by Keras' check
  of the gradients);
- TensorFlow's eager context is the adapter's from open() on: the global seed and op determinism
  is set after it (runner/device/strategy.py), thread pools on that context before it (below);
- multi-card runs (device.num_devices>1, one process per card) shard the training data, all-reduce
  the gradients and broadcast the initial weights through `npu_device.distribute`, as the Ascend
  multi-card scripts do.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf
from omegaconf import OmegaConf

from runner.config.precision_modes import PRECISION_MODES
from runner.device.ascend_card import card_to_open
from runner.device.debug import npu_debug_options
from runner.device.threads import configure_threads, thread_pools
from runner.errors import ConfigError
from runner.keras2 import STACK, keras, optimizers
from runner.versions import ASCEND_STACK

log = logging.getLogger(__name__)



def import_npu_device():
    try:
        import npu_device
    except ImportError as error:
        if error.name != "npu_device":  # present, but something it imports is not
            raise _unimportable(error) from None
        raise ConfigError(
            "device=npu needs the `npu_device` package, which ships with CANN's TensorFlow "
            f"adapter (not on PyPI). On {ASCEND_STACK}, install CANN and its TF2 adapter and `source "
            "/usr/local/Ascend/ascend-toolkit/set_env.sh`; check with `python -c \"import "
            "npu_device; npu_device.open().as_default()\"`. Or run with device=cpu or device=gpu."
        ) from None
    except Exception as error:  # under a newer Keras: AttributeError
        raise _unimportable(error) from None
    return npu_device


def _unimportable(error: Exception) -> ConfigError:
    return ConfigError(
        f"`import npu_device` failed under {STACK} ({type(error).__name__}: {error}). CANN's "
        f"adapter is built for TensorFlow 2.6.5 and Keras 2.6 only: run device=npu on {ASCEND_STACK}, "
        "or use device=cpu or device=gpu here."
    )


def npu_options(precision_mode: str, debug_cfg: Any, device_cfg: Any,
                sweep_dir: str | None) -> dict[str, Any]:
    """Every option a run sets on npu_device.global_options(), nested as it nests them: the
    precision mode as it is, the enabled debug tools (runner/device/debug.py), a sweep's shared
    compile caches, then device.npu_options (checked before TensorFlow loaded:
    runner/config/npu_option_tree.py, which also keeps them off the runner's own keys)."""
    options = {"precision_mode": str(precision_mode), **npu_debug_options(debug_cfg)}
    if device_cfg.sweep_compile_cache and sweep_dir:
        options.update(sweep_compile_caches(sweep_dir))
    return _merged(options, OmegaConf.to_container(device_cfg.npu_options, resolve=True))


def sweep_compile_caches(sweep_dir: str) -> dict[str, str]:
    """One op and one graph compile cache for a whole sweep: each job's graphs and ops have the
    same shapes unless the swept keys change them, so the second job loads what the first
    compiled instead of compiling it again (minutes per job on the NPU)."""
    cache = Path(sweep_dir).expanduser().resolve() / "npu_compile_cache"
    return {"op_compiler_cache_mode": "enable", "op_compiler_cache_dir": str(cache / "op"),
            "graph_compiler_cache_dir": str(cache / "graph")}


def _merged(options: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """options with more's entries set over them, sub-configs merged key by key."""
    merged = dict(options)
    for name, value in more.items():
        if isinstance(value, dict) and isinstance(merged.get(name), dict):
            value = _merged(merged[name], value)
        merged[name] = value
    return merged


def open_npu(device_cfg: Any, threads_cfg: Any, options: dict[str, Any],
             loop_size: int) -> tf.distribute.Strategy:
    """Set the options (npu_options'), open the NPU as the default device (the order the adapter
    needs), then set the npu loop size (steps_per_execution: the steps the device runs per call)."""
    card = card_to_open(device_cfg.id)  # before npu_device loads CANN's runtime
    npu_device = import_npu_device()
    _make_output_folders(options)
    _set_options(npu_device.global_options(), options)
    _thread_pools_on_the_npu_context(npu_device, threads_cfg)
    # device.id null: the adapter reads $ASCEND_DEVICE_ID (0 when unset), as the Ascend scripts do.
    npu_device.open(device_id=card).as_default()
    _warn_if_thread_pools_were_dropped(threads_cfg)
    npu_device.set_npu_loop_size(loop_size)
    log.info("npu_device opened (device.id=%s) with options %s", device_cfg.id, options)
    return tf.distribute.get_strategy()


def _thread_pools_on_the_npu_context(npu_device: Any, threads_cfg: Any) -> None:
    """threads.* on the NPU. open() replaces TensorFlow's eager context with a new, initialised
    one of the adapter's class (npu_device.npu_device._ContextWithDefaultDevice), unless the
    current context already is one, and a context's thread pools are fixed when it initialises:
    pools set before open() are lost, and after it they cannot be set. So, when threads.* are set,
    the runner installs that context itself, with the pools set, before open()."""
    if threads_cfg.intra_op is None and threads_cfg.inter_op is None:
        return
    from tensorflow.python.eager import context

    context_class = getattr(npu_device.npu_device, "_ContextWithDefaultDevice", None)
    if context_class is None:
        raise ConfigError(
            "threads.intra_op/threads.inter_op on device=npu: this CANN adapter has no "
            "npu_device.npu_device._ContextWithDefaultDevice, so the runner cannot set thread pools "
            "that survive npu_device.open(). Leave threads.* unset (null) on the NPU, or update CANN."
        )
    if not isinstance(context.context(), context_class):
        context._set_context(context_class())
    configure_threads(threads_cfg)
    context.ensure_initialized()  # open() hands the initialised context to the device


def _warn_if_thread_pools_were_dropped(threads_cfg: Any) -> None:
    """Adapters before r1.8.0 replace the context in open() whatever it is."""
    held = thread_pools()
    asked = {name: threads_cfg[name] for name in held if threads_cfg[name] is not None}
    if any(held[name] != value for name, value in asked.items()):
        log.warning("threads %s asked for, but npu_device.open() replaced the eager context: "
                    "TensorFlow holds %s (update CANN's adapter to keep them)", asked, held)


def _make_output_folders(options: dict[str, Any]) -> None:
    """The graph engine writes into existing folders only."""
    dump_path = options.get("dump_config", {}).get("dump_path")
    profiling = options.get("profiling_config", {}).get("profiling_options")
    aoe_path = options.get("aoe_config", {}).get("work_path")
    caches = (options.get("op_compiler_cache_dir"), options.get("graph_compiler_cache_dir"))
    for folder in (dump_path, profiling and json.loads(profiling)["output"], aoe_path, *caches):
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)


def _set_options(target: Any, options: dict[str, Any], prefix: str = "") -> None:
    for name, value in options.items():
        if isinstance(value, dict):
            _set_options(getattr(target, name), value, f"{prefix}{name}.")
            continue
        if not hasattr(target, name):
            raise ConfigError(
                f"This CANN's TF adapter has no option {prefix}{name} (older releases lack some: "
                "r1.12.0 has no jit_compile, graph_compiler_cache_dir, precision_mode_v2, "
                "ac_parallel_enable, graph_slice). Drop it from device.npu_options, or update CANN."
            )
        try:
            setattr(target, name, value)
        except (ValueError, TypeError) as error:
            raise ConfigError(
                f"npu_device refused option {prefix}{name}={value!r} ({error}). CANN versions "
                "differ in the values they accept (the bf16 precision modes and AOE tuning came "
                "later): pick another precision= or debug= option, or update CANN."
            ) from None


def is_multi_card(device_cfg: Any) -> bool:
    return str(device_cfg.type) == "npu" and device_cfg.num_devices > 1


def training_shard(device_cfg: Any) -> Callable | None:
    """(dataset, global_batch) -> (this card's share, its batch), or None on one device."""
    return import_npu_device().distribute.shard_and_rebatch_dataset if is_multi_card(device_cfg) else None


def npu_optimizer(device_cfg: Any, precision_mode: str,
                  optimizer: optimizers.Optimizer) -> optimizers.Optimizer:
    """On the NPU: loss scaling for the float16 precision modes, and on several cards the
    gradients all-reduced across them (the adapter patches the optimizer it is given)."""
    if str(device_cfg.type) != "npu":
        return optimizer
    npu_device = import_npu_device()
    if PRECISION_MODES[str(precision_mode)].npu_loss_scaled:
        optimizer = npu_device.train.optimizer.NpuLossScaleOptimizer(optimizer)
        log.info("precision=%s computes in float16: dynamic loss scaling, overflowing steps found %s",
                 precision_mode, _overflow_check(npu_device))
    if is_multi_card(device_cfg):
        optimizer = npu_device.distribute.npu_distributed_keras_optimizer_wrapper(optimizer)
    return optimizer


def _overflow_check(npu_device: Any) -> str:
    """How NpuLossScaleOptimizer finds an overflowing step: it depends on the device's mode."""
    inf_nan_enabled = getattr(npu_device, "is_inf_nan_enabled", None)  # adapter r1.13.0 and later
    if inf_nan_enabled is not None and inf_nan_enabled():
        return "by Keras' check of the gradients (the device is in INF/NaN mode)"
    return "from the device's float status (saturation mode)"


def multi_card_callbacks(device_cfg: Any) -> list[keras.callbacks.Callback]:
    return [BroadcastInitialWeights()] if is_multi_card(device_cfg) else []


class BroadcastInitialWeights(keras.callbacks.Callback):
    """Every card starts from rank 0's weights (after any restore from a backup)."""

    def on_train_begin(self, logs=None):
        import_npu_device().distribute.broadcast(self.model.variables, root_rank=0)
