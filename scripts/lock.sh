#!/usr/bin/env bash
# Regenerates the lock files from the loose requirements files (the ones people edit):
#   requirements-dev.lock, requirements.lock                (default stack, Python 3.11)
#   requirements-ascend-dev.lock, requirements-ascend.lock  (Ascend stack, Python 3.9)
# Every package pinned (==), for Linux x86_64 (TensorFlow's wheels). Each dev lock is resolved
# first and its runtime lock within it (-c), so both agree and installing one after the other
# changes nothing. setuptools is left out: each stack runs on the venv's own (TensorBoard 2.6,
# submitit 1.5.3 and MLflow 2.12.2 import pkg_resources, which setuptools 82 removed).
# uv keeps the versions a lock already holds where the .txt files still allow them; to move
# everything to the newest allowed, delete the four .lock files first.
# Needs uv (`pip install uv`; generated with uv 0.13.9). Run from anywhere: bash scripts/lock.sh
set -euo pipefail
export UV_PYTHON_DOWNLOADS=never  # a python3.9 on PATH builds the few sdists for 3.9, else uv uses another
cd "$(dirname "$0")/.."
compile() {  # python version, input, output, extra arguments
  uv pip compile "$2" --python-version "$1" --python-platform x86_64-unknown-linux-gnu \
    --no-emit-package setuptools -o "$3" "${@:4}" >/dev/null
}
compile 3.11 requirements-dev.txt requirements-dev.lock
compile 3.11 requirements.txt requirements.lock -c requirements-dev.lock
compile 3.9 requirements-ascend-dev.txt requirements-ascend-dev.lock
compile 3.9 requirements-ascend.txt requirements-ascend.lock -c requirements-ascend-dev.lock
