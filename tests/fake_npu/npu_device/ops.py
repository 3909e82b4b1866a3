"""`npu_device.ops`: only `gelu`."""

from npu_device._gelu import gelu

__all__ = ["gelu"]
