"""Model FLOPs from TF's profiler, and this CPU's peak FP32 rate, for a utilisation figure."""
from __future__ import annotations

import os
import re
from pathlib import Path

import tensorflow as tf

from runner.keras2 import keras

# Zen 2/3 and recent Intel cores: two 256-bit FMA pipes = 2 x 8 lanes x 2 FLOP per cycle.
FP32_FLOP_PER_CYCLE_AVX2_FMA = 32
# Training ~ 3 x forward: the backward pass computes gradients for activations and weights.
TRAIN_FLOPS_PER_FORWARD = 3


def forward_flops_per_image(model: keras.Model, side: int) -> int:
    """FLOPs of one forward pass on one side x side image, counted by tf.compat.v1.profiler."""
    forward = tf.function(lambda images: model(images, training=False))
    graph = forward.get_concrete_function(tf.TensorSpec([1, side, side, 3], tf.float32)).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(graph=graph, options=options)
    return int(profile.total_float_ops)


def cpu_clock_ghz(cpuinfo: Path = Path("/proc/cpuinfo")) -> float | None:
    """The first core's current clock from /proc/cpuinfo (None where it is not Linux)."""
    if not cpuinfo.is_file():
        return None
    found = re.search(r"^cpu MHz\s*:\s*([\d.]+)", cpuinfo.read_text(), re.MULTILINE)
    return float(found.group(1)) / 1000 if found else None


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def peak_gflops() -> float | None:
    """Cores x FMA FLOP/cycle x clock: the FP32 ceiling no real training reaches."""
    clock = cpu_clock_ghz()
    return usable_cores() * FP32_FLOP_PER_CYCLE_AVX2_FMA * clock if clock else None


def cpu_model_name() -> str:
    found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    return found.group(1).strip() if found else "unknown CPU"
