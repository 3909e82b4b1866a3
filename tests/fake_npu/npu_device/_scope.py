"""Graph-attribute scopes, as the real ones: nodes created inside (while a graph is built or a
tf.function traced) get the attribute; eager ops are unaffected. They run unchanged on the CPU."""

from __future__ import annotations

import contextlib

from tensorflow.core.framework import attr_value_pb2
from tensorflow.python.framework import ops


@contextlib.contextmanager
def _attr_scope(name: str, value: attr_value_pb2.AttrValue):
    with ops.get_default_graph()._attr_scope({name: value}):
        yield


def keep_dtype_scope():
    """Ops created inside keep their original precision on the NPU (`_keep_dtype`)."""
    return _attr_scope("_keep_dtype", attr_value_pb2.AttrValue(i=1))


def npu_recompute_scope():
    """Ops created inside are recomputed in the backward pass (`_recompute`)."""
    return _attr_scope("_recompute", attr_value_pb2.AttrValue(b=True))


def npu_optimizer_scope():
    """What the distributed optimizer wrapper tags its apply_gradients with (`_optimizer`)."""
    return _attr_scope("_optimizer", attr_value_pb2.AttrValue(b=True))


def npu_gradients_scope():
    """What the distributed optimizer wrapper tags its gradient computation with (`_backward`)."""
    return _attr_scope("_backward", attr_value_pb2.AttrValue(b=True))
