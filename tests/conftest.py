"""Shared fixtures: configs composed the way `python -m runner` composes them."""
from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import runner.config.schema  # noqa: F401  (registers the config schemas)
from runner.versions import installed_tensorflow

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

# A quick DenseNet run: 64x64 digits resized to DenseNet-121's smallest input, two short epochs.
TINY_RUN = ["batch_size=16", "epochs=2", "steps_per_epoch=3", "log_steps=1"]


@pytest.fixture(scope="session")
def toy_bit_run(tmp_path_factory) -> list[str]:
    """Overrides for the cheapest real run, where the network is not what a test is about (process
    boundaries, several workers): BiT's recipe through a tiny SavedModel with TF-Hub's interface
    (tests/bit_fixtures.py) on digits at 32 px, two short epochs. A few seconds of training,
    against tens of seconds for DenseNet-121."""
    from tests.bit_fixtures import write_bit_savedmodel

    handle = write_bit_savedmodel(tmp_path_factory.mktemp("toy_bit") / "savedmodel", 16)
    return [
        "model=bit", f"model.handle={handle}", "dataset=digits", "dataset.image_size=32",
        "model.crop_size=24", "model.early_stopping_patience=0", "batch_size=16", "epochs=2",
        "steps_per_epoch=3", "log_steps=1", "dataset.val_fraction=0.05",
    ]


# Fixtures that train, or run `python -m runner`, or build DenseNet-121: every test that uses one
# is marked `slow`, so that `python -m pytest -m "not slow"` is a quick inner loop. Tests that
# train without one carry @pytest.mark.slow themselves. CI runs everything.
SLOW_FIXTURES = {
    "toy_bit_run", "quick_run", "bit_run", "flowers", "val_images", "script_runs", "sweep",
    "killed_and_restarted", "stopped_and_resumed", "held_job", "switched_run", "single_runs",
    "search", "npu_run", "two_card_run", "with_resizer", "baseline",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def compose_config(overrides: list[str], output_dir: Path | None = None, with_hydra: bool = False):
    """The composed config for these overrides; output_dir stands in for Hydra's run folder;
    with_hydra: Hydra's own config too, under `hydra` (run and sweep folders, launcher, choices)."""
    extra = [f"output_dir={output_dir}"] if output_dir is not None else []
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=[*overrides, *extra],
                       return_hydra_config=with_hydra)


@pytest.fixture
def compose_cfg():
    return compose_config


@pytest.fixture(autouse=True)
def _keras_global_state():
    """Each test starts from float32 and a fresh Keras session, whatever the last one set."""
    yield
    if "runner.keras2" in sys.modules:
        from runner.keras2 import reset_session

        reset_session()


def wait_for_all(processes: list[subprocess.Popen], timeout: float) -> list[int]:
    """The exit codes of processes started together; any still running after `timeout` is killed."""
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(timeout=max(1, deadline - time.monotonic())) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()


def runner_env() -> dict[str, str]:
    """Environment for `python -m runner` subprocesses: the repo importable, TF quiet."""
    root = str(Path(__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "2"}


FAKE_NPU_DIR = Path(__file__).resolve().parent / "fake_npu"
NPU_ENV = (
    "ASCEND_DEVICE_ID", "ASCEND_RT_VISIBLE_DEVICES", "RANK_SIZE", "RANK_ID", "RANK_TABLE_FILE",
    "CM_WORKER_SIZE", "CM_CHIEF_IP", "CM_CHIEF_PORT", "CM_CHIEF_DEVICE", "CM_WORKER_IP",
    "NPU_LOOP_SIZE", "GE_USE_STATIC_MEMORY",
)


# TensorFlow 2.6 with tf.keras 2.6: the only TensorFlow CANN's npu_device (and its fake) runs on.
ON_ASCEND_STACK = (installed_tensorflow() or ("", ""))[1].startswith("2.6.")
needs_ascend_stack = pytest.mark.skipif(
    not ON_ASCEND_STACK,
    reason="npu_device runs on the Ascend stack only (TensorFlow 2.6.5, requirements-ascend*.lock)",
)


def forget_npu_device() -> None:
    for name in [m for m in sys.modules if m == "npu_device" or m.startswith("npu_device.")]:
        del sys.modules[name]


@contextmanager
def fake_npu_installed(env: dict[str, str] | None = None, core_only: bool = False):
    """The strict fake npu_device importable (as a fresh process would see it) for the block only.

    core_only: only the part that opens the device (`npu_device.npu_device`: global_options, open,
    set_npu_loop_size), loaded without the package's `__init__`, whose optimizer and Keras parts
    fail to import under TF 2.21 as the real ones do. It lets the default stack check the order
    in which runner/device/npu.py opens the device (the whole fake needs the Ascend stack)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(FAKE_NPU_DIR))
        for name in NPU_ENV:
            patch.delenv(name, raising=False)
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        forget_npu_device()
        try:
            npu_device = _import_fake_core() if core_only else importlib.import_module("npu_device")
            npu_device._fake.reset()  # after the environment is set: it reads NPU_LOOP_SIZE
            yield npu_device
        finally:
            if "npu_device" in sys.modules:  # TensorFlow's own context and functions back
                sys.modules["npu_device"]._fake.reset()
            forget_npu_device()


def _import_fake_core():
    package = importlib.util.module_from_spec(importlib.util.find_spec("npu_device"))
    sys.modules["npu_device"] = package  # its __init__ is not run
    from npu_device import _fake, npu_device

    package.npu_device, package._fake = npu_device, _fake
    for name in ("open", "global_options", "set_npu_loop_size"):
        setattr(package, name, getattr(npu_device, name))
    return package


@pytest.fixture
def fake_npu():
    with fake_npu_installed() as npu_device:
        yield npu_device
