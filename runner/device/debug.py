"""What each `debug=` option does on each device, in one place.

debug=       NPU (npu_device options, set before open)   GPU / CPU (TensorFlow's nearest tool)
dump         dump_config.enable_dump, dump_path,          tf.debugging.experimental.enable_dump_debug_info
             dump_step, dump_mode                         into debug.dump.path (tensor_debug_mode by mode)
overflow     dump_config.enable_dump_debug,               tf.debugging.enable_check_numerics: the first
             dump_debug_mode                              NaN/Inf stops the run, naming the op
profiling    profiling_config.enable_profiling +          tf.profiler over steps [start_step, +num_steps)
             profiling_options JSON                       into debug.profiling.path (TensorBoard: Profile)
fusion_off   fusion_switch_file                           grappler remapping + arithmetic optimisers off
mixlist      modify_mixlist (allow_mix_precision* only)   no effect (logged)
auto_tune    aoe_config.aoe_mode, work_path               no effect (logged)

The GPU/CPU tools are process-wide TensorFlow state: `tf_debug_tools` switches them off again on
exit, so runs that share a process (multirun with the basic launcher, tests) stay independent.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import tensorflow as tf

from runner.keras2 import keras

log = logging.getLogger(__name__)

# TF records each op's outputs (an op's inputs are its producers' outputs, so input/output
# select the same records): output/input keep a per-tensor health summary (dtype, shape, counts
# of NaN, Inf, negative, zero, positive values); all keeps every value, within TF's circular
# buffer of the last 1000 executions.
TENSOR_DEBUG_MODES = {"input": "FULL_HEALTH", "output": "FULL_HEALTH", "all": "FULL_TENSOR"}
# Grappler passes that fuse ops (conv+bias+activation, matmul+bias, arithmetic rewrites).
FUSION_OPTIMIZERS = ("remapping", "arithmetic_optimization")
NPU_ONLY = ("mixlist", "auto_tune")
# The fusion switch file debug=fusion_off hands the NPU unless debug.fusion_off.file names another:
# the passes the Ascend ModelZoo's TF2 Keras recipes switch off in their configs/fusion_switch.cfg.
SHIPPED_FUSION_SWITCH = Path(__file__).resolve().parents[2] / "conf" / "debug" / "fusion_switch.cfg"


def fusion_switch_file(fusion_off_cfg: Any) -> str:
    return str(fusion_off_cfg.file or SHIPPED_FUSION_SWITCH)


def npu_debug_options(debug_cfg: Any) -> dict[str, Any]:
    """The npu_device options for the enabled debug tools, nested as global_options() nests them."""
    options: dict[str, Any] = {}
    dump = _npu_dump_config(debug_cfg)
    if dump:
        options["dump_config"] = dump
    if debug_cfg.profiling.enabled:
        options["profiling_config"] = {
            "enable_profiling": True,
            "profiling_options": npu_profiling_options(debug_cfg.profiling),
        }
    if debug_cfg.fusion_off.enabled:
        options["fusion_switch_file"] = _absolute(fusion_switch_file(debug_cfg.fusion_off))
    if debug_cfg.mixlist.enabled:
        options["modify_mixlist"] = _absolute(debug_cfg.mixlist.file)
    if debug_cfg.auto_tune.enabled:
        options["aoe_config"] = {
            "aoe_mode": str(debug_cfg.auto_tune.aoe_mode),
            "work_path": _absolute(debug_cfg.auto_tune.path),
        }
    return options


def _npu_dump_config(debug_cfg: Any) -> dict[str, Any]:
    """dump and overflow share dump_config and its one dump_path (dump's path wins when both)."""
    dump, overflow = debug_cfg.dump, debug_cfg.overflow
    config: dict[str, Any] = {}
    if overflow.enabled:
        config.update({
            "enable_dump_debug": True,
            "dump_path": _absolute(overflow.path),
            "dump_debug_mode": str(overflow.mode),
        })
    if dump.enabled:
        if overflow.enabled:
            log.info("debug=dump and overflow share dump_config.dump_path: both go to %s", dump.path)
        config.update({
            "enable_dump": True,
            "dump_path": _absolute(dump.path),
            "dump_step": str(dump.step),
            "dump_mode": str(dump.mode),
        })
    return config


def npu_profiling_options(profiling_cfg: Any) -> str:
    """The profiling_options JSON the Ascend scripts pass, with this run's path and points."""
    return json.dumps({
        "output": _absolute(profiling_cfg.path),
        "training_trace": "on",
        "task_trace": "on",
        "aicpu": "on",
        "aic_metrics": str(profiling_cfg.aic_metrics),
        "fp_point": str(profiling_cfg.fp_point),
        "bp_point": str(profiling_cfg.bp_point),
    })


def _absolute(path: str) -> str:
    """A debug path as both devices get it: `~` expanded, relative to the working directory when
    the run starts (the NPU's adapter would resolve it against its own)."""
    return str(Path(path).expanduser().resolve())


@contextmanager
def tf_debug_tools(debug_cfg: Any, device_type: str) -> Iterator[list[keras.callbacks.Callback]]:
    """Switch on the GPU/CPU equivalents of the enabled debug tools; yield the callbacks to add."""
    if str(device_type) == "npu":  # the NPU's tools are options, set before npu_device.open()
        yield []
        return
    for name in NPU_ONLY:
        if debug_cfg[name].enabled:
            log.info("debug=%s is an NPU option: it has no effect on device=%s", name, device_type)
    with ExitStack() as stack:
        if debug_cfg.dump.enabled:
            stack.enter_context(_dumping(debug_cfg.dump))
        if debug_cfg.overflow.enabled:
            stack.enter_context(_checking_numerics())
        if debug_cfg.fusion_off.enabled:
            stack.enter_context(_grappler_fusion_off())
        profiling = debug_cfg.profiling
        callbacks = []
        if profiling.enabled:
            callbacks.append(ProfileSteps(profiling.path, profiling.start_step, profiling.num_steps))
        yield callbacks


@contextmanager
def _dumping(dump_cfg: Any) -> Iterator[None]:
    mode, path = TENSOR_DEBUG_MODES[str(dump_cfg.mode)], _absolute(dump_cfg.path)  # as the NPU's
    log.info(
        "debug=dump: tf.debugging dump (%s) into %s, every step (debug.dump.step=%s is NPU-only)",
        mode, path, dump_cfg.step,
    )
    tf.debugging.experimental.enable_dump_debug_info(path, tensor_debug_mode=mode)
    try:
        yield
    finally:
        tf.debugging.experimental.disable_dump_debug_info()


@contextmanager
def _checking_numerics() -> Iterator[None]:
    log.info("debug=overflow: tf.debugging.enable_check_numerics (the first NaN/Inf stops the run)")
    tf.debugging.enable_check_numerics()
    try:
        yield
    finally:
        tf.debugging.disable_check_numerics()


@contextmanager
def _grappler_fusion_off() -> Iterator[None]:
    before = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options({name: False for name in FUSION_OPTIMIZERS})
    log.info("debug=fusion_off: grappler %s off", ", ".join(FUSION_OPTIMIZERS))
    try:
        yield
    finally:
        # Unset options are on by default.
        tf.config.optimizer.set_experimental_options(
            {name: before.get(name, True) for name in FUSION_OPTIMIZERS}
        )


class ProfileSteps(keras.callbacks.Callback):
    """The TF profiler over training steps start_step .. start_step+num_steps-1.

    Steps count from 1 across epochs. The trace lands in <path>/plugins/profile/<time>/ for
    TensorBoard's Profile tab (`tensorboard --logdir <path>`).
    """

    def __init__(self, path: str, start_step: int, num_steps: int):
        super().__init__()
        self.path, self.start_step, self.stop_step = path, start_step, start_step + num_steps - 1
        self.step = 0
        self.active = False
        self.traced_steps: list[int] = []  # what the trace really holds, for the log (and tests)

    def on_train_batch_begin(self, batch, logs=None):
        self.step += 1
        if self.step == self.start_step:
            tf.profiler.experimental.start(self.path)
            self.active = True
        if self.active:
            self.traced_steps.append(self.step)

    def on_train_batch_end(self, batch, logs=None):
        if self.active and self.step >= self.stop_step:
            self._stop()

    def on_train_end(self, logs=None):
        if self.active:  # the run had fewer steps than the range
            self._stop()

    def _stop(self) -> None:
        tf.profiler.experimental.stop()
        self.active = False
        log.info("debug=profiling: steps %d-%d traced into %s", self.traced_steps[0],
                 self.traced_steps[-1], self.path)
