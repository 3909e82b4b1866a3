"""env.json's environment: the versions of Python, TensorFlow, Keras and the rest, the platform,
the git commit and the device a run ran on. Read from package metadata: nothing here imports
TensorFlow. Where the file goes: runner/record/run_folder.py.
"""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

from runner.versions import installed_tensorflow, installed_version

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(device: dict[str, Any], keras_api: dict[str, str],
                placement: dict[str, Any]) -> dict[str, Any]:
    """keras_api: the Keras the run used ({"module": "tf_keras", "version": "2.21.0"});
    placement: where it ran (runner/record/placement.py)."""
    packages = ("keras", "tf-keras", "tensorflow-datasets", "tensorflow-hub", "hydra-core")
    # TensorFlow under its version whichever wheel brought it (tensorflow-cpu on Ascend hosts).
    tensorflow_distribution, tensorflow_version = installed_tensorflow() or (None, None)
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "keras_api": keras_api,
        "packages": {"tensorflow": tensorflow_version,
                     **{name: installed_version(name) for name in packages}},
        "tensorflow_distribution": tensorflow_distribution,
        "git_commit": git_commit(),
        "device": device,
        "placement": placement,
    }
