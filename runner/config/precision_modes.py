"""What each `precision.mode` means on each device, in one table. No TensorFlow here.

The names are the NPU's precision_mode values (the Ascend TF adapter's option, docs/devices.md);
the schema's enumeration, the option npu_device gets, its loss scaling and the Keras policy on GPU
and CPU are all read from PRECISION_MODES.
"""
from dataclasses import dataclass

FLOAT32, MIXED_FP16, MIXED_BF16 = "float32", "mixed_float16", "mixed_bfloat16"


@dataclass(frozen=True)
class PrecisionMode:
    npu_option: str  # npu_device.global_options().precision_mode (runner/device/npu.py)
    # float16 arithmetic on the NPU: gradients need NpuLossScaleOptimizer to stay representable.
    npu_loss_scaled: bool
    # debug=mixlist edits the mixed-precision op lists: only the allow_mix_precision* modes use them.
    uses_mixlist: bool
    gpu_policy: str  # the Keras dtype policy nearest to the mode (runner/device/precision.py)
    # On the CPU, without fp16/bf16 hardware, a mixed policy runs several times slower
    # (docs/performance.md): every mode falls back to float32.
    cpu_policy: str = FLOAT32


PRECISION_MODES = {
    # name                         NPU option                  loss-scaled  mixlist  GPU policy
    "force_fp32": PrecisionMode("force_fp32", False, False, FLOAT32),
    "allow_fp32_to_fp16": PrecisionMode("allow_fp32_to_fp16", True, False, MIXED_FP16),
    "force_fp16": PrecisionMode("force_fp16", True, False, MIXED_FP16),
    "must_keep_origin_dtype": PrecisionMode("must_keep_origin_dtype", False, False, FLOAT32),
    "allow_mix_precision": PrecisionMode("allow_mix_precision", True, True, MIXED_FP16),
    "allow_mix_precision_fp16": PrecisionMode("allow_mix_precision_fp16", True, True, MIXED_FP16),
    "allow_mix_precision_bf16": PrecisionMode("allow_mix_precision_bf16", False, True, MIXED_BF16),
    "allow_fp32_to_bf16": PrecisionMode("allow_fp32_to_bf16", False, False, MIXED_BF16),
    "cube_fp16in_fp32out": PrecisionMode("cube_fp16in_fp32out", True, False, MIXED_FP16),
}

