"""`device.npu_options`: CANN's TF adapter options, checked as the adapter checks them, without
TensorFlow.

The adapter (`npu_device.global_options()`, an `NpuConfig`: tf_adapter_2.x/python/npu_device/configs/
in https://gitee.com/ascend/tensorflow, master as of 2023-12) holds a fixed tree of options; each
leaf is an `OptionValue(default, optional)`. Setting a name the tree lacks raises
`ValueError("NpuConfig has no option ...")`. A leaf with a list of allowed values refuses any other
value: with `TypeError` when the value is not of the default's type, else `ValueError`; the test is
`in`, so True/1 and False/0 are the same value. A leaf with no list takes anything. That rule is
`refusal()` below, and OPTION_TREE is the tree, leaf by leaf: (type of the default or None, allowed
values or None). Older releases lack some leaves (r1.12.0: jit_compile, graph_compiler_cache_dir,
precision_mode_v2, ac_parallel_enable, graph_slice): the NPU names them when it opens
(runner/device/npu.py).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Dict, Optional, Tuple, Union

from runner.config.keys import did_you_mean
from runner.config.precision_modes import PRECISION_MODES
from runner.errors import ConfigError

Leaf = Tuple[Optional[type], Optional[tuple]]  # (the default's type, the allowed values)
Tree = Dict[str, Union[Leaf, "Tree"]]

ANY: Leaf = (None, None)
BOOL: Leaf = (bool, (True, False))


def _ints(default_type: type | None, *allowed: int) -> Leaf:
    return (default_type, allowed)


OPTION_TREE: Tree = {
    "graph_run_mode": _ints(int, 0, 1),
    "graph_memory_max_size": ANY,
    "variable_memory_max_size": ANY,
    "variable_format_optimize": (None, (True, False)),  # deprecated: default None
    "enable_scope_fusion_passes": ANY,
    "fusion_switch_file": ANY,
    "precision_mode": (None, tuple(PRECISION_MODES)),  # the runner's: `precision=`
    "op_select_implmode": (None, ("high_performance", "high_precision")),  # deprecated
    "optypelist_for_implmode": ANY,  # deprecated: op_precision_mode
    "op_compiler_cache_mode": (str, ("enable", "disable", "force")),
    "op_compiler_cache_dir": ANY,
    "stream_max_parallel_num": ANY,
    "ac_parallel_enable": (None, ("0", "1")),
    "hcom_parallel": BOOL,
    "hcom_multi_mode": ANY,
    "is_tailing_optimization": BOOL,
    "op_debug_level": (None, (0, 1, 2, 3, 4)),  # deprecated: default None
    "op_debug_config": ANY,
    "debug_dir": ANY,
    "modify_mixlist": ANY,
    "enable_exception_dump": _ints(int, 0, 1, 2),
    "dump_config": {
        "enable_dump": BOOL,
        "dump_path": ANY,
        "dump_step": ANY,
        "dump_mode": (str, ("input", "output", "all")),
        "enable_dump_debug": BOOL,
        "dump_debug_mode": (str, ("aicore_overflow", "atomic_overflow", "all")),
        "dump_data": (str, ("tensor", "stats")),
        "dump_layer": ANY,
    },
    "aoe_config": {
        "aoe_mode": (None, ("1", "2", "4")),
        "work_path": ANY,
        "aoe_config_file": ANY,
    },
    "profiling_config": {"enable_profiling": BOOL, "profiling_options": ANY},
    "enable_small_channel": BOOL,
    "deterministic": _ints(int, 0, 1),
    "op_precision_mode": ANY,
    "graph_exec_timeout": ANY,
    "topo_sorting_mode": (None, (0, 1, None)),
    "customize_dtypes": ANY,
    "overflow_flag": _ints(int, 0, 1),
    "stream_sync_timeout": ANY,
    "event_sync_timeout": ANY,
    "external_weight": BOOL,
    "memory_config": {
        "atomic_clean_policy": _ints(int, 0, 1),
        "static_memory_policy": _ints(int, 0, 1, 2),
    },
    "jit_compile": (str, ("true", "false", "auto")),
    "graph_compiler_cache_dir": ANY,
    "experimental": {
        "multi_branches_config": {
            "input_shape": ANY,
            "dynamic_node_type": (None, ("0",)),
            "dynamic_dims": ANY,
        },
        "logical_device_deploy_config": {
            "logical_device_cluster_deploy_mode": (str, ("LB", "SINGLE")),
            "logical_device_id": ANY,
        },
        "model_deploy_config": {"model_deploy_mode": ANY, "model_deploy_devicelist": ANY},
        "graph_memory_optimize_config": {
            "recompute": (None, ("auto", "manual")),
            "graph_slice": (None, ("auto",)),
        },
        "resource_config_path": ANY,
        "graph_parallel_option_path": ANY,
        "enable_graph_parallel": BOOL,
    },
    "precision_mode_v2": (  # the runner's: `precision=` (it sets precision_mode)
        None, ("fp16", "origin", "cube_fp16in_fp32out", "mixed_float16", "mixed_bfloat16")
    ),
}

# Options the runner sets from its own groups: set there, so that one place decides each.
OWNED_BY = {
    "precision_mode": "precision= (e.g. precision=allow_mix_precision)",
    "precision_mode_v2": "precision= (the runner sets precision_mode)",
    "dump_config": "debug=dump and debug=overflow (debug.dump.*, debug.overflow.*)",
    "profiling_config": "debug=profiling (debug.profiling.*)",
    "fusion_switch_file": "debug=fusion_off (debug.fusion_off.file)",
    "modify_mixlist": "debug=mixlist (debug.mixlist.file)",
    "aoe_config.aoe_mode": "debug=auto_tune (debug.auto_tune.aoe_mode)",
    "aoe_config.work_path": "debug=auto_tune (debug.auto_tune.path)",
}


def check_npu_options(options: Mapping[str, Any], prefix: str = "device.npu_options") -> None:
    """Refuse what the adapter would refuse, and what the runner's own groups set."""
    tree: Any = OPTION_TREE
    _check_branch(options, tree, prefix, "")


def _check_branch(options: Mapping[str, Any], tree: Tree, prefix: str, path: str) -> None:
    for name, value in options.items():
        key = f"{path}{name}"
        if key in OWNED_BY:
            raise ConfigError(
                f"{prefix}.{key} is set by the runner: use {OWNED_BY[key]} instead, so that one "
                "place decides it."
            )
        if name not in tree:
            raise ConfigError(
                f"{prefix}.{key}: npu_device has no option {key!r}."
                f"{did_you_mean(f'{prefix}.{key}', list(tree))} Its options here: "
                f"{', '.join(sorted(tree))}."
            )
        entry = tree[name]
        if isinstance(entry, dict):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"{prefix}.{key}={value!r}: {key} is a group of options "
                    f"({', '.join(sorted(entry))}); set them one by one: {prefix}.{key}.<option>=..."
                )
            _check_branch(value, entry, prefix, f"{key}.")
        else:
            problem = refusal(value, entry)
            if problem:
                raise ConfigError(f"{prefix}.{key}={value!r}: {problem}{_quoting_hint(key, value, entry)}")


def refusal(value: Any, leaf: Leaf) -> str | None:
    """Why the adapter's setter refuses value for this leaf (its TypeError or ValueError), or None."""
    default_type, allowed = leaf
    if allowed is None or value in allowed:
        return None
    shown = ", ".join(repr(v) for v in allowed)
    if default_type is not None and not isinstance(value, default_type):
        return f"npu_device wants a {default_type.__name__} here (TypeError), one of {shown}."
    return f"npu_device takes only {shown} (ValueError)."


def _quoting_hint(key: str, value: Any, leaf: Leaf) -> str:
    """Hydra reads `key=1` as an int and `key=true` as a bool: a string needs quotes."""
    strings = [v for v in leaf[1] or () if isinstance(v, str) and v == str(value).lower()]
    if isinstance(value, str) or not strings:
        return ""
    return f" Quote it to pass the string: \"+device.npu_options.{key}='{strings[0]}'\"."
