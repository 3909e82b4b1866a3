"""npu_device.distribute as one process sees it: collectives are no-ops that record their calls.

The adapter's functions skip unless the process is a cluster worker (RANK_SIZE>1 with a rank
table); a single test process cannot reach other ranks, so here they record and return their
input unchanged, while the dataset is sharded exactly as the adapter shards it.
"""

calls: list[tuple] = []


def _cluster():
    import npu_device

    handle = npu_device.last_opened
    return handle if handle is not None and handle.is_cluster_worker() else None


def all_reduce(values, reduction="mean", fusion=1, fusion_id=-1, group="hccl_world_group"):
    calls.append(("all_reduce", reduction, _cluster() is not None))
    return values


def broadcast(values, root_rank=0, fusion=2, fusion_id=0, group="hccl_world_group"):
    count = len(values) if isinstance(values, list | tuple) else 1
    calls.append(("broadcast", root_rank, count, _cluster() is not None))


def shard_and_rebatch_dataset(dataset, global_bs):
    cluster = _cluster()
    calls.append(("shard_and_rebatch_dataset", global_bs, cluster is not None))
    if cluster is None:
        return dataset, global_bs
    if global_bs % cluster.workers_num != 0:
        raise ValueError(f"Batch size must be divisible by num npus: {cluster.workers_num}")
    return dataset.shard(cluster.workers_num, cluster.worker_id), global_bs // cluster.workers_num


def npu_distributed_keras_optimizer_wrapper(optimizer, reduce_reduction="mean", fusion=1,
                                            fusion_id=-1, group="hccl_world_group"):
    """Patch apply_gradients to all-reduce the gradients first, as the adapter does."""
    calls.append(("npu_distributed_keras_optimizer_wrapper", type(optimizer).__name__))
    original = optimizer.apply_gradients

    def apply_reduced_gradients(grads_and_vars, *args, **kwargs):
        grads, variables = zip(*grads_and_vars, strict=True)
        reduced = all_reduce(list(grads), reduce_reduction, fusion, fusion_id, group)
        return original(zip(reduced, variables, strict=True), *args, **kwargs)

    optimizer.apply_gradients = apply_reduced_gradients
    return optimizer
