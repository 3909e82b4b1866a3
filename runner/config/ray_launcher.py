"""What the project's Ray presets (conf/hydra/launcher/ray_cpu.yaml, ray_gpu.yaml, ray_npu.yaml)
need installed, checked from the command line before Hydra composes anything: without Hydra's Ray
launcher plugin the presets fail to compose with a message about a missing config, which does
not say what to install. Package metadata only: nothing here imports Ray."""
from __future__ import annotations

import sys
from collections.abc import Sequence

from runner.errors import ConfigError
from runner.versions import installed_version

RAY_PRESETS = ("ray_cpu", "ray_gpu", "ray_npu")
NPU_RESOURCE_SINCE = (2, 9)  # the first Ray that schedules Ascend NPUs as resource `NPU`
INSTALL = ("pip install -r requirements.txt -r requirements-ray.txt (on the Ascend stack: "
           "-r requirements-ascend.txt -r requirements-ray.txt)")


def chosen_launcher(argv: Sequence[str]) -> str | None:
    """The hydra/launcher=... option on the command line (the last one wins, as in Hydra)."""
    options = [arg.split("=", 1)[1] for arg in argv if arg.startswith("hydra/launcher=")]
    return options[-1] if options else None


def check_ray_launcher(argv: Sequence[str], python: tuple[int, int] = sys.version_info[:2]) -> None:
    """A ConfigError naming what a Ray preset needs and this environment lacks."""
    preset = chosen_launcher(argv)
    if preset not in RAY_PRESETS:
        return
    npu = preset == "ray_npu"
    needs = ("Python >= 3.8 with hydra-ray-launcher and Ray >= 2.9 (the first Ray that schedules "
             "Ascend NPUs, as resource NPU)") if npu else "Python >= 3.8 with hydra-ray-launcher"
    elsewhere = ("hydra/launcher=device_pool, which gives each job its own card of this host"
                 if npu else "another launcher (docs/sweeps.md, 'Which launcher')")
    if python < (3, 8):
        raise ConfigError(
            f"hydra/launcher={preset} needs {needs}; this is Python {python[0]}.{python[1]}, for "
            "which neither exists (Ray's last release for it, 2.7, has no NPU resource). Run the "
            f"sweep from a Python 3.8 or 3.9 environment set up with {INSTALL}, or use {elsewhere}."
        )
    ray = installed_version("ray")
    if installed_version("hydra-ray-launcher") is None or ray is None:
        raise ConfigError(f"hydra/launcher={preset} needs {needs}, not installed here: {INSTALL}.")
    if npu and _release(ray) < NPU_RESOURCE_SINCE:
        raise ConfigError(
            f"hydra/launcher=ray_npu needs {needs}; Ray {ray} is installed: {INSTALL}, or use "
            f"{elsewhere}."
        )


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
