"""The fake npu_device (tests/fake_npu) behaves like CANN's TF 2.x adapter, branch master.

A runner mistake must fail against the fake as it would on an Ascend machine, so the fake is held
to the real adapter's behaviour here: its surface, the option tree and its exact errors, open()'s
environment reads, the handle, npu_device.distribute with and without a cluster, the optimizer
wrapper's patches, NpuLossScaleOptimizer, loop size and saturation mode. The fake imports only
with Keras <= 2.8 (the Ascend stack, TF 2.6.5), like the real package; on the default stack
(TF 2.21, Keras 3) the one test that runs checks that importing it fails the same way.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import FAKE_NPU_DIR, fake_npu_installed

pytestmark = pytest.mark.ascend_stack  # also in the Ascend stack's CI subset



def _major_minor(version: str) -> tuple[int, int]:
    major, minor = re.findall(r"\d+", version)[:2]
    return int(major), int(minor)


TF_VERSION = _major_minor(tf.__version__)
KERAS_VERSION = _major_minor(getattr(tf.keras, "__version__", "3.0"))
FAKE_IMPORTS = KERAS_VERSION < (2, 9)  # Keras 2.9 dropped mixed_precision.experimental


@pytest.fixture
def npu():
    """The fake, imported afresh as a new process would, with no NPU environment variables set.

    Every test but the import-failure one uses it, so they all skip where the fake cannot import."""
    if not FAKE_IMPORTS:
        pytest.skip(f"npu_device (and its fake) import only with Keras <= 2.8, not {tf.keras.__version__}")
    with fake_npu_installed() as npu_device:
        yield npu_device


def cluster_env(monkeypatch, tmp_path, size=2, rank=1):
    monkeypatch.setenv("RANK_SIZE", str(size))
    monkeypatch.setenv("RANK_ID", str(rank))
    monkeypatch.setenv("RANK_TABLE_FILE", str(tmp_path / "rank_table.json"))


def public(namespace) -> set[str]:
    return {name for name in vars(namespace) if not name.startswith("_")}


# --- the default stack: the import fails as the real one's does ---------------------------------


@pytest.mark.skipif(TF_VERSION < (2, 16), reason="tf.keras is Keras 3 from TF 2.16 on")
@pytest.mark.slow
def test_import_fails_with_attribute_error_under_keras_3():
    script = f"import sys; sys.path.insert(0, {str(FAKE_NPU_DIR)!r}); import npu_device"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("AttributeError:") and "experimental" in last_line, result.stderr


# --- surface ----------------------------------------------------------------------------------------


def test_top_level_surface_is_the_adapters(npu):
    assert public(npu) >= {
        "open", "global_options", "set_npu_loop_size", "set_device_sat_mode", "is_inf_nan_enabled",
        "keep_dtype_scope", "npu_recompute_scope", "npu_run_context", "npu_compat_function",
        "gen_npu_ops", "distribute", "train", "ops", "compat", "configs", "npu_device",
    }
    assert not hasattr(npu, "global_npu_ctx")  # only in npu_device.npu_device
    impl = npu.npu_device
    for name in ("open", "global_options", "set_npu_loop_size", "set_device_sat_mode",
                 "is_inf_nan_enabled", "npu_run_context", "npu_compat_function", "gen_npu_ops"):
        assert getattr(npu, name) is getattr(impl, name)
    assert impl.global_npu_ctx() is None


def test_namespaces_hold_exactly_the_adapters_names(npu):
    assert public(npu.distribute) == {
        "all_reduce", "broadcast", "npu_distributed_keras_optimizer_wrapper",
        "shard_and_rebatch_dataset", "grouping_gradients_apply", "grouping_broadcast",
    }
    assert public(npu.train) == {"optimizer"}
    assert public(npu.train.optimizer) == {"NpuLossScaleOptimizer"}
    assert public(npu.ops) == {"gelu"}
    assert public(npu.compat) == {"enable_v1", "v1"}
    assert public(npu.compat.v1) == {"SessionConfigBuilder"}
    assert public(npu.configs) == {"run_context_options", "experimental"}
    assert public(npu.configs.experimental) == set()


@pytest.mark.parametrize(("path", "signature"), [
    ("open", "(device_id=None)"),
    ("global_options", "()"),
    ("set_npu_loop_size", "(loop_size)"),
    ("set_device_sat_mode", "(mode)"),
    ("is_inf_nan_enabled", "()"),
    ("keep_dtype_scope", "()"),
    ("npu_recompute_scope", "()"),
    ("npu_run_context", "(options=None)"),
    ("distribute.all_reduce",
     "(values, reduction='mean', fusion=1, fusion_id=-1, group='hccl_world_group')"),
    ("distribute.broadcast", "(values, root_rank=0, fusion=2, fusion_id=0, group='hccl_world_group')"),
    ("distribute.npu_distributed_keras_optimizer_wrapper",
     "(optimizer, reduce_reduction='mean', fusion=1, fusion_id=-1, group='hccl_world_group')"),
    ("distribute.shard_and_rebatch_dataset", "(dataset, global_bs)"),
    ("train.optimizer.NpuLossScaleOptimizer",
     "(inner_optimizer, dynamic=True, initial_scale=None, dynamic_growth_steps=None)"),
    ("train.optimizer.NpuLossScaleOptimizer.apply_gradients", "(self, grads_and_vars, name=None)"),
])
def test_signatures(npu, path, signature):
    target = npu
    for part in path.split("."):
        target = getattr(target, part)
    assert str(inspect.signature(target)) == signature


# --- global_options() ----------------------------------------------------------------------------

DEFAULT_OPTIONS = {
    "graph_run_mode": "1", "op_compiler_cache_mode": "enable", "hcom_parallel": "1",
    "is_tailing_optimization": "0", "enable_exception_dump": "2", "enable_dump": "0",
    "dump_mode": "output", "enable_dump_debug": "0", "dump_debug_mode": "all", "dump_data": "tensor",
    "work_path": "./", "enable_profiling": "0", "enable_small_channel": "0", "deterministic": "0",
    "overflow_flag": "1", "stream_sync_timeout": "-1", "event_sync_timeout": "-1",
    "external_weight": "0", "atomic_clean_policy": "0", "static_memory_policy": "0",
    "jit_compile": "auto", "logical_device_cluster_deploy_mode": "LB", "enable_graph_parallel": "0",
}

OPTION_TREE = {
    "": [
        "graph_run_mode", "graph_memory_max_size", "variable_memory_max_size",
        "variable_format_optimize", "enable_scope_fusion_passes", "fusion_switch_file",
        "precision_mode", "op_select_implmode", "optypelist_for_implmode", "op_compiler_cache_mode",
        "op_compiler_cache_dir", "stream_max_parallel_num", "ac_parallel_enable", "hcom_parallel",
        "hcom_multi_mode", "is_tailing_optimization", "op_debug_level", "op_debug_config",
        "debug_dir", "modify_mixlist", "enable_exception_dump", "dump_config", "aoe_config",
        "profiling_config", "enable_small_channel", "deterministic", "op_precision_mode",
        "graph_exec_timeout", "topo_sorting_mode", "customize_dtypes", "overflow_flag",
        "stream_sync_timeout", "event_sync_timeout", "external_weight", "memory_config",
        "jit_compile", "graph_compiler_cache_dir", "experimental", "precision_mode_v2",
    ],
    "dump_config": [
        "enable_dump", "dump_path", "dump_step", "dump_mode", "enable_dump_debug", "dump_debug_mode",
        "dump_data", "dump_layer",
    ],
    "aoe_config": ["aoe_mode", "work_path", "aoe_config_file"],
    "profiling_config": ["enable_profiling", "profiling_options"],
    "memory_config": ["atomic_clean_policy", "static_memory_policy"],
    "experimental": [
        "multi_branches_config", "logical_device_deploy_config", "model_deploy_config",
        "graph_memory_optimize_config", "resource_config_path", "graph_parallel_option_path",
        "enable_graph_parallel",
    ],
    "experimental.multi_branches_config": ["input_shape", "dynamic_node_type", "dynamic_dims"],
    "experimental.logical_device_deploy_config": [
        "logical_device_cluster_deploy_mode", "logical_device_id",
    ],
    "experimental.model_deploy_config": ["model_deploy_mode", "model_deploy_devicelist"],
    "experimental.graph_memory_optimize_config": ["recompute", "graph_slice"],
}


def _config(options, path: str):
    for part in filter(None, path.split(".")):
        options = getattr(options, part)
    return options


def test_global_options_is_one_object_whose_options_read_as_strings(npu):
    options = npu.global_options()
    assert npu.global_options() is options
    assert options.deterministic.value == "0" and options.hcom_parallel.value == "1"
    assert options.precision_mode.value is None  # master: no default precision mode
    assert options.aoe_config.aoe_mode.value is None and options.aoe_config.work_path.value == "./"
    assert options.stream_sync_timeout.value == "-1"
    assert options.memory_config.static_memory_policy.optional == [0, 1, 2]


@pytest.mark.parametrize("path", OPTION_TREE)
def test_option_tree_names_are_the_adapters(npu, path):
    assert _config(npu.global_options(), path)._fixed_attrs == OPTION_TREE[path]


def test_there_is_no_auto_tune_mode_in_master(npu):
    options = npu.global_options()
    with pytest.raises(AttributeError):
        options.auto_tune_mode  # noqa: B018
    with pytest.raises(ValueError, match="^NpuConfig has no option auto_tune_mode, all options"):
        options.auto_tune_mode = "RL,GA"


def test_default_as_dict_is_flat_with_24_leaf_keys(npu):
    options = npu.global_options().as_dict()
    assert len(options) == 24
    profiling = options.pop("profiling_options")
    assert options == DEFAULT_OPTIONS
    assert profiling.startswith('{"output":".\\/","training_trace":"on"') and " " * 45 in profiling


@pytest.mark.parametrize(("path", "value", "error", "message"), [
    ("deterministic", "1", TypeError, "Expected int, got str"),
    ("deterministic", 2, ValueError, "'2' not in optional list [0, 1]"),
    ("hcom_parallel", "true", TypeError, "Expected bool, got str"),
    ("is_tailing_optimization", 2, TypeError, "Expected bool, got int"),
    ("precision_mode", "bad", ValueError, "'bad' not in optional list ['force_fp32', "),
    ("precision_mode", 1, ValueError, "'1' not in optional list ['force_fp32', "),
    ("jit_compile", True, TypeError, "Expected str, got bool"),
    ("jit_compile", "True", ValueError, "'True' not in optional list ['true', 'false', 'auto']"),
    ("dump_config.dump_mode", 1, TypeError, "Expected str, got int"),
    ("aoe_config.aoe_mode", 1, ValueError, "'1' not in optional list ['1', '2', '4']"),
    ("aoe_config.aoe_mode", 2, ValueError, "'2' not in optional list ['1', '2', '4']"),
    ("graph_run_mode", 2, ValueError, "'2' not in optional list [0, 1]"),
    ("memory_config.static_memory_policy", 3, ValueError, "'3' not in optional list [0, 1, 2]"),
    ("experimental.graph_memory_optimize_config.recompute", "all", ValueError,
     "'all' not in optional list ['auto', 'manual']"),
    ("op_compiler_cache_mode", "enabel", ValueError, "'enabel' not in optional list ['enable', "),
    ("enable_exception_dump", "1", TypeError, "Expected int, got str"),
    ("ac_parallel_enable", 1, ValueError, "'1' not in optional list ['0', '1']"),  # default None
    ("experimental.logical_device_deploy_config.logical_device_cluster_deploy_mode", 1, TypeError,
     "Expected str, got int"),
    ("experimental.enable_graph_parallel", "yes", TypeError, "Expected bool, got str"),
    ("foo", 1, ValueError, "NpuConfig has no option foo, all options ['graph_run_mode', "),
    ("static_memory_policy", 1, ValueError, "NpuConfig has no option static_memory_policy"),  # nested
    ("dump_config.dump_pth", "/tmp", ValueError, "NpuDumpConfig has no option dump_pth, all options"),
    ("profiling_config.enable_profile", True, ValueError,
     "NpuProfilingConfig has no option enable_profile, all options"),
])
def test_refused_values_raise_the_adapters_errors(npu, path, value, error, message):
    *parents, name = path.split(".")
    config = _config(npu.global_options(), ".".join(parents))
    with pytest.raises(error) as raised:
        setattr(config, name, value)
    assert type(raised.value) is error and str(raised.value).startswith(message)


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("deterministic", True, "1"),
    ("deterministic", 1, "1"),
    ("hcom_parallel", 1, "1"),
    ("hcom_parallel", 0, "0"),
    ("dump_config.enable_dump", 1, "1"),
    ("dump_config.enable_dump", True, "1"),
    ("is_tailing_optimization", False, "0"),
    ("precision_mode", "allow_mix_precision", "allow_mix_precision"),
    ("aoe_config.aoe_mode", "2", "2"),
    ("topo_sorting_mode", None, None),
    ("dump_config.dump_step", 10, "10"),  # free-form options accept anything
    ("dump_config.dump_path", Path("/tmp/dump"), "/tmp/dump"),
    ("stream_sync_timeout", "later", "later"),
    ("graph_memory_max_size", 3.5, "3.5"),
    ("memory_config.atomic_clean_policy", True, "1"),
    ("op_compiler_cache_mode", "force", "force"),
    ("experimental.graph_memory_optimize_config.graph_slice", "auto", "auto"),
])
def test_accepted_values_read_back_as_strings(npu, path, value, expected):
    *parents, name = path.split(".")
    config = _config(npu.global_options(), ".".join(parents))
    setattr(config, name, value)
    assert getattr(config, name).value == expected


def test_as_dict_is_keyed_by_leaf_names_and_skips_unset_and_replaced_configs(npu):
    options = npu.global_options()
    options.precision_mode = "force_fp16"
    options.dump_config.dump_path = "/tmp/dump"
    options.experimental.graph_memory_optimize_config.recompute = "auto"
    flat = options.as_dict()
    assert (flat["precision_mode"], flat["dump_path"], flat["recompute"]) == (
        "force_fp16", "/tmp/dump", "auto",
    )
    assert "dump_config" not in flat and "graph_slice" not in flat
    options.memory_config = {"atomic_clean_policy": 1}  # replaced unchecked, then ignored
    flat = options.as_dict()
    assert "atomic_clean_policy" not in flat and "static_memory_policy" not in flat


def test_deprecated_options_print_a_warning_when_read(npu, capsys):
    options = npu.global_options()
    options.op_debug_level = 1
    options.variable_format_optimize = True
    assert capsys.readouterr().out == ""
    flat = options.as_dict()
    assert (flat["op_debug_level"], flat["variable_format_optimize"]) == ("1", "1")
    assert capsys.readouterr().out.splitlines() == [
        "[warning][tf_adapter] Option 'variable_format_optimize' is deprecated and will be removed in "
        "future version. Please do not configure this option in the future.",
        "[warning][tf_adapter] Option 'op_debug_level' is deprecated and will be removed in future "
        "version. Please use 'op_debug_config' instead.",
    ]


def test_run_context_options_are_their_own_tree(npu):
    options = npu.configs.run_context_options()
    assert options._fixed_attrs == ["experimental"]
    options.experimental.graph_memory_optimize_config.recompute = "manual"
    with npu.npu_run_context(options):
        pass
    with npu.npu_run_context():
        pass
    assert [call.args for call in npu._fake.state.calls_named("npu_run_context")] == [
        {"recompute": "manual"}, {"recompute": None},
    ]
    with pytest.raises(ValueError, match="^options type must be NpuRunContextOptions$"):
        with npu.npu_run_context(npu.global_options()):
            pass
    assert npu._fake.state.mutated_after_open == []


# --- open() ----------------------------------------------------------------------------------------


def test_open_takes_the_options_once_and_ignores_later_changes(npu, capsys):
    fake = npu._fake
    options = npu.global_options()
    options.precision_mode = "allow_mix_precision"
    options.op_debug_level = 2
    expected = options.as_dict()
    capsys.readouterr()
    handle = npu.open()
    assert "Option 'op_debug_level' is deprecated" in capsys.readouterr().out  # as_dict() at open
    assert fake.state.open_options == expected and fake.state.opened is handle
    assert expected["precision_mode"] == "allow_mix_precision"
    options.precision_mode = "force_fp32"  # no error, as on the device, but recorded
    options.dump_config.dump_path = "/tmp/late"
    options.experimental.graph_memory_optimize_config.recompute = "auto"
    with pytest.raises(ValueError):
        options.dump_config.dump_mode = "every"  # still validated; not recorded
    assert fake.state.open_options == expected
    assert fake.state.mutated_after_open == [
        "precision_mode", "dump_config.dump_path", "experimental.graph_memory_optimize_config.recompute",
    ]
    assert npu.open() is handle and fake.state.open_options == expected


def test_open_reads_ascend_device_id_only_without_an_explicit_id(npu, monkeypatch):
    monkeypatch.setenv("ASCEND_DEVICE_ID", "3")
    handle = npu.open()
    assert handle.name() == "/job:localhost/replica:0/task:0/device:NPU:3"
    assert npu.open(3) is handle and npu.open() is handle
    with pytest.raises(RuntimeError) as raised:
        npu.open(0)
    assert str(raised.value) == "Failed create npu instance on device 0 as existed instance on [3]"


def test_an_explicit_id_beats_ascend_device_id_and_a_bad_value_is_a_value_error(npu, monkeypatch):
    monkeypatch.setenv("ASCEND_DEVICE_ID", "one")
    assert npu.open(1).name().endswith("NPU:1")
    npu._fake.reset()
    with pytest.raises(ValueError):
        npu.open()
    assert npu._fake.state.opened is None


def test_rank_size_and_cm_worker_size_together_are_refused(npu, monkeypatch):
    monkeypatch.setenv("RANK_SIZE", "1")
    monkeypatch.setenv("CM_WORKER_SIZE", "1")
    with pytest.raises(ValueError) as raised:
        npu.open()
    assert str(raised.value) == "RANK_SIZE and CM_WORK_SIZE cannot be configured at the same time"
    assert npu._fake.state.opened is None and npu._fake.state.open_options is None


@pytest.mark.parametrize(("env", "message"), [
    ({}, "CM_CHIEF_IP and RANK_TABLE_FILE are all not be configured."),
    ({"RANK_TABLE_FILE": "rt.json", "CM_CHIEF_IP": "10.0.0.1", "RANK_ID": "0"},
     "CM_CHIEF_IP and RANK_TABLE_FILE cannot be configured at the same time."),
    ({"RANK_TABLE_FILE": "rt.json"}, "You must specify rank id by set env RANK_ID in distribution mode"),
    ({"RANK_TABLE_FILE": "rt.json", "RANK_ID": ""},
     "You must specify rank id by set env RANK_ID in distribution mode"),
    ({"CM_CHIEF_IP": "10.0.0.1", "CM_CHIEF_DEVICE": "0"},
     "You must specify cm chief port by set env CM_CHIEF_PORT in distribution mode"),
    ({"CM_CHIEF_IP": "10.0.0.1", "CM_CHIEF_PORT": "29688"},
     "You must specify cm chief device by set env CM_CHIEF_DEVICE in distribution mode"),
])
def test_a_cluster_needs_a_rank_table_xor_a_cm_chief(npu, monkeypatch, env, message):
    monkeypatch.setenv("RANK_SIZE", "2")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(RuntimeError) as raised:
        npu.open()
    assert str(raised.value) == message and npu._fake.state.opened is None


def test_one_worker_reads_no_cluster_variable(npu, monkeypatch):
    for name, value in (("RANK_SIZE", "1"), ("RANK_TABLE_FILE", "rt.json"), ("CM_CHIEF_IP", "x")):
        monkeypatch.setenv(name, value)
    handle = npu.open()
    assert (handle.workers_num, handle.worker_id, handle.is_cluster_worker()) == (1, 0, False)
    assert not any(key.startswith("_distribute.") for key in npu._fake.state.open_options)


def test_a_rank_table_cluster_passes_the_rank_to_the_graph_engine(npu, monkeypatch, tmp_path):
    cluster_env(monkeypatch, tmp_path, size=8, rank=5)
    handle = npu.open()
    assert (handle.workers_num, handle.worker_id, handle.is_cluster_worker()) == (8, 5, True)
    options = npu._fake.state.open_options
    assert options["_distribute.rank_table"] == str(tmp_path / "rank_table.json")
    assert options["_distribute.rank_id"] == "5"


def test_a_cm_cluster_passes_the_chief_to_the_graph_engine(npu, monkeypatch):
    for name, value in (("CM_WORKER_SIZE", "4"), ("CM_CHIEF_IP", "10.0.0.1"), ("CM_CHIEF_PORT", "29688"),
                        ("CM_CHIEF_DEVICE", "0"), ("CM_WORKER_IP", "10.0.0.2")):
        monkeypatch.setenv(name, value)
    handle = npu.open()
    assert (handle.workers_num, handle.worker_id) == (4, 0)  # no RANK_ID: the fake's rank is 0
    options = npu._fake.state.open_options
    assert {k: v for k, v in options.items() if k.startswith("_distribute.")} == {
        "_distribute.cm_chief_ip": "10.0.0.1", "_distribute.cm_chief_port": "29688",
        "_distribute.cm_chief_worker_device": "0", "_distribute.cm_worker_ip": "10.0.0.2",
        "_distribute.cm_worker_size": "4",
    }


def test_a_graph_engine_failure_is_a_runtime_error(npu):
    npu._fake.state.open_error = "dump_path does not exist"
    with pytest.raises(RuntimeError) as raised:
        npu.open(2)
    assert str(raised.value) == "Failed open npu device 2 : dump_path does not exist"
    assert npu._fake.state.opened is None


# --- the handle --------------------------------------------------------------------------------------


def test_the_handle_api(npu):
    handle = npu.open()
    assert npu.npu_device.global_npu_ctx() is None and npu._fake.state.npu_ctx is None
    assert handle.as_default() is handle
    assert npu.npu_device.global_npu_ctx() is handle
    assert npu._fake.state.as_default_effects == {
        "default_device": "/job:localhost/replica:0/task:0/device:NPU:0",
        "graph_engine_warmup": False, "dropout_replaced": True,  # TF 2.6.5
    }
    with handle.scope():
        assert float(tf.constant(2.0) * 3) == 6.0  # soft placement: the CPU
    handle.workers_num, handle.worker_id = 4, 3
    assert handle.is_cluster_worker()
    handle.worker_id = 4
    assert not handle.is_cluster_worker()
    handle.workers_num, handle.worker_id = 1, 0
    assert not handle.is_cluster_worker()
    assert [call.name for call in npu._fake.state.calls] == ["open", "as_default", "scope"]


def _seeded_draw() -> list[float]:
    return tf.random.uniform([3]).numpy().tolist()


def test_open_installs_a_new_eager_context_so_earlier_settings_are_gone(npu):
    """As the real open(): a new, initialised context; the seed and thread pools set before are
    lost, and thread pools can no longer be set (TensorFlow fixes them when a context starts)."""
    from tensorflow.python.eager import context

    before = context.context()
    tf.random.set_seed(42)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    npu.open()
    assert context.context() is not before
    assert tf.config.threading.get_intra_op_parallelism_threads() == 0
    with pytest.raises(RuntimeError, match="cannot be modified after initialization"):
        tf.config.threading.set_intra_op_parallelism_threads(1)
    unseeded = _seeded_draw()
    tf.random.set_seed(42)  # after open(): it holds
    seeded = _seeded_draw()
    assert npu.open() is npu._fake.state.opened and context.context() is not before  # kept once open
    npu._fake.reset()
    assert context.context() is before
    npu.open()
    tf.random.set_seed(42)
    assert _seeded_draw() == seeded != unseeded


def test_as_default_rebinds_tf_function_ignores_tf_device_and_inlines_nested_functions(npu):
    from tensorflow.python.eager import context

    original_function = tf.function
    inner = tf.function(lambda x: x * 2)  # created before as_default(), as Keras' own functions are
    outer_before = tf.function(lambda x: inner(x) + 1)
    assert int(outer_before(tf.constant(1))) == 3 and inner.experimental_get_tracing_count() == 1

    handle = npu.open().as_default()
    assert tf.function is npu.npu_compat_function
    assert tf.function(jit_compile=True)(lambda x: x)._jit_compile is False
    nested = tf.function(lambda x: x * 3)
    outer = tf.function(lambda x: nested(x) + 1)
    assert int(outer(tf.constant(1))) == 4
    assert nested.experimental_get_tracing_count() == 0  # inlined into outer's graph
    assert context.context().device_name == handle.name()  # the NPU is the default device
    with tf.device("/job:localhost/replica:0/task:0/device:CPU:0"):  # a no-op now
        assert context.context().device_name == handle.name()

    npu._fake.reset()  # a fresh process: TensorFlow as it was
    assert tf.function is original_function
    with tf.device("/job:localhost/replica:0/task:0/device:CPU:0"):
        assert context.context().device_name.endswith("CPU:0")


def test_npu_compat_function_forces_jit_compile_off(npu):
    function = npu.npu_compat_function(jit_compile=True)(lambda x: x + 1)
    assert function._jit_compile is False and int(function(tf.constant(1))) == 2
    assert int(npu.npu_compat_function(lambda x: x * 2)(tf.constant(3))) == 6


def test_reset_is_a_fresh_process(npu, monkeypatch, tmp_path):
    cluster_env(monkeypatch, tmp_path)
    options = npu.global_options()
    npu.open().as_default()
    npu.distribute.all_reduce([tf.constant(1.0)])
    npu.set_npu_loop_size(4)
    npu._fake.reset()
    state = npu._fake.state
    assert npu.global_options() is not options and state.opened is None and state.npu_ctx is None
    assert (state.calls, state.counters, state.loop_size, state.loop_sizes) == ([], {}, 1, [])
    assert npu.open(1).name().endswith(":1")


# --- distribute outside a cluster: no-ops -------------------------------------------------------------


@pytest.mark.parametrize("as_default", [False, True])
def test_distribute_is_a_no_op_outside_a_cluster(npu, monkeypatch, tmp_path, as_default):
    if as_default:  # one worker, NPU context set
        npu.open().as_default()
    else:  # a cluster environment, but as_default() was never called
        cluster_env(monkeypatch, tmp_path, size=4)
        npu.open()
    grads = [tf.constant([1.0, 2.0]), None]
    assert npu.distribute.all_reduce(grads) is grads
    single = tf.constant(3)
    assert npu.distribute.all_reduce(single, "sum") is single
    variable = tf.Variable(5.0)
    assert npu.distribute.broadcast([variable]) is None and float(variable) == 5.0
    dataset, global_bs = tf.data.Dataset.range(8), 8.0  # not even converted to int
    shard, batch = npu.distribute.shard_and_rebatch_dataset(dataset, global_bs)
    assert shard is dataset and batch is global_bs
    assert npu._fake.count("all_reduce.skipped") == 2 and npu._fake.count("all_reduce") == 0
    assert npu._fake.count("broadcast.skipped") == 1


def test_grouping_outside_a_cluster(npu):
    variables = [tf.Variable(1.0)]
    assert npu.distribute.grouping_broadcast(variables) is variables
    seen = []

    def apply(grads_and_vars, *args):
        seen.append((grads_and_vars, args))
        return "applied"

    assert npu.distribute.grouping_gradients_apply(apply, "grads_and_vars", 1) == "applied"
    assert seen == [("grads_and_vars", (1,))]


# --- distribute in a cluster: the real semantics, other ranks holding this rank's values --------------


@pytest.fixture
def cluster(npu, monkeypatch, tmp_path):
    cluster_env(monkeypatch, tmp_path, size=4, rank=1)
    return npu.open().as_default()


def test_all_reduce_in_a_cluster(npu, cluster):
    reduce = npu.distribute.all_reduce
    grads = (tf.constant([1.0, 2.0]), None, tf.constant(3.0))
    mean = reduce(grads)
    assert isinstance(mean, list) and mean[1] is None  # a tuple comes back as a list
    np.testing.assert_allclose(mean[0], [1.0, 2.0])
    np.testing.assert_allclose(mean[2], 3.0)
    assert float(reduce(tf.constant(3.0), "sum")) == 12.0  # a single value stays single
    assert float(reduce(tf.constant(3.0), "prod")) == 81.0
    assert float(reduce(tf.constant(3.0), "max")) == 3.0
    integer_mean = reduce([tf.constant(6)])[0]
    assert integer_mean.dtype == tf.float64 and float(integer_mean) == 6.0  # sum / N
    overflow = reduce([tf.constant(40000.0, tf.float16)])[0]  # 4 x 40000 overflows float16
    assert np.isinf(overflow.numpy())  # mean = sum x 1/N, not the value returned as it is
    assert npu._fake.count("all_reduce") == 6 and npu._fake.count("all_reduce.values") == 7
    assert npu._fake.count("all_reduce.mean") == 3 and npu._fake.count("all_reduce.skipped") == 0


def test_all_reduce_keeps_the_ops_checks(npu, cluster):
    with pytest.raises(TypeError, match="DataType float64 not in list of allowed values"):
        npu.distribute.all_reduce([tf.constant(1.0, tf.float64)])
    with pytest.raises(ValueError, match="Attr 'reduction' of 'HcomAllReduce' Op passed string 'avg'"):
        npu.distribute.all_reduce([tf.constant(1.0)], "avg")


def test_broadcast_assigns_every_element_in_a_cluster(npu, cluster):
    variables = [tf.Variable([1.0, 2.0]), tf.Variable(3)]
    assert npu.distribute.broadcast(variables) is None
    np.testing.assert_allclose(variables[0].numpy(), [1.0, 2.0])
    npu.distribute.broadcast(variables[1], root_rank=2)
    assert npu._fake.count("broadcast") == 2 and npu._fake.count("broadcast.values") == 3
    assert npu._fake.state.calls_named("broadcast")[1].args["root_rank"] == 2
    with pytest.raises(AttributeError):
        npu.distribute.broadcast([tf.constant(1.0)])  # elements must have .assign


def test_shard_and_rebatch_in_a_cluster(npu, cluster):
    dataset = tf.data.Dataset.range(16)
    shard, batch = npu.distribute.shard_and_rebatch_dataset(dataset, 8)
    assert batch == 2 and isinstance(batch, int)
    assert list(shard.as_numpy_iterator()) == [1, 5, 9, 13]  # rank 1 of 4, not batched
    with pytest.raises(ValueError) as raised:
        npu.distribute.shard_and_rebatch_dataset(dataset, 6)
    assert str(raised.value) == "Batch size must be divisible by num npus: 4"


# --- the distributed optimizer wrapper -----------------------------------------------------------------


def test_the_wrapper_patches_the_instance_and_returns_it(npu):
    optimizer = tf.keras.optimizers.SGD(0.1)
    class_dict = dict(vars(type(optimizer)))
    wrapped = npu.distribute.npu_distributed_keras_optimizer_wrapper(optimizer)
    assert wrapped is optimizer
    patched = set(vars(optimizer)) & {"apply_gradients", "_compute_gradients", "get_gradient",
                                      "get_gradients", "minimize", "_aggregate_gradients"}
    assert patched == {"apply_gradients", "_compute_gradients", "get_gradient"}  # sic: get_gradient
    assert dict(vars(type(optimizer))) == class_dict  # the class is untouched


def test_the_wrapper_gets_the_optimizer_first(npu):
    sgd = npu.distribute.npu_distributed_keras_optimizer_wrapper("sgd")
    assert isinstance(sgd, tf.keras.optimizers.SGD) and "apply_gradients" in vars(sgd)
    adam = npu.distribute.npu_distributed_keras_optimizer_wrapper({"class_name": "Adam", "config": {}})
    assert isinstance(adam, tf.keras.optimizers.Adam)
    call = npu._fake.state.calls_named("npu_distributed_keras_optimizer_wrapper")[0]
    assert call.args == {"optimizer": "SGD", "reduce_reduction": "mean", "fusion": 1, "fusion_id": -1,
                         "group": "hccl_world_group"}


def test_the_wrapper_needs_compute_gradients(npu):
    legacy = tf.compat.v1.train.GradientDescentOptimizer(0.1)  # tf.keras wraps it in a TFOptimizer
    with pytest.raises(AttributeError, match="_compute_gradients"):
        npu.distribute.npu_distributed_keras_optimizer_wrapper(legacy)


def test_the_wrapped_apply_gradients(npu, cluster):
    optimizer = npu.distribute.npu_distributed_keras_optimizer_wrapper(tf.keras.optimizers.SGD(1.0))
    variable = tf.Variable([1.0, 1.0])
    optimizer.apply_gradients(zip([tf.constant([0.5, 0.25])], [variable]), name="step")
    np.testing.assert_allclose(variable.numpy(), [0.5, 0.75])  # the mean of 4 equal gradients
    with pytest.raises(ValueError):
        optimizer.apply_gradients([])  # zip(*[]) cannot unpack
    assert npu._fake.count("wrapper.apply_gradients") == 1 and npu._fake.count("all_reduce.values") == 1


def _dense_model(seed_weights=True):
    model = tf.keras.Sequential([tf.keras.layers.Dense(1, input_shape=(2,))])
    if seed_weights:
        model.set_weights([np.array([[0.5], [-0.5]], np.float32), np.array([0.1], np.float32)])
    return model


DATA = (np.arange(24, dtype=np.float32).reshape(12, 2) / 10, np.arange(12, dtype=np.float32).reshape(12, 1))


def _fit(model, optimizer, epochs=2, **compile_kwargs):
    model.compile(optimizer=optimizer, loss="mse", **compile_kwargs)
    model.fit(*DATA, batch_size=4, epochs=epochs, shuffle=False, verbose=0)  # 3 steps an epoch
    return model


def test_keras_training_all_reduces_once_per_step_at_run_time(npu, cluster):
    reference = _fit(_dense_model(), tf.keras.optimizers.SGD(0.01)).get_weights()
    optimizer = npu.distribute.npu_distributed_keras_optimizer_wrapper(tf.keras.optimizers.SGD(0.01))
    model = _fit(_dense_model(), optimizer)
    fake = npu._fake
    assert int(optimizer.iterations) == 6
    assert fake.count("wrapper.apply_gradients") == 6 and fake.count("wrapper.compute_gradients") == 6
    assert fake.count("all_reduce") == 6 and fake.count("all_reduce.values") == 6 * 2  # kernel, bias
    traced = fake.state.calls_named("all_reduce")
    assert traced and len(traced) < 6 and all(call.in_graph and call.args["reduced"] for call in traced)
    for weights, expected in zip(model.get_weights(), reference):  # mean of equal gradients
        np.testing.assert_allclose(weights, expected, rtol=1e-6)


def test_keras_training_outside_a_cluster_skips_at_run_time(npu):
    npu.open().as_default()
    optimizer = npu.distribute.npu_distributed_keras_optimizer_wrapper(tf.keras.optimizers.SGD(0.01))
    _fit(_dense_model(), optimizer, steps_per_execution=3)
    assert npu._fake.count("all_reduce.skipped") == 6 and npu._fake.count("all_reduce") == 0
    assert npu._fake.count("wrapper.apply_gradients") == 6


# --- NpuLossScaleOptimizer -----------------------------------------------------------------------------


def test_loss_scale_optimizer_is_keras_2_6s_with_its_checks(npu):
    lso_class = npu.train.optimizer.NpuLossScaleOptimizer
    assert issubclass(lso_class, tf.keras.mixed_precision.LossScaleOptimizer)
    lso = lso_class(tf.keras.optimizers.SGD(0.1))
    assert lso.dynamic and float(lso.loss_scale) == 2.0**15
    flag = lso.last_step_finite
    assert isinstance(flag, tf.Variable) and flag.dtype == tf.bool and not flag.trainable
    assert not bool(flag) and flag.name.startswith("npu_last_step_finite")
    with pytest.raises(TypeError, match="must be an instance of"):
        lso_class("sgd")
    with pytest.raises(TypeError, match='"dynamic" argument .* must be a bool'):
        lso_class(tf.keras.optimizers.SGD(), dynamic="yes")
    with pytest.raises(ValueError, match='"initial_scale" must be specified'):
        lso_class(tf.keras.optimizers.SGD(), dynamic=False)
    with pytest.raises(TypeError, match="cannot wrap another"):
        lso_class(lso)
    with pytest.raises(TypeError, match="experimental_aggregate_gradients"):
        lso.apply_gradients([], experimental_aggregate_gradients=False)


@pytest.mark.parametrize("inf_nan_mode", [False, True])
def test_loss_scale_optimizer_falls_back_to_keras(npu, inf_nan_mode):
    if inf_nan_mode:  # NPU context set, but the device is in INF/NaN mode
        npu.open().as_default()
        npu.set_device_sat_mode(1)
    lso = npu.train.optimizer.NpuLossScaleOptimizer(tf.keras.optimizers.SGD(1.0))
    variable = tf.Variable([1.0])
    lso.apply_gradients([(tf.constant([0.5]), variable)])
    assert float(variable[0]) == 0.5 and not bool(lso.last_step_finite)  # only the NPU path sets it
    assert npu._fake.count("loss_scale.fallback") == 1 and npu._fake.count("loss_scale.npu_path") == 0
    assert npu._fake.state.calls_named("NpuLossScaleOptimizer.apply_gradients")[0].args == {"path": "parent"}


def test_loss_scale_optimizer_npu_path(npu):
    npu.open().as_default()
    inner = tf.keras.optimizers.SGD(1.0)
    lso = npu.train.optimizer.NpuLossScaleOptimizer(inner, initial_scale=8, dynamic_growth_steps=2)
    variable = tf.Variable([1.0, 1.0])
    lso.apply_gradients([(tf.constant([0.5, 0.5]), variable)])
    assert bool(lso.last_step_finite) and float(lso.loss_scale) == 8.0
    lso.apply_gradients(zip([tf.constant([0.5, 0.5])], [variable]))
    np.testing.assert_allclose(variable.numpy(), [0.0, 0.0])
    assert float(lso.loss_scale) == 16.0  # x2 after growth_steps finite steps
    lso.apply_gradients([(tf.constant([np.inf, 1.0]), variable)])
    np.testing.assert_allclose(variable.numpy(), [0.0, 0.0])  # not applied
    assert not bool(lso.last_step_finite) and float(lso.loss_scale) == 8.0
    assert int(inner.iterations) == 3
    fake = npu._fake
    assert (fake.count("loss_scale.npu_path"), fake.count("loss_scale.skipped_steps")) == (3, 1)


def test_fixed_loss_scale_npu_path(npu):
    npu.open().as_default()
    lso = npu.train.optimizer.NpuLossScaleOptimizer(tf.keras.optimizers.SGD(1.0), dynamic=False,
                                                   initial_scale=4)
    variable = tf.Variable([1.0])
    lso.apply_gradients([(tf.constant([np.nan]), variable)])
    assert float(variable[0]) == 1.0 and not bool(lso.last_step_finite) and float(lso.loss_scale) == 4.0


def test_keras_mixed_precision_training_through_the_npu_path_and_the_wrapper(npu, cluster):
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        lso = npu.train.optimizer.NpuLossScaleOptimizer(tf.keras.optimizers.SGD(0.01))
        optimizer = npu.distribute.npu_distributed_keras_optimizer_wrapper(lso)
        model = _fit(_dense_model(seed_weights=False), optimizer)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")
    assert model.optimizer is lso  # compile keeps a LossScaleOptimizer as it is
    fake = npu._fake
    assert fake.count("loss_scale.npu_path") == 6 and fake.count("loss_scale.fallback") == 0
    assert fake.count("all_reduce.mean") == 6  # the gradients
    assert fake.count("all_reduce.sum") == 6  # the overflow status, summed over the ranks
    skipped = fake.count("loss_scale.skipped_steps")  # float16 gradients x 2**15 overflow at first
    assert 1 <= skipped < 6 and float(lso.loss_scale) == 2.0 ** (15 - skipped)
    assert int(lso.iterations) == 6  # skipped steps count too


# --- loop size, saturation mode, ops ------------------------------------------------------------------


def test_npu_loop_size(npu):
    state = npu._fake.state
    assert state.loop_size == 1
    npu.set_npu_loop_size(4)
    npu.set_npu_loop_size(0)
    npu.set_npu_loop_size(-2)
    npu.set_npu_loop_size(np.int64(2))
    assert (state.loop_size, state.loop_sizes) == (2, [4, 2])
    assert ("error", "Npu loop size must be greater than 0, got -2") in state.log
    for bad in (2.0, "2", None):
        with pytest.raises(TypeError, match="incompatible function arguments"):
            npu.set_npu_loop_size(bad)


@pytest.mark.parametrize(("env", "loop_size", "logged"), [("8", 8, False), ("0", 1, True), ("x", 1, False)])
def test_npu_loop_size_env_is_read_at_load(npu, monkeypatch, env, loop_size, logged):
    monkeypatch.setenv("NPU_LOOP_SIZE", env)
    npu._fake.reset()
    assert npu._fake.state.loop_size == loop_size
    assert bool(npu._fake.state.log) == logged


def test_device_sat_mode(npu):
    assert npu.is_inf_nan_enabled() is False
    npu.set_device_sat_mode(1)
    assert npu.is_inf_nan_enabled() is True
    npu.npu_device.set_device_sat_mode(3)  # ignored, logged
    assert npu.is_inf_nan_enabled() is True and ("error", "overflow mode is unvalid3") in npu._fake.state.log
    npu.set_device_sat_mode(0)
    assert npu.is_inf_nan_enabled() is False
    for bad in (-1, 1.0, "1"):
        with pytest.raises(TypeError, match="incompatible function arguments"):
            npu.set_device_sat_mode(bad)
    npu._fake.state.sat_mode = -1  # a failed query
    assert npu.is_inf_nan_enabled() is False


def test_attribute_scopes_tag_graph_nodes(npu):
    with tf.Graph().as_default() as graph:
        with npu.keep_dtype_scope():
            kept = tf.constant(1.0, name="kept")
        with npu.npu_recompute_scope():
            recomputed = tf.constant(1.0, name="recomputed")
    assert kept.op.get_attr("_keep_dtype") == 1 and recomputed.op.get_attr("_recompute") is True
    assert "_keep_dtype" not in [a for a in graph.get_operation_by_name("recomputed").node_def.attr]


def test_gelu(npu):
    x = tf.constant([-1.0, 0.5, 2.0])
    np.testing.assert_allclose(npu.ops.gelu(x), tf.nn.gelu(x))  # eagerly: the exact gelu
    fast = tf.function(npu.ops.gelu)(x)
    np.testing.assert_allclose(fast, npu.gen_npu_ops.fast_gelu(x))  # in a graph: FastGelu
    assert not np.allclose(fast, tf.nn.gelu(x), atol=1e-4)
    inputs = tf.keras.Input(shape=(3,))
    model = tf.keras.Model(inputs, npu.ops.gelu(inputs))
    np.testing.assert_allclose(model(x[None])[0], fast, rtol=1e-6)
    with pytest.raises(AttributeError, match="no CPU version"):
        npu.gen_npu_ops.npu_get_float_status_v2  # noqa: B018


def test_compat(npu, monkeypatch):
    monkeypatch.setenv("ASCEND_DEVICE_ID", "0")
    npu.open(6)
    with pytest.raises(NotImplementedError):
        npu.compat.enable_v1()
    assert os.environ["ASCEND_DEVICE_ID"] == "6"
    config = npu.compat.v1.SessionConfigBuilder().session_config
    assert config.allow_soft_placement
    assert [o.name for o in config.graph_options.rewrite_options.custom_optimizers] == ["NpuOptimizer"]
