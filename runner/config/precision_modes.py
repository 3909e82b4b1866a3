"""What each `precision.mode` means on each device, in one table. No TensorFlow here.

The names are the NPU's precision_mode values (the Ascend TF adapter's option, docs/devices.md,
which runner/device/npu.py hands npu_device as they are); the schema's enumeration, the NPU's loss
scaling and the Keras policy on GPU and CPU are all read from PRECISION_MODES.
"""
from dataclasses import dataclass

FLOAT32, MIXED_FP16, MIXED_BF16 = "float32", "mixed_float16", "mixed_bfloat16"


@dataclass(frozen=True)
class PrecisionMode:
    # float16 arithmetic on the NPU: gradients need NpuLossScaleOptimizer to stay representable.
    npu_loss_scaled: bool
    # debug=mixlist edits the mixed-precision op lists: only the allow_mix_precision* modes use them.
    uses_mixlist: bool
    gpu_policy: str  # the Keras dtype policy nearest to the mode (runner/device/precision.py)
    # On the CPU, without fp16/bf16 hardware, a mixed policy runs several times slower
    # (docs/performance.md): every mode falls back to float32.
    cpu_policy: str = FLOAT32


PRECISION_MODES = {
    # name (the NPU's option value): PrecisionMode(npu_loss_scaled, uses_mixlist, gpu_policy)
    "force_fp32": PrecisionMode(False, False, FLOAT32),
    "allow_fp32_to_fp16": PrecisionMode(True, False, MIXED_FP16),
    "force_fp16": PrecisionMode(True, False, MIXED_FP16),
    "must_keep_origin_dtype": PrecisionMode(False, False, FLOAT32),
    "allow_mix_precision": PrecisionMode(True, True, MIXED_FP16),
    "allow_mix_precision_fp16": PrecisionMode(True, True, MIXED_FP16),
    "allow_mix_precision_bf16": PrecisionMode(False, True, MIXED_BF16),
    "allow_fp32_to_bf16": PrecisionMode(False, False, MIXED_BF16),
    "cube_fp16in_fp32out": PrecisionMode(True, False, MIXED_FP16),
}

