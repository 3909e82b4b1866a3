"""`hydra/launcher=device_pool` through Hydra's own launcher test suites
(hydra.test_utils.launcher_common_tests, shipped in the hydra-core wheel with the example configs
they compose: hydra/test_utils/configs), parametrized as Hydra's launcher plugins parametrize them
(facebookresearch/hydra: tests/test_basic_launcher.py, plugins/hydra_joblib_launcher/tests/).

What they check of a launcher: one and two jobs, config groups and overrides swept, a bad key
refused, Hydra's own keys not swept, a custom resolver registered by the application reaching the
jobs, the jobs' configs, names, numbers and output folders, batches from a batched sweeper, and,
through small applications started as scripts (the integration suite), the job name, the sweep
folders, the original working directory and to_absolute_path in a multirun. None of them trains:
each job is a fresh Python process that imports Hydra (the device pool's way), about a second.

The pool is the machine's CPU cores (device_type follows `device.type`, absent in these configs:
cpu; devices null: one core per device).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import (
    BatchedSweeperTestSuite,
    IntegrationTestSuite,
    LauncherTestSuite,
)
from hydra.version import setbase

pytestmark = pytest.mark.ascend_stack  # the plugin runs on both stacks

ROOT = str(Path(__file__).resolve().parent.parent)


@pytest.fixture(autouse=True)
def _hydra_version_base_of_a_fresh_process(hydra_restore_singletons) -> None:
    """Hydra's suites expect the version base of a fresh process (1.1's defaults: a job runs in its
    output folder). Another test file's compose(version_base="1.3") in this worker process would
    leave 1.3's, where jobs stay in the launching folder; the singletons are restored after."""
    setbase("1.1")


def test_discovery() -> None:
    """Hydra finds the launcher among its plugins (hydra_plugins is a namespace package)."""
    assert "DevicePoolLauncher" in [plugin.__name__ for plugin in Plugins.instance().discover(Launcher)]


@pytest.mark.parametrize("launcher_name, overrides", [("device_pool", [])])
class TestDevicePoolLauncher(LauncherTestSuite):
    """The launcher called in this process by Hydra's sweep runner; its jobs in processes of their own."""


@pytest.mark.parametrize(
    "launcher_name, overrides",
    [("device_pool", ["hydra/sweeper=basic", "hydra.sweeper.max_batch_size=2"])],
)
class TestDevicePoolLauncherWithBatching(BatchedSweeperTestSuite):
    """Three launches of two jobs each: job numbers and folders go on from one launch to the next."""


@pytest.fixture
def _plugin_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The integration suite starts its applications from a scratch folder: Hydra's plugin scan in
    there finds the device pool on PYTHONPATH (the project is run from its clone, not installed)."""
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([ROOT, path]) if path else ROOT)


@pytest.mark.usefixtures("_plugin_importable")
@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [
        pytest.param(
            {
                "defaults": [
                    {"override hydra/launcher": "device_pool"},
                    {"override hydra/hydra_logging": "hydra_debug"},
                    {"override hydra/job_logging": "disabled"},
                ]
            },
            ["-m"],
            id="device_pool_multirun",
        )
    ],
)
class TestDevicePoolLauncherIntegration(IntegrationTestSuite):
    """Hydra applications written to a scratch folder and run as scripts with -m."""
