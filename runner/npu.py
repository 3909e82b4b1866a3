"""The Ascend NPU through CANN's TensorFlow adapter, `npu_device`."""

from typing import Any

from runner.errors import ConfigError


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


def open_npu(device_cfg: Any):
    """Open the NPU as the default device; options must be set before this call."""
    import tensorflow as tf

    npu_device = import_npu_device()
    if device_cfg.id is None:
        npu_device.open().as_default()
    else:
        npu_device.open(device_cfg.id).as_default()
    return tf.distribute.get_strategy()
