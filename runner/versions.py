"""Installed distributions and their versions, read from package metadata (no import of the
packages themselves, so config checks stay fast), on every Python the stacks run: 3.7 has no
importlib.metadata, and TensorFlow 2.6's own dependencies bring its backport there."""
from __future__ import annotations

try:
    from importlib import metadata
except ImportError:  # Python 3.7
    import importlib_metadata as metadata  # type: ignore[no-redef]

# Where device=npu runs, for the messages that send a user there (README, "Setting up the Ascend stack").
ASCEND_STACK = (
    "the Ascend stack (Python 3.7-3.9, TensorFlow 2.6.5: `pip install -r requirements-ascend.lock` "
    "in a fresh venv on x86_64, or `pip install -r requirements-ascend-host.lock` where TensorFlow "
    "2.6.5 is installed already)"
)
# The names TensorFlow is installed under: PyPI's full and CPU wheels (Huawei's guide installs
# tensorflow-cpu on x86 Ascend hosts), Linaro's aarch64 builds, the old GPU wheel.
TENSORFLOW_DISTRIBUTIONS = ("tensorflow", "tensorflow-cpu", "tensorflow-aarch64", "tensorflow-gpu")


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution (a pip name), or None when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def installed_tensorflow() -> tuple[str, str] | None:
    """(distribution, version) of the installed TensorFlow, whichever name it came under."""
    for distribution in TENSORFLOW_DISTRIBUTIONS:
        version = installed_version(distribution)
        if version is not None:
            return distribution, version
    return None
