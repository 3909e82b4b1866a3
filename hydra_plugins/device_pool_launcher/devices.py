"""The pool's devices: what `hydra.launcher.devices` names (or the machine shows), and the
environment that makes a job process see only its own device.

GPU: CUDA_VISIBLE_DEVICES, read when TensorFlow initialises CUDA. NPU: ASCEND_DEVICE_ID, read by
npu_device.open() (the runner's device.id null means "the card ASCEND_DEVICE_ID names"). CPU: a
core set, applied with sched_setaffinity by the job process before it imports TensorFlow (which
sizes its thread pools from the cores it may run on), plus TF_NUM_INTRAOP_THREADS and
TF_NUM_INTEROP_THREADS to match. All of these must be in place before TensorFlow starts, hence a
fresh process per job.
"""
from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.errors import ConfigCompositionException

KINDS = ("cpu", "gpu", "npu")
CPUS_ENV = "DEVICE_POOL_CPUS"  # the core set a job process pins itself to (read by _child.py)
THREAD_ENV = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


class DevicePoolError(ConfigCompositionException):
    """A pool that cannot be formed: one paragraph naming the setting and the fix. A config error
    in Hydra's sense, so that the runner reports it as it reports other config mistakes (exit 2)."""


@dataclass(frozen=True)
class Device:
    kind: str  # cpu | gpu | npu
    ids: tuple[str, ...]  # CPU: the cores; GPU/NPU: one id (a GPU may also be named by UUID)

    @property
    def label(self) -> str:
        return f"{self.kind}:{','.join(self.ids)}"

    def environment(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The variables a job process on this device gets (on top of the sweep's own)."""
        if self.kind == "gpu":
            return {"CUDA_VISIBLE_DEVICES": self.ids[0]}
        if self.kind == "npu":
            return {"ASCEND_DEVICE_ID": self.ids[0]}
        # The user's own thread settings win; threads.* in the config win over both.
        threads = {name: str(len(self.ids)) for name in THREAD_ENV if name not in environ}
        return {CPUS_ENV: ",".join(self.ids), **threads}


def form_pool(kind: str, devices: Sequence[Any] | None) -> list[Device]:
    """The pool's devices, formed from hydra.launcher.device_type and .devices: `devices` as given
    (CPU: core sets, a lone core as an int), or with None every device of `kind` this machine
    shows. A pool that cannot be formed raises DevicePoolError."""
    if kind not in KINDS:
        raise DevicePoolError(f"hydra.launcher.device_type={kind!r}: must be one of {', '.join(KINDS)}.")
    pool = [_device(kind, entry) for entry in devices] if devices is not None else detect(kind)
    if not pool:
        raise DevicePoolError(
            f"hydra.launcher.devices is empty: name the {kind.upper()} devices to run the jobs on, "
            "e.g. hydra.launcher.devices=[0,1]."
        )
    if kind == "cpu":
        _check_cores(pool)
    labels = [device.label for device in pool]
    if len(set(labels)) != len(labels):
        raise DevicePoolError(f"hydra.launcher.devices={labels} names a device twice.")
    return pool


def _device(kind: str, entry: Any) -> Device:
    if kind == "cpu":
        cores = list(entry) if isinstance(entry, Sequence) and not isinstance(entry, str) else [entry]
        return Device(kind, tuple(str(_core(core)) for core in cores))
    if isinstance(entry, Sequence) and not isinstance(entry, str):
        raise DevicePoolError(
            f"hydra.launcher.devices: {list(entry)} is a list; a {kind.upper()} pool takes one id "
            "per device (one job per device), e.g. hydra.launcher.devices=[0,1,2,3]."
        )
    return Device(kind, (str(entry),))


def _core(core: Any) -> int:
    try:
        return int(core)
    except (TypeError, ValueError):
        raise DevicePoolError(
            f"hydra.launcher.devices: {core!r} is not a CPU core number; a CPU pool takes core sets, "
            "e.g. hydra.launcher.devices=[[0,1],[2,3]] (two jobs at once, two cores each)."
        ) from None


def _check_cores(pool: list[Device]) -> None:
    allowed = os.sched_getaffinity(0)
    for device in pool:
        outside = sorted({int(core) for core in device.ids} - allowed)
        if outside:
            raise DevicePoolError(
                f"hydra.launcher.devices: core(s) {outside} of {device.label} are not among the "
                f"cores this process may run on ({sorted(allowed)})."
            )
    cores = [core for device in pool for core in device.ids]
    if len(set(cores)) != len(cores):
        raise DevicePoolError(
            f"hydra.launcher.devices={[list(d.ids) for d in pool]}: core sets overlap, so two jobs "
            "would share a core; give each job its own cores."
        )


def detect(kind: str) -> list[Device]:
    """Every device of `kind` this process may use, without importing TensorFlow."""
    if kind == "cpu":
        return [Device("cpu", (str(core),)) for core in sorted(os.sched_getaffinity(0))]
    ids = _gpu_ids() if kind == "gpu" else _npu_ids()
    if not ids:
        how = ("nvidia-smi lists none and CUDA_VISIBLE_DEVICES is unset" if kind == "gpu"
               else "there is no /dev/davinci<N>")
        raise DevicePoolError(
            f"hydra/launcher=device_pool with device.type={kind} found no {kind.upper()} on this "
            f"machine ({how}). Name them with hydra.launcher.devices=[0,1,...]."
        )
    return [Device(kind, (device_id,)) for device_id in ids]


def _gpu_ids() -> list[str]:
    """CUDA_VISIBLE_DEVICES if the user restricted it (its entries, as CUDA reads them), else
    the driver's GPUs."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [entry.strip() for entry in visible.split(",") if entry.strip()]
    driver = Path("/proc/driver/nvidia/gpus")
    if driver.is_dir():
        return [str(index) for index in range(len(list(driver.iterdir())))]
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(index) for index, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU ")]


def _npu_ids() -> list[str]:
    """The Ascend driver's device files /dev/davinci<N>, one per card (davinci_manager is not one)."""
    found = [re.fullmatch(r"davinci(\d+)", path.name) for path in Path("/dev").glob("davinci*")]
    return [str(number) for number in sorted(int(match.group(1)) for match in found if match)]


def jobs_at_once(kind: str, devices: Sequence[Any] | None, jobs_per_device: int) -> int:
    """How many jobs the pool runs at a time (what an Optuna search asks for per batch). 1 for a
    pool that cannot be formed: the launcher reports why, before any job starts, in one paragraph
    (an error here would reach the user wrapped in Hydra's instantiation traceback)."""
    try:
        return len(form_pool(kind, devices)) * max(1, int(jobs_per_device))
    except DevicePoolError:
        return 1
