"""`npu_device.npu_device`: open the device, the options singleton, loop size and saturation mode.

Faked (there is no NPU, no graph engine and no `_npu_device_backends` here):

- `open()` reads the same environment variables in the same order and raises the same errors as
  the real one, and, as the real one, installs a new, initialised eager context of its own class
  (`_ContextWithDefaultDevice`) unless the current one already is one: whatever was set on the
  previous context (the global seed, thread pools, other tf.config settings) is gone. The options
  it would hand to the graph engine are kept in `_fake.state.open_options`. `worker_id` comes from
  HCCL's get_rank_id() in the real adapter; the fake has no HCCL and takes `int(RANK_ID)` (0 when
  RANK_ID is unset, e.g. in CM mode).
- `NpuDeviceHandle.as_default()` patches TensorFlow as the real one does: `tf.function` and
  `def_function.function` become `npu_compat_function` (jit_compile forced off), a tf.function
  called inside another one has its Python function inlined, `tf.device(...)` is a no-op,
  `tf.py_function` runs on the CPU, and the NPU becomes the context's default device (TensorFlow's
  soft placement runs its ops on the CPU here). It does not swap `tf.nn.dropout` for the NPU's
  DropOutGenMask/DoMask ops, which have no CPU kernels; `_fake.state.as_default_effects` records
  whether the real one would. `_fake.reset()` undoes the patches and puts the previous context
  back, as a fresh process would start. `scope()` enters the NPU device name.
- `set_npu_loop_size()` / `set_device_sat_mode()` check their argument like the pybind11 binding
  (TypeError for a non-integer), log and ignore what the C++ side ignores, and keep the value in
  `_fake.state`. `is_inf_nan_enabled()` reads `_fake.state.sat_mode`.
- `gen_npu_ops` holds only `fast_gelu` (computed with TensorFlow ops); the other NPU ops have no
  CPU version and raise AttributeError.
- `enable_v1()` (switching the process to TF1 with the TF1 adapter) raises NotImplementedError
  after doing what the real one does first (ASCEND_DEVICE_ID set to the opened device).
"""

from __future__ import annotations

import contextlib
import os
import threading

import tensorflow as tf
from tensorflow.python.eager import context, def_function
from tensorflow.python.framework import device as pydev
from tensorflow.python.framework import ops
from tensorflow.python.ops import script_ops

from npu_device import _fake
from npu_device._options import NpuConfig, NpuRunContextOptions

NPU = "/job:localhost/replica:0/task:0/device:NPU"

# --- the C++ side: loop size and device saturation mode -----------------------------------------


def _pybind_int(function: str, value, low: int, high: int, signature: str = "(arg0: int) -> None") -> int:
    """The integer conversion of a pybind11 binding: floats, strings etc. and out-of-range values
    are a TypeError ("incompatible function arguments")."""
    try:
        integer = value.__index__() if not isinstance(value, float) else None
    except (AttributeError, TypeError):
        integer = None
    if integer is None or not low <= integer <= high:
        raise TypeError(
            f"{function}(): incompatible function arguments. The following argument types are "
            f"supported:\n    1. {signature}\n\nInvoked with: {value!r}"
        )
    return integer


def set_npu_loop_size(loop_size):
    """How many iterations one device loop runs (and how many batches it is fed) per call."""
    loop_size = _pybind_int("SetNpuLoopSize", loop_size, -(2**63), 2**63 - 1)
    if loop_size <= 0:
        _fake.log("error", f"Npu loop size must be greater than 0, got {loop_size}")
        return
    _fake.state.loop_size = loop_size
    _fake.state.loop_sizes.append(loop_size)
    _fake.log(
        "info",
        f"Npu loop size is set to {loop_size}, it will take effect in the next training loop",
    )


def set_device_sat_mode(mode):
    """0: saturation mode, 1: INF/NaN mode; above 2 is logged and ignored."""
    mode = _pybind_int("SetDeviceSatMode", mode, 0, 2**32 - 1)
    if mode > 2:
        _fake.log("error", f"overflow mode is unvalid{mode}")
        return
    _fake.state.sat_mode = mode


def is_inf_nan_enabled():
    return _fake.state.sat_mode == 1


# --- global options -------------------------------------------------------------------------------

_global_options = None
_global_options_lock = threading.Lock()


def global_options():
    """The process-wide options, read once by the first successful open()."""
    global _global_options
    if _global_options is None:
        with _global_options_lock:
            if _global_options is None:
                _global_options = NpuConfig()
    return _global_options


# --- tf.function without XLA, and the fake op library -------------------------------------------

def _unpatched(patched):
    """What as_default() replaced (when an earlier import of the fake patched TensorFlow)."""
    return getattr(patched, _fake.ORIGINAL, patched)


# As the real module, which saves them when it is imported.
_hacked_tensorflow_function = _unpatched(def_function.function)
_hacked_def_function_function_call = _unpatched(def_function.Function.__call__)
_thread_local = threading.local()


def npu_compat_function(func=None, *args, **kwargs):
    """tf.function with experimental_compile/jit_compile forced off (the NPU compiles graphs itself)."""

    def never_nested_decorator(f):
        for flag in ("experimental_compile", "jit_compile"):
            if kwargs.get(flag):
                _fake.log("info", f"Skip xla compile tf function {f.__name__} on npu")
                kwargs[flag] = False
        return _hacked_tensorflow_function(*args, **kwargs)(f)

    if func is not None:
        return never_nested_decorator(func)
    return never_nested_decorator


class _GenNpuOps:
    """The op library (`_npu_ops.so`) as far as the CPU can run it."""

    __name__ = "gen_npu_ops"

    @staticmethod
    def fast_gelu(x, name=None):
        """The NPU's FastGelu: x / (1 + exp(-1.702|x|)) * exp(0.851 (x - |x|))."""
        with tf.name_scope(name or "FastGelu"):
            x = tf.convert_to_tensor(x)
            abs_x = tf.abs(x)
            return x / (1 + tf.exp(-1.702 * abs_x)) * tf.exp(0.851 * (x - abs_x))

    def __getattr__(self, name):
        raise AttributeError(f"the fake gen_npu_ops has no CPU version of NPU op {name!r}")


gen_npu_ops = _GenNpuOps()


# --- open() and the device handle ------------------------------------------------------------------

class _ContextWithDefaultDevice(context.Context):
    """The real adapter's eager context: a default device for every thread."""

    def __init__(self, device=""):
        self.__default_device = device
        self.__default_device_spec = pydev.DeviceSpec.from_string(device)  # before super().__init__
        super().__init__()

    @property
    def default_device(self):
        return self.__default_device

    @default_device.setter
    def default_device(self, value):
        self.__default_device = value
        self.__default_device_spec = pydev.DeviceSpec.from_string(value)

    @property
    def _thread_local_data(self):
        if not self.__thread_local_data.device_name:
            self.__thread_local_data.device_name = self.__default_device
            self.__thread_local_data.device_spec = self.__default_device_spec
        return self.__thread_local_data

    @_thread_local_data.setter
    def _thread_local_data(self, value):
        self.__thread_local_data = value


_npu_ctx_lock = threading.Lock()
_npu_device_instances: dict = {}
_global_npu_ctx = None


def global_npu_ctx():
    """The handle `as_default()` was called on, else None."""
    return _global_npu_ctx


def get_ranksize():
    if os.getenv("CM_WORKER_SIZE") is not None and os.getenv("RANK_SIZE") is not None:
        raise ValueError("RANK_SIZE and CM_WORK_SIZE cannot be configured at the same time")
    if os.getenv("RANK_SIZE") is not None:
        return os.getenv("RANK_SIZE")
    return os.getenv("CM_WORKER_SIZE", "1")


def _cm_chief_options(options: dict, chief_ip: str, workers_num: int) -> None:
    port, device = os.getenv("CM_CHIEF_PORT"), os.getenv("CM_CHIEF_DEVICE")
    if not port:
        raise RuntimeError("You must specify cm chief port by set env CM_CHIEF_PORT in distribution mode")
    if not device:
        raise RuntimeError(
            "You must specify cm chief device by set env CM_CHIEF_DEVICE in distribution mode"
        )
    if not chief_ip:
        raise RuntimeError("You must specify cm chief ip by set env CM_CHIEF_IP in distribution mode")
    options["_distribute.cm_chief_ip"] = chief_ip
    options["_distribute.cm_chief_port"] = port
    options["_distribute.cm_chief_worker_device"] = device
    options["_distribute.cm_worker_ip"] = os.getenv("CM_WORKER_IP")
    options["_distribute.cm_worker_size"] = str(workers_num)


def _rank_table_options(options: dict, rank_table: str) -> None:
    rank_id = os.getenv("RANK_ID")
    if not rank_id:
        raise RuntimeError("You must specify rank id by set env RANK_ID in distribution mode")
    options["_distribute.rank_table"] = rank_table
    options["_distribute.rank_id"] = rank_id


def _hccl_rank_id() -> int:
    """The real adapter asks HCCL (hccl.manage.api.get_rank_id()); the fake reads RANK_ID."""
    return int(os.getenv("RANK_ID") or "0")


def open(device_id=None):
    """Open the NPU `device_id` (default $ASCEND_DEVICE_ID, else 0): one device per process."""
    _fake.record("open", device_id=device_id)
    if device_id is None:
        device_id = int(os.getenv("ASCEND_DEVICE_ID", "0"))
    with _npu_ctx_lock:
        if not isinstance(context.context(), _ContextWithDefaultDevice):
            ctx = _ContextWithDefaultDevice()
            ctx.ensure_initialized()
            context._set_context(ctx)
            _npu_device_instances.clear()  # the global context has changed since the last open
        if device_id in _npu_device_instances:
            _fake.log("info", f"Npu instance on device {device_id} already created")
            return _npu_device_instances[device_id]
        if _npu_device_instances:
            raise RuntimeError(
                f"Failed create npu instance on device {device_id} as existed instance on "
                f"{list(_npu_device_instances)}"
            )
        options = global_options().as_dict()
        workers_num = int(get_ranksize())
        if workers_num > 1:
            chief_ip, rank_table = os.getenv("CM_CHIEF_IP"), os.getenv("RANK_TABLE_FILE")
            if chief_ip is not None and rank_table is not None:
                raise RuntimeError("CM_CHIEF_IP and RANK_TABLE_FILE cannot be configured at the same time.")
            if chief_ip is not None:
                _cm_chief_options(options, chief_ip, workers_num)
            elif rank_table is not None:
                _rank_table_options(options, rank_table)
            else:
                raise RuntimeError("CM_CHIEF_IP and RANK_TABLE_FILE are all not be configured.")
        _ = context.context()._handle  # handed to Open(): AssertionError unless initialised
        _pybind_int("Open", device_id, -(2**31), 2**31 - 1, "(ctx, device_name: str, device_id: int, ...)")
        if _fake.state.open_error:
            raise RuntimeError(f"Failed open npu device {device_id} : {_fake.state.open_error}")
        worker_id = _hccl_rank_id() if workers_num > 1 else 0
        handle = NpuDeviceHandle(context.context(), device_id, {}, workers_num, worker_id)
        _npu_device_instances[device_id] = handle
        _fake.state.open_options = options
        return handle


def close():
    """The real one finalizes the graph engine (registered with atexit); nothing to do here."""


def _dropout_replaced() -> bool:
    """as_default() swaps tf.nn.dropout on TF 2.6.2-2.6.999, parsing the version with int() per
    part (so a suffix such as "rc0" raises ValueError, in the real one as here)."""
    version = [int(part) for part in tf.__version__.split(".")]
    return [2, 6, 2] <= version <= [2, 6, 999]


class NpuDeviceHandle:
    def __init__(self, ctx, device_id, device_options, workers_num, worker_id):
        self._ctx = ctx
        self._device_id = device_id
        self._device_name = f"{NPU}:{device_id}"
        self._device_options = device_options
        self.workers_num = workers_num
        self.worker_id = worker_id

    def name(self):
        return self._device_name

    def scope(self):
        @contextlib.contextmanager
        def _scope():
            _fake.record("scope", device=self._device_name)
            with self._ctx.device(self._device_name):  # soft placement: the CPU
                yield

        return _scope()

    def is_cluster_worker(self):
        return self.workers_num > 1 and self.workers_num > self.worker_id >= 0

    def as_default(self):
        """Make this the default device, patching TensorFlow as the real adapter does."""
        global _global_npu_ctx
        _fake.record("as_default", device=self._device_name)

        @contextlib.contextmanager
        def _consistent_with_context_ctx():
            with context.device(self._ctx.device_name):
                yield

        def _device_consistent_with_context(*args, **kwargs):
            return _consistent_with_context_ctx()

        _patch(def_function.Function, "__call__", _never_nested_function_call)
        _patch(def_function, "function", npu_compat_function)
        _patch(tf, "function", npu_compat_function)
        _patch(ops, "device", _device_consistent_with_context)
        _patch(script_ops, "EagerFunc", NpuCompatEagerFunc)
        _patch(tf, "py_function", wrap_cpu_only_api(_unpatched(tf.py_function)))
        self._ctx.default_device = self._device_name
        _global_npu_ctx = self
        _fake.state.as_default_effects = {
            "default_device": self._device_name,
            "graph_engine_warmup": os.getenv("GE_USE_STATIC_MEMORY") == "1",
            "dropout_replaced": _dropout_replaced(),  # recorded only: no CPU kernels
        }
        return self


def _patch(owner, name: str, replacement) -> None:
    """owner.name = replacement, remembering the original for _fake.reset()."""
    setattr(replacement, _fake.ORIGINAL, _unpatched(getattr(owner, name)))
    setattr(owner, name, replacement)


def _never_nested_function_call(self, *func_args, **func_kwargs):
    """Function.__call__ on the NPU: a tf.function called while another is being entered has its
    Python function inlined (falling back to a real call if that raises)."""
    if not hasattr(_thread_local, "entrance_function"):
        _thread_local.entrance_function = None
    if _thread_local.entrance_function is not None:
        _fake.log("info", f"Inlining nested tf function {self._python_function.__name__} under "
                          f"{_thread_local.entrance_function} on npu")
        try:
            return self._python_function(*func_args, **func_kwargs)
        except Exception:
            _fake.log("info", f"Bypass inlining nested tf function {self._python_function.__name__}")
            return _hacked_def_function_function_call(self, *func_args, **func_kwargs)
    _thread_local.entrance_function = self._python_function.__name__
    try:
        return _hacked_def_function_function_call(self, *func_args, **func_kwargs)
    finally:
        _thread_local.entrance_function = None


class NpuCompatEagerFunc(_unpatched(script_ops.EagerFunc)):
    """tf.py_function's body on the device wrap_cpu_only_api chose (the CPU)."""

    def __init__(self, *args, **kwargs):
        self._npu_specific_device = getattr(_thread_local, "npu_specific_device", None)
        super().__init__(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        if self._npu_specific_device:
            with context.device(self._npu_specific_device):
                return super().__call__(*args, **kwargs)
        return super().__call__(*args, **kwargs)


def wrap_cpu_only_api(func):
    def wrapper(*args, **kwargs):
        _thread_local.npu_specific_device = "/job:localhost/replica:0/task:0/device:CPU:0"
        try:
            return func(*args, **kwargs)
        finally:
            _thread_local.npu_specific_device = None

    return wrapper


# --- run context and TF1 compatibility -------------------------------------------------------------


@contextlib.contextmanager
def npu_run_context(options=None):
    if options is not None and not isinstance(options, NpuRunContextOptions):
        raise ValueError("options type must be NpuRunContextOptions")
    if options is None:
        options = NpuRunContextOptions()
    recompute = options.experimental.graph_memory_optimize_config.recompute.value
    _fake.record("npu_run_context", recompute=recompute)
    yield


def enable_v1():
    _fake.record("enable_v1")
    if _npu_device_instances:
        os.environ["ASCEND_DEVICE_ID"] = str(next(iter(_npu_device_instances)))
    raise NotImplementedError(
        "npu_device.compat.enable_v1(): the fake has no TF1 adapter (_tf_adapter.so); it would "
        "also switch the whole process to TF1 behaviour"
    )


class SessionConfigBuilder:
    """`npu_device.compat.v1.SessionConfigBuilder`: a TF1 session config with the NpuOptimizer."""

    def __init__(self, config=None):
        from tensorflow.core.protobuf.rewriter_config_pb2 import RewriterConfig

        if isinstance(config, tf.compat.v1.ConfigProto):
            self._session_config = config
        else:
            self._session_config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
        rewrite_options = self._session_config.graph_options.rewrite_options
        rewrite_options.remapping = RewriterConfig.OFF
        self._npu_config = rewrite_options.custom_optimizers.add()
        self._npu_config.name = "NpuOptimizer"

    @property
    def parameter_map(self):
        return self._npu_config.parameter_map

    @property
    def session_config(self):
        return self._session_config
