"""`npu_device.distribute`: exactly the adapter's six names."""

from npu_device._hccl import (
    all_reduce,
    broadcast,
    grouping_broadcast,
    grouping_gradients_apply,
    npu_distributed_keras_optimizer_wrapper,
    shard_and_rebatch_dataset,
)

__all__ = [
    "all_reduce", "broadcast", "npu_distributed_keras_optimizer_wrapper", "shard_and_rebatch_dataset",
    "grouping_gradients_apply", "grouping_broadcast",
]
