#!/usr/bin/env bash
# ModelZoo learnable_resizer_ID2518 test/train_full_1p.sh on the runner: cd test && bash train_full_1p.sh --data_path=/home [flags]
exec "$(dirname "$0")/../../launch.sh" "$(dirname "$0")" train_full_1p "$@"
