"""`npu_device.compat.v1`: only `SessionConfigBuilder`."""

from npu_device.npu_device import SessionConfigBuilder

__all__ = ["SessionConfigBuilder"]
