#!/usr/bin/env bash
# Shared by every scripts/ascend/<recipe>/test/*.sh: make the repository importable from any
# working directory and hand the script's folder, its name and its flags to runner/ascend/scripts.py,
# which translates the flags and writes the originals' outputs under that folder (docs/ascend.md).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m runner.ascend "$@"
