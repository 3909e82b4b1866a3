"""`npu_device.train.optimizer`: only `NpuLossScaleOptimizer`."""

from npu_device._loss_scale import NpuLossScaleOptimizer

__all__ = ["NpuLossScaleOptimizer"]
