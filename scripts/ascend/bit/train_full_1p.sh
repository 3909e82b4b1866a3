#!/usr/bin/env bash
# ModelZoo bit_ID2496 test/train_full_1p.sh on the runner: bash train_full_1p.sh --data_path=/home/data [flags]
exec "$(dirname "$0")/../launch.sh" bit train_full_1p "$@"
