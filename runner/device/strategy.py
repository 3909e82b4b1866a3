"""Device config -> tf.distribute strategy. The NPU's options live in runner/device/npu.py."""
from __future__ import annotations

import logging
from typing import Any

import tensorflow as tf

from runner.device.threads import configure_threads
from runner.errors import ConfigError
from runner.keras2 import set_op_determinism, set_random_seed

log = logging.getLogger(__name__)


def set_up_device(cfg: Any, sweep_dir: str | None = None) -> tf.distribute.Strategy:
    """Op determinism, the device's strategy, then what TensorFlow keeps on its eager context:
    thread pools and the global seed.

    cpu: the default strategy; gpu: every visible GPU mirrored; npu: the opened Ascend device.
    device.multi_worker: MultiWorkerMirroredStrategy over the workers TF_CONFIG names (each
    worker's CPU or all its GPUs). The device stage, so it reads across the config: device,
    threads, seed, deterministic, and on the NPU precision, debug and steps_per_execution (its
    options must be set before the device opens); the functions it calls get only their groups.
    npu_device.open() installs an eager context of its own, which drops what was set on the one
    before: on the NPU the seed is set after it, and the thread pools inside
    runner/device/npu.py, on the context open() keeps. Op determinism is process-wide (not the
    context's), so it is set first, whatever follows. sweep_dir: the sweep's folder, for a job
    of a multirun (the NPU's jobs share compile caches there).
    """
    set_op_determinism(cfg.deterministic)
    device_cfg = cfg.device
    if device_cfg.type == "npu":
        from runner.device.npu import npu_options, open_npu

        options = npu_options(cfg.precision.mode, cfg.debug, device_cfg, sweep_dir)
        strategy = open_npu(device_cfg, cfg.threads, options, loop_size=cfg.steps_per_execution)
    else:
        configure_threads(cfg.threads)  # before TensorFlow's first op
        strategy = _gpu_or_cpu_strategy(device_cfg)
    set_random_seed(cfg.seed)
    return strategy


def _gpu_or_cpu_strategy(device_cfg: Any) -> tf.distribute.Strategy:
    if device_cfg.type == "gpu":
        _enable_memory_growth(device_cfg.memory_growth)
    if device_cfg.multi_worker:
        return tf.distribute.MultiWorkerMirroredStrategy()
    if device_cfg.type == "gpu":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def _enable_memory_growth(memory_growth: bool) -> None:
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        raise ConfigError(
            "device=gpu but TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') "
            "is empty). Check the CUDA driver with `nvidia-smi`, or run with device=cpu."
        )
    for gpu in gpus:
        # Before any GPU memory is allocated; otherwise TF reserves all of it up front.
        tf.config.experimental.set_memory_growth(gpu, memory_growth)


def static_shape(setting: bool | None, device_type: str) -> bool:
    """The static_shape key (drop_remainder on every batch), or the device's default when null:
    the NPU needs static shapes."""
    return setting if setting is not None else str(device_type) == "npu"


def describe_devices(strategy: tf.distribute.Strategy, device_type: str) -> dict[str, Any]:
    """What env.json records about where the run ran."""
    return {
        "type": str(device_type),
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "physical": [d.name for d in tf.config.list_physical_devices()],
    }
