"""Test-only side of the fake `npu_device`: what the real adapter keeps in C++ or on the device.

Not part of the adapter's API (the real package has no `_fake` module); tests use it as

    from npu_device import _fake

    _fake.reset()                  # a fresh process (after setting the environment it reads)
    ...run the code under test...
    _fake.state.opened             # the handle the successful open() returned, else None
    _fake.count("all_reduce")      # how many times a collective RAN (not how often it was traced)

`reset()` gives the state of a freshly started process: new `global_options()`, nothing opened, no
NPU context, TensorFlow's own eager context, tf.function, tf.device and tf.py_function back (as
they were before `open()` and `as_default()` replaced them), nothing recorded, and the npu loop
size read again from `NPU_LOOP_SIZE` (the real library reads it once, when it loads: default 1; a
value <= 0 logs an error and 1 is used; a non-integer is ignored, 1). Delete `npu_device*` from
sys.modules as well to forget everything module-level.

`state` (one object for the whole import; `reset()` clears it in place):

- `opened`: the NpuDeviceHandle of the successful `open()`, or None. `npu_ctx`: what
  `npu_device.npu_device.global_npu_ctx()` returns (set by `as_default()`).
- `open_options`: the dict the graph engine received at the successful `open()`:
  `global_options().as_dict()` taken at that moment (flat, leaf names, strings) plus the private
  `_distribute.*` keys a cluster run adds (rank table and rank id, or the CM chief settings).
- `mutated_after_open`: dotted names (e.g. "dump_config.dump_path") of options of
  `global_options()` assigned successfully after `open()`: the real adapter ignores those
  silently, and so does the fake, but a test can assert the list is empty.
- `open_error`: set it to a message to make the next `open()` fail as when the graph engine
  refuses its options: RuntimeError "Failed open npu device <id> : <message>".
- `loop_size`: the current npu loop size; `loop_sizes`: every value `set_npu_loop_size()` accepted,
  in order (values <= 0 are logged and ignored, as by the real one).
- `sat_mode`: the device's float-overflow mode (0 saturation, 1 INF/NaN; -1 stands for a failed
  query). It starts at 0, as on an Atlas training (910A-class) device; `set_device_sat_mode()`
  changes it and `is_inf_nan_enabled()` reads it.
- `as_default_effects`: what the last `as_default()` did or, where the CPU cannot, would have done:
  `default_device` (the NPU device name, now the context's default), `dropout_replaced` (True on
  TF 2.6.2-2.6.999, where the real one swaps tf.nn.dropout for NPU ops; the fake does not) and
  `graph_engine_warmup` (GE_USE_STATIC_MEMORY == "1").
- `calls`: `Call(name, args, in_graph)` for each API call, appended when the Python code runs,
  that is ONCE PER TRACE inside a tf.function (Keras's train_function), with `in_graph` telling
  which. Names: "open", "as_default", "scope", "all_reduce", "broadcast",
  "shard_and_rebatch_dataset", "npu_distributed_keras_optimizer_wrapper",
  "grouping_gradients_apply", "grouping_broadcast", "NpuLossScaleOptimizer.apply_gradients",
  "npu_run_context", "enable_v1". `calls_named(name)` filters them.
- `RECORD_ENV`: when this environment variable names a file, the process writes `summary()` there as
  JSON when it exits, so a test can read what a `python -m runner` subprocess did with the fake.
  `{pid}` in the name becomes the process's id (a sweep's job processes share one environment).
- `log`: (level, message) of what the real adapter only logs (ignored loop sizes and sat modes,
  skipped collectives, jit_compile forced off, ...).
- `counters`: run-time counters, int64 tf.Variables created eagerly (under tf.init_scope) and
  incremented with assign_add in the code path they count, so inside a tf.function they count
  executions. Read them with `count(name)` (0 when never created) or `counts()`:
  - "all_reduce": all_reduce calls that reduced (a cluster worker); "all_reduce.<reduction>" the same
    per reduction ("all_reduce.mean", "all_reduce.sum", ...); "all_reduce.values": tensors reduced;
    "all_reduce.skipped": calls that returned their input (not a cluster worker).
  - "broadcast", "broadcast.values", "broadcast.skipped": the same for broadcast().
  - "wrapper.apply_gradients" / "wrapper.compute_gradients": runs of the methods
    npu_distributed_keras_optimizer_wrapper() patched in (the wrapped apply_gradients reduces its
    gradients with all_reduce, then hands the result to the original apply_gradients).
  - "loss_scale.npu_path" / "loss_scale.fallback": NpuLossScaleOptimizer.apply_gradients runs
    through the NPU path or the parent Keras path; "loss_scale.skipped_steps": NPU-path steps
    whose gradients were not finite (weights left alone).
  Note that the NpuLossScaleOptimizer's NPU path sum-all-reduces its overflow status on a
  cluster, as the real one does: that run counts under "all_reduce" and "all_reduce.sum" too.
"""

from __future__ import annotations

import atexit
import gc
import json
import logging
import os
import re
from typing import Any, NamedTuple

import tensorflow as tf

_log = logging.getLogger("npu_device")


class Call(NamedTuple):
    name: str
    args: dict
    in_graph: bool


class FakeState:
    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.log: list[tuple[str, str]] = []
        self.calls: list[Call] = []
        self.open_options: dict[str, str] | None = None
        self.mutated_after_open: list[str] = []
        self.open_error: str | None = None
        self.loop_size: int = _loop_size_from_env(self)
        self.loop_sizes: list[int] = []
        self.sat_mode: int = 0
        self.as_default_effects: dict[str, Any] = {}
        self.counters: dict[str, tf.Variable] = {}

    @property
    def opened(self):
        from npu_device import npu_device as impl

        return next(iter(impl._npu_device_instances.values()), None)

    @property
    def npu_ctx(self):
        from npu_device import npu_device as impl

        return impl.global_npu_ctx()

    def calls_named(self, name: str) -> list[Call]:
        return [call for call in self.calls if call.name == name]


def _loop_size_from_env(target: FakeState) -> int:
    """As the real library's static initializer reads NPU_LOOP_SIZE when it loads."""
    try:
        loop_size = int(os.environ.get("NPU_LOOP_SIZE", "1"))
    except ValueError:
        return 1
    if loop_size <= 0:
        log(
            "error",
            f"Npu loop size must be greater than 0, got {loop_size} set by env 'NPU_LOOP_SIZE'",
            target,
        )
        return 1
    return loop_size


def log(level: str, message: str, target: FakeState | None = None) -> None:
    (target or state).log.append((level, message))
    _log.log(logging.ERROR if level == "error" else logging.INFO, message)


state = FakeState()

# The attribute under which as_default() keeps what each of its patches replaced, so that reset()
# restores it even after the fake was imported again.
ORIGINAL = "_fake_npu_original"
# TensorFlow's eager context as the process started it, kept on TensorFlow's context module (which
# outlives imports of the fake) for reset(): open(), or code run before it, may install another.
_PROCESS_CONTEXT = "_fake_npu_process_context"


def _patched_places() -> list[tuple[Any, str]]:
    from tensorflow.python.eager import def_function
    from tensorflow.python.framework import ops
    from tensorflow.python.ops import script_ops

    return [(def_function.Function, "__call__"), (def_function, "function"), (tf, "function"),
            (ops, "device"), (script_ops, "EagerFunc"), (tf, "py_function")]


def _restore_tensorflow() -> None:
    """Undo as_default()'s patches and open()'s new eager context."""
    from tensorflow.python.eager import context

    for owner, name in _patched_places():
        setattr(owner, name, getattr(getattr(owner, name), ORIGINAL, getattr(owner, name)))
    process_context = getattr(context, _PROCESS_CONTEXT)
    if context.context() is not process_context:
        gc.collect()  # functions traced in the NPU's context are deleted from it, not the next one
        context._set_context(process_context)


def _remember_the_process_context() -> None:
    from tensorflow.python.eager import context

    if not hasattr(context, _PROCESS_CONTEXT):
        setattr(context, _PROCESS_CONTEXT, context.context())


_remember_the_process_context()


def reset() -> None:
    """A freshly started process: see the module docstring."""
    from npu_device import npu_device as impl

    _restore_tensorflow()
    impl._global_options = None
    impl._npu_device_instances.clear()
    impl._global_npu_ctx = None
    state.clear()


def record(name: str, **args: Any) -> None:
    state.calls.append(Call(name, args, not tf.executing_eagerly()))


def counter(name: str) -> tf.Variable:
    """The run-time counter `name`, created eagerly even when first needed inside a trace."""
    variable = state.counters.get(name)
    if variable is None:
        with tf.init_scope():
            variable = tf.Variable(
                0, dtype=tf.int64, trainable=False, name="fake_npu_" + re.sub(r"\W", "_", name),
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
        state.counters[name] = variable
    return variable


def bump(name: str, by: int = 1):
    """Count one run of this code path (an op inside a tf.function, so it counts executions)."""
    return counter(name).assign_add(tf.constant(by, tf.int64), read_value=False)


def count(name: str) -> int:
    variable = state.counters.get(name)
    return 0 if variable is None else int(variable.numpy())


def counts() -> dict[str, int]:
    return {name: int(variable.numpy()) for name, variable in sorted(state.counters.items())}


def option_assigned(config: Any, key: str) -> None:
    """Called by the option objects after a successful assignment."""
    from npu_device import npu_device as impl

    root = impl._global_options
    if root is None or state.opened is None:
        return
    path = _path_in(root, config, ())
    if path is not None:
        state.mutated_after_open.append(".".join((*path, key)))


def _path_in(node: Any, target: Any, prefix: tuple[str, ...]) -> tuple[str, ...] | None:
    if node is target:
        return prefix
    for name in node._fixed_attrs:
        child = node.__dict__[name]
        if hasattr(child, "_fixed_attrs"):
            found = _path_in(child, target, (*prefix, name))
            if found is not None:
                return found
    return None


RECORD_ENV = "FAKE_NPU_RECORD"


def summary() -> dict[str, Any]:
    """What a test of another process needs: the opened device, its options, loop sizes, counters."""
    opened = state.opened
    return {
        "opened": None if opened is None else {
            "name": opened.name(), "workers_num": opened.workers_num, "worker_id": opened.worker_id,
        },
        "as_default": state.npu_ctx is not None,
        "open_options": state.open_options,
        "mutated_after_open": state.mutated_after_open,
        "loop_sizes": state.loop_sizes,
        "calls": [call.name for call in state.calls],
        "counts": counts(),
    }


def _write_summary(path: str) -> None:
    with open(path, "w") as file:
        json.dump(summary(), file, indent=1)


if os.environ.get(RECORD_ENV):
    atexit.register(_write_summary, os.environ[RECORD_ENV].replace("{pid}", str(os.getpid())))
