#!/usr/bin/env bash
# ModelZoo bit_ID2496 test/train_full_1p.sh on the runner: cd test && bash train_full_1p.sh --data_path=/home/data [flags]
exec "$(dirname "$0")/../../launch.sh" "$(dirname "$0")" train_full_1p "$@"
