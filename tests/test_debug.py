"""The GPU/CPU side of each debug flag: real TensorFlow tools leaving their real artefacts."""

import logging
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from runner.device.debug import FUSION_OPTIMIZERS, npu_debug_options, tf_debug_tools
from runner.keras2 import keras
from tests.conftest import compose_config


def debug_cfg(overrides, tmp_path):
    return compose_config(overrides, tmp_path).debug


def fit_a_small_model(callbacks, steps=4, epochs=1):
    """A few real Keras training steps (a Dense model: the tools, not DenseNet, are under test)."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = np.random.default_rng(0).random((8 * steps, 4)), np.zeros(8 * steps, np.int64)
    model.fit(x, y, batch_size=8, epochs=epochs, callbacks=callbacks, verbose=0)


def test_debug_options_compose_as_a_list_with_overrides(tmp_path):
    cfg = debug_cfg([
        "debug=[dump,overflow,profiling]", "debug.dump.path=/data/dump", 'debug.dump.step="0|5|10-20"',
        "debug.dump.mode=all", "debug.profiling.path=/data/prof", "debug.profiling.start_step=2",
    ], tmp_path)
    assert (cfg.dump.enabled, cfg.overflow.enabled, cfg.profiling.enabled) == (True, True, True)
    assert not (cfg.fusion_off.enabled or cfg.mixlist.enabled or cfg.auto_tune.enabled)
    assert (cfg.dump.path, cfg.dump.step, cfg.dump.mode) == ("/data/dump", "0|5|10-20", "all")
    assert (cfg.profiling.path, cfg.profiling.start_step) == ("/data/prof", 2)


def test_dump_writes_tfdbg_files_with_executions(tmp_path):
    cfg = debug_cfg(["debug=dump", f"debug.dump.path={tmp_path}/dump"], tmp_path)
    with tf_debug_tools(cfg, "cpu") as callbacks:
        assert callbacks == []
        fit_a_small_model(callbacks)
    executions = list((tmp_path / "dump").glob("*.execution"))
    assert executions and executions[0].stat().st_size > 0
    assert list((tmp_path / "dump").glob("*.graph_execution_traces"))


@pytest.mark.parametrize("path", ["dumps/here", "~/dumps/here"])
def test_the_dump_path_is_made_absolute_alike_on_every_device(path, tmp_path, monkeypatch):
    """A relative debug.dump.path starts from the working directory on the NPU (its adapter gets
    an absolute one) and on GPU/CPU alike: TensorFlow's dumper gets the same absolute folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = str(tmp_path / "dumps" / "here")
    cfg = debug_cfg(["debug=dump", f"debug.dump.path='{path}'"], tmp_path)
    assert npu_debug_options(cfg)["dump_config"]["dump_path"] == expected
    dumped_into = []
    enable = tf.debugging.experimental.enable_dump_debug_info

    def recording(dump_root, **kwargs):
        dumped_into.append(dump_root)
        return enable(dump_root, **kwargs)

    monkeypatch.setattr(tf.debugging.experimental, "enable_dump_debug_info", recording)
    with tf_debug_tools(cfg, "cpu") as callbacks:
        fit_a_small_model(callbacks, steps=1)
    assert dumped_into == [expected]
    assert list(Path(expected).glob("*.execution"))


@pytest.mark.parametrize(("mode", "recorded"), [("output", "FULL_HEALTH"), ("input", "FULL_HEALTH"),
                                               ("all", "FULL_TENSOR")])
def test_dump_mode_picks_tensorflows_tensor_debug_mode(mode, recorded, tmp_path):
    """docs/devices.md: debug.dump.mode=output/input -> FULL_HEALTH, all -> FULL_TENSOR (within
    TensorFlow's buffer of the last 1000 executions), read back with TensorFlow's own reader."""
    import inspect

    from tensorflow.core.protobuf import debug_event_pb2
    from tensorflow.python.debug.lib.debug_events_reader import DebugDataReader

    cfg = debug_cfg(["debug=dump", f"debug.dump.path={tmp_path}/dump", f"debug.dump.mode={mode}"],
                    tmp_path)
    with tf_debug_tools(cfg, "cpu") as callbacks:
        fit_a_small_model(callbacks, steps=1)
    with DebugDataReader(str(tmp_path / "dump")) as reader:
        reader.update()
        modes = {trace.tensor_debug_mode for trace in reader.graph_execution_traces()}
    assert modes == {debug_event_pb2.TensorDebugMode.Value(recorded)}
    buffer = inspect.signature(tf.debugging.experimental.enable_dump_debug_info).parameters
    assert buffer["circular_buffer_size"].default == 1000


def test_overflow_stops_at_the_first_nan_and_is_off_afterwards(tmp_path):
    """docs/devices.md: the first op producing NaN/Inf stops the run with its name."""
    cfg = debug_cfg(["debug=overflow"], tmp_path)
    with tf_debug_tools(cfg, "cpu"):
        with pytest.raises(tf.errors.InvalidArgumentError, match="(?i)nan") as raised:
            tf.math.log(tf.constant(-1.0))
    assert '"Log"' in str(raised.value)
    assert np.isnan(tf.math.log(tf.constant(-1.0)).numpy())


def test_profiling_traces_the_step_range_into_the_profiling_path(tmp_path):
    cfg = debug_cfg([
        "debug=profiling", f"debug.profiling.path={tmp_path}/prof", "debug.profiling.start_step=2",
        "debug.profiling.num_steps=2",
    ], tmp_path)
    with tf_debug_tools(cfg, "cpu") as callbacks:
        fit_a_small_model(callbacks, steps=2, epochs=2)  # steps count from 1 across epochs
    assert callbacks[0].traced_steps == [2, 3] and not callbacks[0].active
    assert callbacks[0].step == 4  # the run went on, untraced
    assert list((tmp_path / "prof" / "plugins" / "profile").rglob("*.xplane.pb"))


def test_fusion_off_turns_grappler_fusion_off_then_restores_it(tmp_path):
    cfg = debug_cfg(["debug=fusion_off"], tmp_path)
    before = tf.config.optimizer.get_experimental_options()
    with tf_debug_tools(cfg, "gpu"):
        during = tf.config.optimizer.get_experimental_options()
        assert all(during[name] is False for name in FUSION_OPTIMIZERS)
    after = tf.config.optimizer.get_experimental_options()
    assert all(after.get(name, True) == before.get(name, True) for name in FUSION_OPTIMIZERS)


def test_npu_only_tools_say_they_do_nothing_here(tmp_path, caplog):
    cfg = debug_cfg(["debug=[mixlist,auto_tune]", "precision=allow_mix_precision"], tmp_path)
    with caplog.at_level(logging.INFO), tf_debug_tools(cfg, "cpu") as callbacks:
        assert callbacks == []
    assert "debug=mixlist is an NPU option: it has no effect on device=cpu" in caplog.text
    assert "debug=auto_tune is an NPU option" in caplog.text


def test_on_the_npu_the_tools_are_options_not_tensorflow_state(tmp_path):
    cfg = debug_cfg(["debug=[overflow,fusion_off,profiling]"], tmp_path)
    with tf_debug_tools(cfg, "npu") as callbacks:
        assert callbacks == []
        assert tf.config.optimizer.get_experimental_options().get("remapping", True) is True
        assert np.isnan(tf.math.log(tf.constant(-1.0)).numpy())
