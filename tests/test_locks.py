"""The lock files (README, "Two stacks"; scripts/lock.sh makes them from the loose files): each
pins what its loose file asks, for every Python and machine it serves; runtime and dev locks agree;
the Ascend host locks leave the host's TensorFlow alone; and every host pin installs on aarch64."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Tuple

import pytest
from packaging.requirements import Requirement

text_only = pytest.mark.ascend_stack  # fast, on both stacks; the aarch64 check runs on the default one

ROOT = Path(__file__).resolve().parent.parent

# The Pythons and machines each lock serves: the default stack is Python 3.11 on x86_64; the
# Ascend locks are universal over Python 3.7-3.9; the host locks serve Huawei's aarch64 servers too.
DEFAULT = [("3.11", "x86_64")]
ASCEND_FRESH = [(python, "x86_64") for python in ("3.7", "3.8", "3.9")]
ASCEND_HOST = [(python, machine) for python in ("3.7", "3.8", "3.9") for machine in ("x86_64", "aarch64")]
LOCKS = {  # lock -> (its loose file, the (python, machine) pairs it serves)
    "requirements.lock": ("requirements.txt", DEFAULT),
    "requirements-dev.lock": ("requirements-dev.txt", DEFAULT),
    "requirements-ascend-host.lock": ("requirements-ascend-host.txt", ASCEND_HOST),
    "requirements-ascend-host-dev.lock": ("requirements-ascend-host-dev.txt", ASCEND_HOST),
    "requirements-ascend.lock": ("requirements-ascend.txt", ASCEND_FRESH),
    "requirements-ascend-dev.lock": ("requirements-ascend-dev.txt", ASCEND_FRESH),
}
# What a host brings with its TensorFlow 2.6.5 and the host locks must never install or replace.
TENSORFLOW_FAMILY = {"tensorflow", "tensorflow-cpu", "keras", "tensorflow-estimator", "numpy", "h5py"}

Target = Tuple[str, str]  # (python version, machine)


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def environment(target: Target) -> dict[str, str]:
    python, machine = target
    return {"python_version": python, "python_full_version": f"{python}.5", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": machine, "implementation_name": "cpython",
            "platform_python_implementation": "CPython", "os_name": "posix"}


def locked(lock: str, target: Target) -> dict[str, str]:
    """A lock's pins for one Python and machine, {name: version}: every requirement line must be
    `name==version`, with an environment marker or none, and one version apply to each name."""
    pins: dict[str, str] = {}
    for line in (ROOT / lock).read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"{lock}: not pinned: {line}"
        if requirement.marker is None or requirement.marker.evaluate(environment(target)):
            name = normalized(requirement.name)
            assert name not in pins, f"{lock}: two pins of {name} for {target}"
            pins[name] = specifiers[0].version
    return pins


def loose(file: str) -> list[str]:
    """A requirements file's requirement lines, `-r` includes followed, comments cut."""
    lines = []
    for line in (ROOT / file).read_text().splitlines():
        line = line.split(" #")[0].strip()
        if line.startswith("-r "):
            lines += loose(line[3:].strip())
        elif line and not line.startswith("#"):
            lines.append(line)
    return lines


CASES = [(lock, target) for lock, (_, targets) in LOCKS.items() for target in targets]


@text_only
@pytest.mark.parametrize(("lock", "target"), CASES, ids=[f"{lock}-{'-'.join(t)}" for lock, t in CASES])
def test_each_lock_pins_what_its_loose_file_asks(lock, target):
    """Each package the loose file names is pinned at a version the loose file allows, for each
    Python and machine the lock serves: a loose file edited without scripts/lock.sh fails."""
    file = LOCKS[lock][0]
    command = next(line for line in (ROOT / lock).read_text().splitlines()[:3] if "pip compile" in line)
    assert f"pip compile {file} " in command, command
    pins = locked(lock, target)
    for line in loose(file):
        requirement = Requirement(line)
        if requirement.marker and not requirement.marker.evaluate(environment(target)):
            continue
        name = normalized(requirement.name)
        assert name in pins, f"{lock} does not pin {name} for {target} ({file}: {line})"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock} pins {name}=={pins[name]} for {target}, {file} asks {line}")


PAIRS = [  # (lock, the lock it must agree with): installing one after the other changes nothing
    ("requirements.lock", "requirements-dev.lock"),
    ("requirements-ascend-host.lock", "requirements-ascend-host-dev.lock"),
    ("requirements-ascend.lock", "requirements-ascend-dev.lock"),
    ("requirements-ascend-dev.lock", "requirements-ascend-host-dev.lock"),  # fresh venv = host
]


@text_only
@pytest.mark.parametrize(("lock", "other"), PAIRS)
def test_locks_agree_on_every_package_they_share(lock, other):
    for target in LOCKS[lock][1]:
        mine, theirs = locked(lock, target), locked(other, target)
        differ = {name: (version, theirs[name]) for name, version in mine.items()
                  if name in theirs and theirs[name] != version}
        assert not differ, (target, differ)


@text_only
@pytest.mark.parametrize("lock", ["requirements-ascend-host.lock", "requirements-ascend-host-dev.lock"])
def test_the_host_locks_leave_tensorflow_to_the_host(lock):
    """Nothing of the host's TensorFlow is pinned, so pip leaves it as it is; yet the locks were
    resolved against TF 2.6.5 (what it needs, such as its protobuf and typing-extensions, is)."""
    for target in ASCEND_HOST:
        pins = locked(lock, target)
        assert not TENSORFLOW_FAMILY & set(pins), (target, TENSORFLOW_FAMILY & set(pins))
        assert {"tensorboard", "protobuf", "typing-extensions", "wrapt"} <= set(pins)
        assert pins["tensorboard"].startswith("2.6.")


@text_only
def test_a_fresh_venv_gets_the_tensorflow_wheel_of_huaweis_guide():
    """A fresh venv on x86_64 installs tensorflow-cpu 2.6.5, as Huawei's set-up guide does (not the
    GPU build `tensorflow`, which would then sit beside it in one package folder)."""
    for target in ASCEND_FRESH:
        pins = locked("requirements-ascend-dev.lock", target)
        assert pins["tensorflow-cpu"] == "2.6.5" and "tensorflow" not in pins
        assert pins["numpy"].startswith("1.19.")


# Pins with no wheel on PyPI for any machine, only a source archive: each builds without a compiler
# or is on the host already. A new wheel-less pin fails the check below until it is understood here.
SOURCE_ONLY = {
    "antlr4-python3-runtime": "pure Python (OmegaConf's grammar runtime)",
    "clang": "pure Python bindings; TF 2.6.5 pins clang~=5.0, so the host has it with its TensorFlow",
    "promise": "pure Python (tensorflow-datasets 4.6)",
    "termcolor": "pure Python; TF 2.6.5 pins termcolor~=1.1.0, so the host has it",
    "wrapt": "TF 2.6.5 pins wrapt~=1.12.1, so the host has it; its C extension is optional",
}


@pytest.mark.network
@pytest.mark.parametrize("python", ["3.7", "3.8", "3.9"])
def test_every_host_pin_has_an_aarch64_wheel(python, tmp_path):
    """Kunpeng (aarch64) Ascend servers: every pin of the host lock has a manylinux2014 aarch64
    wheel for this Python (or is in SOURCE_ONLY), checked with pip's own platform options."""
    pins = locked("requirements-ascend-host.lock", (python, "aarch64"))
    assert set(SOURCE_ONLY) <= set(pins), "SOURCE_ONLY names a package the lock no longer pins"
    wheels = [f"{name}=={version}" for name, version in sorted(pins.items()) if name not in SOURCE_ONLY]
    abi = "cp37m" if python == "3.7" else f"cp{python.replace('.', '')}"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
         "--platform", "manylinux2014_aarch64", "--platform", "manylinux_2_17_aarch64",
         "--python-version", python, "--implementation", "cp", "--abi", abi, "-d", str(tmp_path),
         *wheels],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    downloaded = {normalized(path.name.split("-")[0]) for path in tmp_path.glob("*.whl")}
    assert downloaded == {normalized(pin.split("==")[0]) for pin in wheels}


@text_only
def test_ci_builds_every_stack_from_its_dev_lock_with_mlflow():
    """CI installs each dev lock (MLflow included, so tests/test_tracking.py runs on every stack),
    the host one after tensorflow-cpu 2.6.5 as Huawei's guide installs it, with the venv's own pip."""
    ci = (ROOT / ".ci" / "run").read_text()
    dev_locks = ("requirements-dev.lock", "requirements-ascend-dev.lock", "requirements-ascend-host-dev.lock")
    for lock in dev_locks:
        assert re.search(rf"pip install -q -r {re.escape(lock)}\b", ci), lock
        assert all("mlflow" in locked(lock, target) for target in LOCKS[lock][1]), lock
    host = ci.index("-r requirements-ascend-host-dev.lock")
    assert ci.rindex("tensorflow-cpu==2.6.5", 0, host) > ci.rindex("-m venv", 0, host)
    assert "--upgrade pip" not in ci and "-U pip" not in ci
