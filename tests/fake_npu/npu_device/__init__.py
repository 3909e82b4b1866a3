"""A fake of `npu_device`, Huawei CANN's TensorFlow 2.x adapter, for tests (branch master).

The real package cannot be installed here (it needs CANN, an Ascend NPU, and binaries built for
TensorFlow 2.6.5). This one has the same public surface and behaves like it wherever a single
CPU-only test process can tell: option names, defaults and validation errors, the environment
variables `open()` reads and the errors it raises, one device per process, the handle, the
no-op/cluster semantics of `npu_device.distribute`, the optimizer wrapper's instance patches,
NpuLossScaleOptimizer's fallback and NPU paths, loop size and saturation mode. Like the real one,
importing it fails with AttributeError under Keras >= 2.9 (TF 2.21's tf.keras is Keras 3).

What it cannot do is faked and documented where it happens: `open()` replaces TensorFlow's eager
context and `as_default()` patches tf.function, tf.device and tf.py_function as the real ones do,
but tf.nn.dropout keeps running TensorFlow's own kernels (the NPU's have no CPU version); other
ranks hold the same values as this one; worker_id comes from RANK_ID instead of HCCL; the device's
overflow flag is derived from the gradients. What happened (options handed to the graph engine,
options changed too late, calls, loop sizes, run-time counters) is kept for tests in the private
module `npu_device._fake`, which the real package does not have.

Top level, as the real `__init__`: open, npu_compat_function, gen_npu_ops, global_options,
set_npu_loop_size, npu_run_context, set_device_sat_mode, is_inf_nan_enabled, keep_dtype_scope,
npu_recompute_scope, and the namespaces distribute, train, ops, compat, configs.
"""

from npu_device._scope import keep_dtype_scope, npu_recompute_scope
from npu_device.npu_device import (
    gen_npu_ops,
    global_options,
    is_inf_nan_enabled,
    npu_compat_function,
    npu_run_context,
    open,
    set_device_sat_mode,
    set_npu_loop_size,
)

# In the real package's order: importing `train` is what fails under a newer Keras.
from npu_device import distribute  # isort: skip
from npu_device import train  # isort: skip
from npu_device import ops  # isort: skip
from npu_device import compat  # isort: skip
from npu_device import configs  # isort: skip

__all__ = [
    "open", "npu_compat_function", "gen_npu_ops", "global_options", "set_npu_loop_size",
    "npu_run_context", "set_device_sat_mode", "is_inf_nan_enabled", "keep_dtype_scope",
    "npu_recompute_scope", "distribute", "train", "ops", "compat", "configs",
]
