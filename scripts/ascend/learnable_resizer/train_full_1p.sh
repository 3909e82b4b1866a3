#!/usr/bin/env bash
# ModelZoo learnable_resizer_ID2518 test/train_full_1p.sh on the runner: bash train_full_1p.sh --data_path=/home [flags]
exec "$(dirname "$0")/../launch.sh" learnable_resizer train_full_1p "$@"
