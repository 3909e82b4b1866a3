"""`npu_device.train.optimizer.NpuLossScaleOptimizer`: Keras-2.6 LossScaleOptimizer, NPU-style.

As the real class: a subclass of `tf.keras.mixed_precision.LossScaleOptimizer` (so the parent's
constructor checks apply), a non-trainable bool variable `last_step_finite`, and
`apply_gradients(grads_and_vars, name=None)` without `experimental_aggregate_gradients`. Without
an NPU context (no `as_default()`) or with INF/NaN mode on (`is_inf_nan_enabled()`), it returns
the parent's `apply_gradients`. Otherwise (the NPU path) it skips the parent's gradient
filtering/aggregation, decides from the device's overflow status whether the step is finite
(summed over the cluster with all_reduce when workers_num > 1), updates the dynamic loss scale
(x multiplier after growth_steps finite steps, capped below 3.4e38; / multiplier, at least 1, on
overflow), stores `last_step_finite`, and either applies the gradients through the parent's
private `_apply_gradients` or only increments the inner optimizer's iterations.

Faked: the device's float-overflow status register does not exist on the CPU; the fake derives
it from the gradients (overflow when any gradient is not finite).

Like the real module, this one names `tf.keras.mixed_precision.experimental.LossScaleOptimizer`
when its classes are defined. Keras exports it up to 2.8 only, so `import npu_device` raises
AttributeError with a newer Keras (TF 2.21's tf.keras is Keras 3), as the real package does.
"""

from __future__ import annotations

import tensorflow as tf

# The legacy (tensorflow.python.keras) helpers, as the real module imports them.
from tensorflow.python.keras.mixed_precision.loss_scale_optimizer import (
    _op_in_graph_mode,
    _UnwrapPreventer,
)
from tensorflow.python.util import nest

from npu_device import _fake
from npu_device._hccl import all_reduce
from npu_device.npu_device import global_npu_ctx, is_inf_nan_enabled


def _finite_status(grads):
    """True when the step overflowed nowhere (on a cluster: on no rank)."""
    checks = [tf.reduce_all(tf.math.is_finite(g)) for g in nest.flatten(grads) if g is not None]
    all_finite = tf.reduce_all(checks) if checks else tf.constant(True)
    status = tf.cast(tf.logical_not(all_finite), tf.int32)  # the device's overflow flag
    ctx = global_npu_ctx()
    if ctx and ctx.workers_num > 1:
        return tf.reduce_all(tf.equal(all_reduce([status], "sum", fusion=0), 0))
    return tf.reduce_all(tf.equal(0, [status]))


def _loss_scale_update(m, grads):
    is_finite = _finite_status(grads)

    def update_if_finite_grads():
        def incr_loss_scale():
            incr_result_finite = tf.less(m.current_loss_scale, 3.4e38 / m.multiplier)
            update_if_finite_fn = tf.cond(
                incr_result_finite,
                lambda: _op_in_graph_mode(m.current_loss_scale.assign(m.current_loss_scale * m.multiplier)),
                tf.no_op,
            )
            return tf.group(update_if_finite_fn, m.counter.assign(0))

        return tf.cond(
            m.counter + 1 >= m.growth_steps,
            incr_loss_scale,
            lambda: _op_in_graph_mode(m.counter.assign_add(1)),
        )

    def update_if_not_finite_grads():
        new_loss_scale = tf.maximum(m.current_loss_scale / m.multiplier, 1)
        return tf.group(m.counter.assign(0), m.current_loss_scale.assign(new_loss_scale))

    update_op = tf.cond(is_finite, update_if_finite_grads, update_if_not_finite_grads)
    return update_op, is_finite


def _new_last_step_finite():
    for name in ("loss_scale.npu_path", "loss_scale.fallback", "loss_scale.skipped_steps"):
        _fake.counter(name)
    return tf.Variable(False, name="npu_last_step_finite", dtype=tf.bool, trainable=False)


def _apply_gradients(self, parent_apply_gradients, grads_and_vars, name):
    """The shared body of both classes' apply_gradients."""
    if global_npu_ctx() is None or is_inf_nan_enabled():
        _fake.record("NpuLossScaleOptimizer.apply_gradients", path="parent")
        _fake.bump("loss_scale.fallback")
        return parent_apply_gradients(grads_and_vars, name)
    _fake.record("NpuLossScaleOptimizer.apply_gradients", path="npu")
    _fake.bump("loss_scale.npu_path")

    grads_and_vars = tuple(grads_and_vars)  # may be a zip, iterable once
    grads = [g for g, _ in grads_and_vars]

    def apply_fn():
        wrapped_vars = _UnwrapPreventer([v for _, v in grads_and_vars])
        return self._apply_gradients(grads, wrapped_vars, name)

    def do_not_apply_fn():
        _fake.bump("loss_scale.skipped_steps")
        return self._optimizer.iterations.assign_add(1, read_value=False)

    if self.dynamic:
        loss_scale_update_op, should_apply_grads = _loss_scale_update(self._loss_scale, grads)
    else:
        loss_scale_update_op = tf.no_op()
        should_apply_grads = _finite_status(grads)
    self._last_step_finite.assign(should_apply_grads)
    maybe_apply_op = tf.__internal__.smart_cond.smart_cond(should_apply_grads, apply_fn, do_not_apply_fn)
    return tf.group(maybe_apply_op, loss_scale_update_op)


class _NpuPath:
    """What both classes add to their Keras parent: `last_step_finite` and the NPU path."""

    @property
    def last_step_finite(self):
        return self._last_step_finite

    def apply_gradients(self, grads_and_vars, name=None):
        return _apply_gradients(self, super().apply_gradients, grads_and_vars, name)


class NpuLossScaleOptimizer(_NpuPath, tf.keras.mixed_precision.LossScaleOptimizer):
    _HAS_AGGREGATE_GRAD = True

    def __init__(self, inner_optimizer, dynamic=True, initial_scale=None, dynamic_growth_steps=None):
        super().__init__(inner_optimizer, dynamic, initial_scale, dynamic_growth_steps)
        self._last_step_finite = _new_last_step_finite()


class NpuExperimentalLossScaleOptimizer(_NpuPath, tf.keras.mixed_precision.experimental.LossScaleOptimizer):
    """The same for the deprecated experimental class (not exported by the adapter either)."""

    def __init__(self, optimizer, loss_scale):
        super().__init__(optimizer, loss_scale)
        self._last_step_finite = _new_last_step_finite()
