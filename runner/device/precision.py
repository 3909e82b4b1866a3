"""precision.mode -> the Keras dtype policy, read from runner/config/precision_modes.py's table
(on the NPU the mode is npu_device's precision_mode option, runner/device/npu.py, and Keras
stays float32)."""

import logging

from runner.config.precision_modes import FLOAT32, PRECISION_MODES
from runner.keras2 import keras

log = logging.getLogger(__name__)


def policy_for(mode: str, device_type: str) -> str:
    """The Keras policy that best matches a precision mode on this device."""
    row, device_type = PRECISION_MODES[str(mode)], str(device_type)
    if device_type == "npu":
        return FLOAT32
    if device_type == "cpu":
        if row.cpu_policy != row.gpu_policy:  # a mode the CPU does not honour: said once a run
            log.warning("precision=%s runs as %s on the CPU: TensorFlow's CPU kernels compute %s "
                        "several times slower than float32, with or without bf16 instructions "
                        "(docs/performance.md); it applies on the GPU and the NPU", mode,
                        row.cpu_policy, row.gpu_policy)
        return row.cpu_policy
    return row.gpu_policy


def apply_precision(mode: str, device_type: str) -> str:
    policy = policy_for(mode, device_type)
    keras.mixed_precision.set_global_policy(policy)
    return policy
