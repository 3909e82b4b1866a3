"""`npu_device.compat`: `enable_v1` and `v1`."""

from npu_device.compat import v1
from npu_device.npu_device import enable_v1

__all__ = ["enable_v1", "v1"]
