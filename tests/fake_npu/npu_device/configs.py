"""Option objects as strict as the adapter's (npu_device/configs/*.py in CANN's TF2 adapter).

Every option is declared with its type and, where the adapter has one, its list of allowed values:
an unknown name raises ValueError, a value outside the list ValueError, another type TypeError.
After npu_device.open() every object is frozen: options apply once per process, so a late
assignment is a bug in the caller and raises RuntimeError.
"""

PRECISION_MODES = [
    "force_fp32", "allow_fp32_to_fp16", "force_fp16", "must_keep_origin_dtype",
    "allow_mix_precision", "cube_fp16in_fp32out", "allow_mix_precision_fp16",
    "allow_mix_precision_bf16", "allow_fp32_to_bf16",
]


class OptionValue:
    def __init__(self, kind: type, default=None, allowed: list | None = None):
        self.kind, self.default, self.allowed = kind, default, allowed
        self.value = default
        self.was_set = False

    def set(self, name: str, value) -> None:
        # bool is an int in Python; the adapter's bool options are not 0/1 and vice versa.
        if not isinstance(value, self.kind) or (self.kind is not bool and isinstance(value, bool)):
            raise TypeError(f"{name}: expected {self.kind.__name__}, got {type(value).__name__}")
        if self.allowed is not None and value not in self.allowed:
            raise ValueError(f"'{value}' not in optional list {self.allowed} of {name}")
        self.value = str(value) if self.kind is str else value
        self.was_set = True


class NpuBaseConfig:
    def __init__(self, **options):
        object.__setattr__(self, "_options", options)
        object.__setattr__(self, "_frozen", False)

    def __getattr__(self, name):
        options = object.__getattribute__(self, "_options")
        if name not in options:
            raise ValueError(f"{type(self).__name__} has no option {name}, all options {list(options)}")
        option = options[name]
        return option if isinstance(option, NpuBaseConfig) else option.value

    def __setattr__(self, name, value):
        if self._frozen:
            raise RuntimeError(
                f"{type(self).__name__}.{name} set after npu_device.open(): options apply once per "
                "process and must all be set before open()"
            )
        option = self._options.get(name)
        if option is None:
            raise ValueError(f"{type(self).__name__} has no option {name}, all options {list(self._options)}")
        if isinstance(option, NpuBaseConfig):
            raise TypeError(f"{name} is a group of options: set its fields, e.g. {name}.<option>")
        option.set(name, value)

    def freeze(self) -> None:
        object.__setattr__(self, "_frozen", True)
        for option in self._options.values():
            if isinstance(option, NpuBaseConfig):
                option.freeze()

    def set_options(self) -> dict:
        """Only what the caller assigned, nested like the objects: what a test asserts on."""
        out = {}
        for name, option in self._options.items():
            if isinstance(option, NpuBaseConfig):
                nested = option.set_options()
                if nested:
                    out[name] = nested
            elif option.was_set:
                out[name] = option.value
        return out


class NpuDumpConfig(NpuBaseConfig):
    def __init__(self):
        super().__init__(
            enable_dump=OptionValue(bool, False, [True, False]),
            dump_path=OptionValue(str),
            dump_step=OptionValue(str),
            dump_mode=OptionValue(str, "output", ["input", "output", "all"]),
            enable_dump_debug=OptionValue(bool, False, [True, False]),
            dump_debug_mode=OptionValue(str, "all", ["aicore_overflow", "atomic_overflow", "all"]),
            dump_data=OptionValue(str, "tensor", ["tensor", "stats"]),
            dump_layer=OptionValue(str),
        )


class NpuProfilingConfig(NpuBaseConfig):
    def __init__(self):
        super().__init__(
            enable_profiling=OptionValue(bool, False, [True, False]),
            profiling_options=OptionValue(str),
        )


class NpuConfig(NpuBaseConfig):
    def __init__(self):
        super().__init__(
            graph_run_mode=OptionValue(int, 1, [0, 1]),
            graph_memory_max_size=OptionValue(str),
            variable_memory_max_size=OptionValue(str),
            fusion_switch_file=OptionValue(str),
            precision_mode=OptionValue(str, None, PRECISION_MODES),
            auto_tune_mode=OptionValue(str),
            op_compiler_cache_mode=OptionValue(str, "disable", ["enable", "disable", "force"]),
            op_compiler_cache_dir=OptionValue(str),
            hcom_parallel=OptionValue(bool, True, [True, False]),
            op_debug_level=OptionValue(int, 0, [0, 1, 2, 3, 4]),
            debug_dir=OptionValue(str),
            modify_mixlist=OptionValue(str),
            enable_small_channel=OptionValue(bool, False, [True, False]),
            jit_compile=OptionValue(bool, True, [True, False]),
            dump_config=NpuDumpConfig(),
            profiling_config=NpuProfilingConfig(),
        )
