"""`npu_device.configs`: `run_context_options` and `experimental` (an empty namespace)."""

from npu_device._options import NpuRunContextOptions as run_context_options
from npu_device.configs import experimental

__all__ = ["run_context_options", "experimental"]
