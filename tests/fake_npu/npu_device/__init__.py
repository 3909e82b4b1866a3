"""A fake `npu_device` for tests only: the adapter's API, as strict, running everything on the CPU.

Lives under tests/fake_npu/ and is put on sys.path by the `fake_npu` fixture only, so production
code never imports it. Tests read back what the runner did through `last_opened` and
`distribute.calls`; `reset()` gives the next test a fresh process-like state.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from npu_device import distribute
from npu_device.configs import NpuConfig

__all__ = ["distribute", "global_options", "open", "last_opened", "reset"]

_global_options: NpuConfig | None = None
last_opened: "NpuDeviceHandle | None" = None


def global_options() -> NpuConfig:
    global _global_options
    if _global_options is None:
        _global_options = NpuConfig()
    return _global_options


@dataclass
class NpuDeviceHandle:
    device_id: int
    workers_num: int
    worker_id: int
    options: dict  # what was set on global_options() before open(), nested
    is_default: bool = False

    def as_default(self) -> "NpuDeviceHandle":
        self.is_default = True  # the fake keeps TensorFlow's own (CPU) device
        return self

    def is_cluster_worker(self) -> bool:
        return self.workers_num > 1 and self.workers_num > self.worker_id >= 0


def open(device_id: int | None = None) -> NpuDeviceHandle:
    """Snapshot the options, freeze them, and return the device handle (one device per process)."""
    global last_opened
    if device_id is None:
        device_id = int(os.getenv("ASCEND_DEVICE_ID", "0"))
    if last_opened is not None:
        if last_opened.device_id != device_id:
            raise RuntimeError(
                f"Failed create npu instance on device {device_id} as existed instance on "
                f"[{last_opened.device_id}]"
            )
        return last_opened
    options = global_options()
    _check_paths(options)
    workers_num, worker_id = _cluster_from_env()
    options.freeze()
    last_opened = NpuDeviceHandle(device_id, workers_num, worker_id, options.set_options())
    return last_opened


def _check_paths(options: NpuConfig) -> None:
    """The graph engine refuses a dump or profiling run whose output folder does not exist."""
    dump = options.dump_config
    if (dump.enable_dump or dump.enable_dump_debug) and not (
        dump.dump_path and Path(dump.dump_path).is_dir()
    ):
        raise RuntimeError(f"dump_path {dump.dump_path!r} is not set or not an existing folder")
    profiling = options.profiling_config
    if profiling.enable_profiling:
        output = json.loads(profiling.profiling_options or "{}").get("output")
        if not output or not Path(output).is_dir():
            raise RuntimeError(f"profiling_options output {output!r} is not an existing folder")


def _cluster_from_env() -> tuple[int, int]:
    rank_table = os.getenv("RANK_TABLE_FILE")
    if not rank_table or not rank_table.strip():
        return 1, 0
    bad_rank = RuntimeError("RANK_TABLE_FILE is set, but RANK_SIZE and RANK_ID are not set correctly")
    try:
        workers_num, worker_id = int(os.getenv("RANK_SIZE")), int(os.getenv("RANK_ID"))
    except (TypeError, ValueError):
        raise bad_rank from None
    if not workers_num > worker_id >= 0:
        raise bad_rank
    return workers_num, worker_id


def reset() -> None:
    """A fresh process: new options, nothing opened, no recorded calls."""
    global _global_options, last_opened
    _global_options, last_opened = None, None
    distribute.calls.clear()
