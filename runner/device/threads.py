"""threads.intra_op / threads.inter_op: TensorFlow's op thread pools, on the current eager context."""
from __future__ import annotations

from typing import Any

import tensorflow as tf


def configure_threads(threads_cfg: Any) -> None:
    """threads.intra_op / inter_op, where set, on the current eager context. TensorFlow accepts
    them only until the context initialises (at its first op)."""
    if threads_cfg.intra_op is not None:
        tf.config.threading.set_intra_op_parallelism_threads(threads_cfg.intra_op)
    if threads_cfg.inter_op is not None:
        tf.config.threading.set_inter_op_parallelism_threads(threads_cfg.inter_op)


def thread_pools() -> dict[str, int]:
    """TensorFlow's op thread pools as it holds them (0: its own choice, one per core)."""
    return {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
    }
