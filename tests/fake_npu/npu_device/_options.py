"""The adapter's option objects (`global_options()` and `configs.run_context_options`), as the real ones.

This part of the adapter is pure Python, so the fake restates it exactly:

- `OptionValue(default, optional)`: reading `.value` gives None or a string; anything whose str()
  is "True"/"False" reads as "1"/"0". Assigning checks only when `optional` is a list/tuple and the
  value is not `in` it (an `==` test, so True/1 and False/0 are interchangeable): then TypeError
  "Expected <type of default>, got <type of value>" if the default is not None and the value is
  another type, otherwise ValueError "'<value>' not in optional list <optional>". With
  `optional=None` anything is accepted.
- `NpuBaseConfig`: after `__init__` the option and sub-config names are frozen; another name raises
  ValueError "<Class> has no option <name>, all options [...]". Assigning to an option name goes
  through the OptionValue setter; assigning to a sub-config name replaces the sub-config without
  any check (and `as_dict()` then skips it unless it is a config). Reading an option returns the
  OptionValue object (use `.value`).
- `as_dict()`: one flat dict keyed by leaf names, values not None; a deprecated option that was set
  prints a warning to stdout.

The one addition: a successful assignment calls `_fake.option_assigned()`, which records the
option's dotted name when it belongs to `global_options()` and the device is already open (the real
adapter ignores such changes silently; the fake ignores them too, but remembers them).
"""

from __future__ import annotations

from npu_device import _fake


class OptionValue:
    def __init__(self, default, optional):
        self.__default = default
        self.__optional = optional
        self.__value = default

    @property
    def default(self):
        return self.__default

    @property
    def optional(self):
        return self.__optional

    @property
    def value(self):
        if self.__value is None:
            return None
        text = str(self.__value)
        return {"True": "1", "False": "0"}.get(text, text)

    @value.setter
    def value(self, v):
        if isinstance(self.__optional, (tuple, list)) and v not in self.__optional:
            if self.__default is not None and not isinstance(v, type(self.__default)):
                raise TypeError(f"Expected {type(self.__default).__name__}, got {type(v).__name__}")
            raise ValueError(f"'{v}' not in optional list {self.__optional}")
        self.__value = v


class DeprecatedValue(OptionValue):
    def __init__(self, optional, *, replacement):
        super().__init__(None, optional)
        self.replacement = replacement


class NpuBaseConfig:
    def __init__(self):
        self._fixed_attrs = [
            k for k, v in self.__dict__.items() if isinstance(v, (OptionValue, NpuBaseConfig))
        ]

    def __setattr__(self, key, value):
        if not hasattr(self, "_fixed_attrs"):
            super().__setattr__(key, value)
            return
        if key not in self._fixed_attrs:
            raise ValueError(
                f"{type(self).__name__} has no option {key}, all options {self._fixed_attrs}"
            )
        current = getattr(self, key)
        if isinstance(current, OptionValue):
            current.value = value
        else:
            super().__setattr__(key, value)  # a whole sub-config, replaced unchecked
        _fake.option_assigned(self, key)

    def as_dict(self):
        options = {}
        for k, v in self.__dict__.items():
            if k not in self._fixed_attrs:
                continue
            if isinstance(v, DeprecatedValue) and v.value is not None:
                advice = (
                    "Please do not configure this option in the future."
                    if v.replacement is None
                    else f"Please use '{v.replacement}' instead."
                )
                print(
                    f"[warning][tf_adapter] Option '{k}' is deprecated and will be removed in "
                    f"future version. {advice}"
                )
                options[k] = v.value
            elif isinstance(v, OptionValue) and v.value is not None:
                options[k] = v.value
            elif isinstance(v, NpuBaseConfig):
                options.update(v.as_dict())
        return options


class NpuDumpConfig(NpuBaseConfig):
    def __init__(self):
        self.enable_dump = OptionValue(False, [True, False])
        self.dump_path = OptionValue(None, None)
        self.dump_step = OptionValue(None, None)
        self.dump_mode = OptionValue("output", ["input", "output", "all"])
        self.enable_dump_debug = OptionValue(False, [True, False])
        self.dump_debug_mode = OptionValue("all", ["aicore_overflow", "atomic_overflow", "all"])
        self.dump_data = OptionValue("tensor", ["tensor", "stats"])
        self.dump_layer = OptionValue(None, None)
        super().__init__()


# The default is one JSON string written with line continuations inside the literal, so it
# carries the source's indentation as runs of spaces; kept byte for byte.
PROFILING_OPTIONS_DEFAULT = (
    '{"output":".\\/","training_trace":"on","task_trace":"on",'
    + " " * 45 + '"hccl":"on","aicpu":"on","aic_metrics":"PipeUtilization",'
    + " " * 45 + '"msproftx":"off"}'
)


class NpuProfilingConfig(NpuBaseConfig):
    def __init__(self):
        self.enable_profiling = OptionValue(False, [True, False])
        self.profiling_options = OptionValue(PROFILING_OPTIONS_DEFAULT, None)
        super().__init__()


class NpuAoeConfig(NpuBaseConfig):
    def __init__(self):
        self.aoe_mode = OptionValue(None, ["1", "2", "4"])
        self.work_path = OptionValue("./", None)
        self.aoe_config_file = OptionValue(None, None)
        super().__init__()


class MemoryConfig(NpuBaseConfig):
    def __init__(self):
        self.atomic_clean_policy = OptionValue(0, [0, 1])
        self.static_memory_policy = OptionValue(0, [0, 1, 2])
        super().__init__()


class NpuMultiBranchesConfig(NpuBaseConfig):
    def __init__(self):
        self.input_shape = OptionValue(None, None)
        self.dynamic_node_type = OptionValue(None, ["0"])
        self.dynamic_dims = OptionValue(None, None)
        super().__init__()


class LogicalDeviceDeployConfig(NpuBaseConfig):
    def __init__(self):
        self.logical_device_cluster_deploy_mode = OptionValue("LB", ["LB", "SINGLE"])
        self.logical_device_id = OptionValue(None, None)
        super().__init__()


class ModelDeployConfig(NpuBaseConfig):
    def __init__(self):
        self.model_deploy_mode = OptionValue(None, None)
        self.model_deploy_devicelist = OptionValue(None, None)
        super().__init__()


class GraphMemoryOptimizeConfig(NpuBaseConfig):
    def __init__(self):
        self.recompute = OptionValue(None, ["auto", "manual"])
        self.graph_slice = OptionValue(None, ["auto"])
        super().__init__()


class NpuExperimentalConfig(NpuBaseConfig):
    def __init__(self):
        self.multi_branches_config = NpuMultiBranchesConfig()
        self.logical_device_deploy_config = LogicalDeviceDeployConfig()
        self.model_deploy_config = ModelDeployConfig()
        self.graph_memory_optimize_config = GraphMemoryOptimizeConfig()
        self.resource_config_path = OptionValue(None, None)
        self.graph_parallel_option_path = OptionValue(None, None)
        self.enable_graph_parallel = OptionValue(False, [True, False])
        super().__init__()


PRECISION_MODES = [
    "force_fp32", "allow_fp32_to_fp16", "force_fp16", "must_keep_origin_dtype", "allow_mix_precision",
    "cube_fp16in_fp32out", "allow_mix_precision_fp16", "allow_mix_precision_bf16", "allow_fp32_to_bf16",
]
PRECISION_MODES_V2 = ["fp16", "origin", "cube_fp16in_fp32out", "mixed_float16", "mixed_bfloat16"]


class NpuConfig(NpuBaseConfig):
    """What `global_options()` returns (the tree of branch master, TF Adapter 2.x)."""

    def __init__(self):
        self.graph_run_mode = OptionValue(1, [0, 1])
        self.graph_memory_max_size = OptionValue(None, None)
        self.variable_memory_max_size = OptionValue(None, None)
        self.variable_format_optimize = DeprecatedValue([True, False], replacement=None)
        self.enable_scope_fusion_passes = OptionValue(None, None)
        self.fusion_switch_file = OptionValue(None, None)
        self.precision_mode = OptionValue(None, PRECISION_MODES)
        self.op_select_implmode = DeprecatedValue(
            ["high_performance", "high_precision"], replacement="op_precision_mode"
        )
        self.optypelist_for_implmode = DeprecatedValue(None, replacement="op_precision_mode")
        self.op_compiler_cache_mode = OptionValue("enable", ["enable", "disable", "force"])
        self.op_compiler_cache_dir = OptionValue(None, None)
        self.stream_max_parallel_num = OptionValue(None, None)
        self.ac_parallel_enable = OptionValue(None, ["0", "1"])
        self.hcom_parallel = OptionValue(True, [True, False])
        self.hcom_multi_mode = OptionValue(None, None)
        self.is_tailing_optimization = OptionValue(False, [True, False])
        self.op_debug_level = DeprecatedValue([0, 1, 2, 3, 4], replacement="op_debug_config")
        self.op_debug_config = OptionValue(None, None)
        self.debug_dir = OptionValue(None, None)
        self.modify_mixlist = OptionValue(None, None)
        self.enable_exception_dump = OptionValue(2, [0, 1, 2])
        self.dump_config = NpuDumpConfig()
        self.aoe_config = NpuAoeConfig()
        self.profiling_config = NpuProfilingConfig()
        self.enable_small_channel = OptionValue(False, [True, False])
        self.deterministic = OptionValue(0, [0, 1])
        self.op_precision_mode = OptionValue(None, None)
        self.graph_exec_timeout = OptionValue(None, None)
        self.topo_sorting_mode = OptionValue(None, [0, 1, None])
        self.customize_dtypes = OptionValue(None, None)
        self.overflow_flag = OptionValue(1, [0, 1])
        self.stream_sync_timeout = OptionValue(-1, None)
        self.event_sync_timeout = OptionValue(-1, None)
        self.external_weight = OptionValue(False, [True, False])
        self.memory_config = MemoryConfig()
        self.jit_compile = OptionValue("auto", ["true", "false", "auto"])
        self.graph_compiler_cache_dir = OptionValue(None, None)
        self.experimental = NpuExperimentalConfig()
        self.precision_mode_v2 = OptionValue(None, PRECISION_MODES_V2)
        super().__init__()


class NpuRunContextOptions(NpuBaseConfig):
    """`npu_device.configs.run_context_options`: the options of one `npu_run_context()`."""

    def __init__(self):
        self.experimental = NpuExperimentalConfig()
        super().__init__()
