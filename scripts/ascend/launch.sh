#!/usr/bin/env bash
# Shared by every script under scripts/ascend/: make the repository importable from any working
# directory and hand the flags to runner/ascend.py, which translates them (docs/after_training.md).
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" -m runner.ascend "$@"
