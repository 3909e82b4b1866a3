"""precision.mode -> a Keras dtype policy on GPU/CPU (on the NPU it is the precision_mode option)."""

import logging

from runner.keras2 import keras

log = logging.getLogger(__name__)

FLOAT32_MODES = {"force_fp32", "must_keep_origin_dtype"}
BF16_MODES = {"allow_mix_precision_bf16", "allow_fp32_to_bf16"}


def policy_for(mode: str, device_type: str) -> str:
    """The Keras policy that best matches an NPU precision mode on this device.

    On a CPU the mixed policies fall back to float32: without bf16/fp16 hardware they run
    several times slower (bench/results.md, 2026-11-23: the resizer at 0.15x float32's img/s under
    mixed_bfloat16 and 0.33x under mixed_float16 on this project's 2-core CPU).
    """
    mode, device_type = str(mode), str(device_type)
    if mode in FLOAT32_MODES or device_type == "npu":
        return "float32"
    if device_type == "cpu":
        log.info("precision=%s falls back to float32 on the CPU (no fp16/bf16 hardware)", mode)
        return "float32"
    return "mixed_bfloat16" if mode in BF16_MODES else "mixed_float16"


def apply_precision(mode: str, device_type: str) -> str:
    policy = policy_for(mode, device_type)
    keras.mixed_precision.set_global_policy(policy)
    return policy
