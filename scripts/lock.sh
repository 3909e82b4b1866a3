#!/usr/bin/env bash
# Regenerates the lock files from the loose requirements files (the ones people edit):
#   requirements-dev.lock, requirements.lock                (default stack: Python 3.11, x86_64)
#   requirements-ascend-host-dev.lock, requirements-ascend-host.lock
#       (Ascend stack around the host's TensorFlow 2.6.5: Python 3.7-3.9, Linux, any architecture;
#        TensorFlow, keras, tensorflow-estimator, numpy and h5py resolved against, never emitted)
#   requirements-ascend-dev.lock, requirements-ascend.lock
#       (Ascend stack in a fresh venv: the host locks plus tensorflow-cpu 2.6.5, x86_64)
# Every package pinned (==), so pip has nothing to resolve. Each dev lock is resolved first and
# its runtime lock within it (-c), so both agree and installing one after the other changes
# nothing; the fresh-venv locks are resolved within the host locks, so the two Ascend cases get the
# same packages. The Ascend locks are universal (environment markers) over the Pythons of
# scripts/ascend-host/pyproject.toml, with the fewest versions per package: one version for
# Python 3.7, 3.8 and 3.9 wherever one exists. setuptools is left out: each stack runs
# on the venv's own (TensorBoard 2.6, submitit and MLflow 2.12.2 import pkg_resources, which
# setuptools 82 removed).
# uv keeps the versions a lock already holds where the .txt files still allow them; to move
# everything to the newest allowed, delete the .lock files first.
# Needs uv (`pip install uv`; generated with uv 0.13.9). Run from anywhere: bash scripts/lock.sh
set -euo pipefail
export UV_PYTHON_DOWNLOADS=never  # sdists are built with a Python found here
cd "$(dirname "$0")/.."
compile() {  # python version, input, output, extra arguments
  uv pip compile "$2" --python-version "$1" --python-platform x86_64-unknown-linux-gnu \
    --no-emit-package setuptools -o "$3" "${@:4}" >/dev/null
}
compile 3.11 requirements-dev.txt requirements-dev.lock
compile 3.11 requirements.txt requirements.lock -c requirements-dev.lock

host=scripts/ascend-host
# The Ascend locks: universal over scripts/ascend-host/pyproject.toml's hosts, the fewest versions
# per package. Each is seeded with the lock it must agree with (uv keeps the versions an output file
# already holds where the input allows them): a -c constraint would make uv split the resolution by
# machine, and TensorFlow 2.6.5 has no aarch64 wheel to resolve that split with.
ascend() {  # input, output, seed lock or "", extra arguments
  [[ -z "$3" ]] || cp "$3" "$2"
  uv --project "$host" pip compile "$1" --universal --python-version 3.7 --fork-strategy fewest \
    --no-emit-package setuptools -o "$2" "${@:4}" >/dev/null
}
# Around the host's TensorFlow: resolved against TF 2.6.5's own requirements, without its family.
around_tensorflow=("$host/pyproject.toml")
for package in tensorflow keras tensorflow-estimator numpy h5py; do
  around_tensorflow+=(--no-emit-package "$package")
done
ascend requirements-ascend-host-dev.txt requirements-ascend-host-dev.lock "" "${around_tensorflow[@]}"
ascend requirements-ascend-host.txt requirements-ascend-host.lock requirements-ascend-host-dev.lock \
  "${around_tensorflow[@]}"
# A fresh venv on x86_64: the same, plus tensorflow-cpu 2.6.5 and its family.
ascend requirements-ascend-dev.txt requirements-ascend-dev.lock requirements-ascend-host-dev.lock
ascend requirements-ascend.txt requirements-ascend.lock requirements-ascend-dev.lock
