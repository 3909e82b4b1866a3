"""`npu_device.train`: only `optimizer`."""

from npu_device.train import optimizer

__all__ = ["optimizer"]
