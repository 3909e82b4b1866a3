"""`npu_device.distribute` (HCCL collectives), as one test process can run them.

The decisions are the real ones: without `as_default()` (no NPU context) or outside a cluster
(`is_cluster_worker()` false) all_reduce returns the very same object and broadcast returns None,
and shard_and_rebatch_dataset returns its arguments untouched unless workers_num > 1.

In a cluster the fake cannot reach the other ranks, so it treats every other rank's value as equal
to this one's and computes what HCCL would return for that: all_reduce "sum" adds N copies,
"prod" multiplies them, "min"/"max" give the value itself, and "mean" is a "sum" scaled by 1/N
(divided by N for integers), exactly the real code path; broadcast assigns the root's value (this
one's) to each variable. The HcomAllReduce op's checks are kept: reductions min/max/prod/sum only,
dtypes int8/16/32/64, float16/32, bfloat16 (no float64). The real runs the reduction and broadcast
bodies as tf.functions; the fake runs them inline (same results, no trace cache to go stale between
tests).

Each call is recorded (`_fake.state.calls`, at trace time) and counted when it runs (`_fake.count`).
grouping_gradients_apply / grouping_broadcast are faked outside a cluster only (where they call
`apply_func` / return the variables); their cluster path raises NotImplementedError.
"""

from __future__ import annotations

import tensorflow as tf

from npu_device import _fake
from npu_device._scope import npu_gradients_scope, npu_optimizer_scope
from npu_device.npu_device import global_npu_ctx

_HCOM_REDUCTIONS = ("min", "max", "prod", "sum")
_HCOM_DTYPES = (tf.int8, tf.int16, tf.int32, tf.int64, tf.float16, tf.float32, tf.bfloat16)


def _cluster_ctx():
    ctx = global_npu_ctx()
    return ctx if ctx is not None and ctx.is_cluster_worker() else None


def _hcom_all_reduce(value, reduction: str, workers_num: int):
    """HcomAllReduce over `workers_num` ranks that all hold `value`."""
    if reduction not in _HCOM_REDUCTIONS:
        raise ValueError(
            f"Attr 'reduction' of 'HcomAllReduce' Op passed string '{reduction}' not in: "
            '"min", "max", "prod", "sum".'
        )
    tensor = tf.convert_to_tensor(value)
    if tensor.dtype not in _HCOM_DTYPES:
        raise TypeError(
            f"Value passed to parameter 'input' has DataType {tensor.dtype.name} not in list of "
            "allowed values: int8, int16, int32, int64, float16, float32, bfloat16"
        )
    if reduction == "sum":
        return tf.add_n([tensor] * workers_num)
    if reduction == "prod":
        result = tensor
        for _ in range(workers_num - 1):
            result = result * tensor
        return result
    return tf.identity(tensor)  # min or max of equal values


def _all_reduce(values, reduction, fusion, fusion_id, group):
    workers_num = global_npu_ctx().workers_num
    mean = reduction == "mean"
    hcom_reduction = "sum" if mean else reduction
    reduced_values = []
    for value in values:
        reduced = _hcom_all_reduce(value, hcom_reduction, workers_num)
        if not mean:
            reduced_values.append(tf.multiply(reduced, tf.cast(1, reduced.dtype)))
        elif reduced.dtype in (tf.float16, tf.float32, tf.float64):
            reduced_values.append(tf.multiply(reduced, tf.cast(1.0 / float(workers_num), reduced.dtype)))
        else:
            reduced_values.append(tf.divide(reduced, tf.cast(workers_num, reduced.dtype)))
    _fake.bump("all_reduce")
    _fake.bump(f"all_reduce.{reduction}")
    _fake.bump("all_reduce.values", len(values))
    return reduced_values


def all_reduce(values, reduction="mean", fusion=1, fusion_id=-1, group="hccl_world_group"):
    """All-reduce across the cluster; outside one, `values` itself is returned."""
    ctx = _cluster_ctx()
    _fake.record(
        "all_reduce", reduction=reduction, fusion=fusion, fusion_id=fusion_id, group=group,
        values=len(values) if isinstance(values, (list, tuple)) else 1, reduced=ctx is not None,
    )
    if ctx is None:
        _fake.log("info", "Skip all reduce as current process is not npu cluster worker")
        _fake.bump("all_reduce.skipped")
        return values
    is_list = isinstance(values, (list, tuple))
    items = list(values) if is_list else [values]
    reduced = _all_reduce([v for v in items if v is not None], reduction, fusion, fusion_id, group)
    results = [None if v is None else reduced.pop(0) for v in items]
    return results if is_list else results[0]


def broadcast(values, root_rank=0, fusion=2, fusion_id=0, group="hccl_world_group"):
    """Assign rank `root_rank`'s value to each variable, in place; returns None."""
    ctx = _cluster_ctx()
    items = values if isinstance(values, (list, tuple)) else [values]
    _fake.record(
        "broadcast", root_rank=root_rank, fusion=fusion, fusion_id=fusion_id, group=group,
        values=len(items), broadcast=ctx is not None,
    )
    if ctx is None:
        _fake.log("info", "Skip broadcast as current process is not npu cluster worker")
        _fake.bump("broadcast.skipped")
        return
    for value in items:
        value.assign(tf.identity(tf.convert_to_tensor(value)))  # the root holds the same value
    _fake.bump("broadcast")
    _fake.bump("broadcast.values", len(items))


def shard_and_rebatch_dataset(dataset, global_bs):
    """(this worker's shard, the per-worker batch size); the caller batches the shard."""
    ctx = global_npu_ctx()
    sharded = ctx is not None and ctx.workers_num > 1
    _fake.record("shard_and_rebatch_dataset", global_bs=global_bs, sharded=sharded)
    if not sharded:
        return dataset, global_bs
    if global_bs % ctx.workers_num != 0:
        raise ValueError(f"Batch size must be divisible by num npus: {ctx.workers_num}")
    batch_size = int(global_bs) / ctx.workers_num
    return dataset.shard(ctx.workers_num, ctx.worker_id), int(batch_size)


def npu_distributed_keras_optimizer_wrapper(
    optimizer, reduce_reduction="mean", fusion=1, fusion_id=-1, group="hccl_world_group"
):
    """Patch THIS optimizer object (instance attributes) so its gradients are all-reduced first.

    As the real one: `apply_gradients` and `_compute_gradients` are replaced, `get_gradient` (sic,
    a typo in the adapter) is added, `get_gradients` and `minimize` are left alone, and the same
    object is returned. An optimizer without `_compute_gradients` raises AttributeError.
    """
    optimizer = tf.keras.optimizers.get(optimizer)
    org_apply_gradients = optimizer.apply_gradients
    org_get_gradients = optimizer.get_gradients
    org_compute_gradients = optimizer._compute_gradients
    _fake.record(
        "npu_distributed_keras_optimizer_wrapper", optimizer=type(optimizer).__name__,
        reduce_reduction=reduce_reduction, fusion=fusion, fusion_id=fusion_id, group=group,
    )
    for name in ("wrapper.apply_gradients", "wrapper.compute_gradients"):
        _fake.counter(name)

    def _npu_distribute_apply_gradients(grads_and_vars, *args, **kwargs):
        grads, variables = zip(*grads_and_vars)
        _fake.bump("wrapper.apply_gradients")
        with npu_optimizer_scope():
            reduced = all_reduce(grads, reduce_reduction, fusion, fusion_id, group)
            return org_apply_gradients(zip(reduced, variables), *args, **kwargs)

    def _npu_get_gradients(*args, **kwargs):
        with npu_gradients_scope():
            return org_get_gradients(*args, **kwargs)

    def _npu_compute_gradients(*args, **kwargs):
        _fake.bump("wrapper.compute_gradients")
        with npu_gradients_scope():
            return org_compute_gradients(*args, **kwargs)

    optimizer.apply_gradients = _npu_distribute_apply_gradients
    optimizer.get_gradient = _npu_get_gradients
    optimizer._compute_gradients = _npu_compute_gradients
    return optimizer


def grouping_gradients_apply(apply_func, grads_and_vars, *args, **kwargs):
    """Each rank applies the gradients of its group of variables, then broadcasts them."""
    ctx = _cluster_ctx()
    _fake.record("grouping_gradients_apply", grouped=ctx is not None)
    if ctx is None:
        return apply_func(grads_and_vars, *args, **kwargs)
    raise NotImplementedError("the fake npu_device does not group weight updates across ranks")


def grouping_broadcast(variables):
    """Broadcast each variable from the rank that owns its group."""
    ctx = _cluster_ctx()
    _fake.record("grouping_broadcast", grouped=ctx is not None)
    if ctx is None:
        _fake.log("info", "Skip grouping broadcast as current process is not npu cluster worker")
        return variables
    raise NotImplementedError("the fake npu_device does not group weight updates across ranks")
