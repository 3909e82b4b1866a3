"""`hydra/launcher=device_pool`'s settings, registered with Hydra's ConfigStore.

No `from __future__ import annotations`, and typing's List/Optional: OmegaConf reads these
annotations at run time, and Python 3.7-3.9 cannot evaluate `list[...] | None` (3.7 and 3.8 not
even `list[...]`).
"""
from dataclasses import dataclass
from typing import Any, List, Optional  # noqa: UP035  (read at run time: see above)

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from hydra_plugins.device_pool_launcher.devices import jobs_at_once


@dataclass
class DevicePoolLauncherConf:
    _target_: str = "hydra_plugins.device_pool_launcher.launcher.DevicePoolLauncher"
    # cpu | gpu | npu: the kind of device the jobs get; the runner's own device.type by default.
    device_type: str = "${oc.select:device.type,cpu}"
    # GPU/NPU ids, e.g. [0,1,2,3,4,5,6,7]; CPU: core sets, e.g. [[0],[1]] or [[0,1],[2,3]].
    # null: every device of device_type this machine shows (CPU: one core per device).
    devices: Optional[List[Any]] = None  # noqa: UP006
    # More than one for jobs small enough to share a device.
    jobs_per_device: int = 1
    # Seconds between two job starts (spreads the start-up load: imports, data loading, compiling).
    stagger_seconds: float = 0.0
    # Seconds a stopped sweep waits for its jobs to record how they ended before killing them.
    stop_timeout_seconds: float = 120.0
    # Read-only: how many jobs run at once (an Optuna search asks for that many trials per batch).
    jobs_at_once: int = "${device_pool.jobs_at_once:${.device_type},${.devices},${.jobs_per_device}}"  # type: ignore[assignment]


# replace=True: Hydra may import the plugin more than once (its plugin scan, then the launcher).
OmegaConf.register_new_resolver("device_pool.jobs_at_once", jobs_at_once, replace=True)

ConfigStore.instance().store(
    group="hydra/launcher", name="device_pool", node=DevicePoolLauncherConf,
    provider="device_pool_launcher",
)
