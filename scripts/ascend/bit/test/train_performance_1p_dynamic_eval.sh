#!/usr/bin/env bash
# ModelZoo bit_ID2496 test/train_performance_1p_dynamic_eval.sh on the runner: cd test && bash train_performance_1p_dynamic_eval.sh --data_path=/home/data [flags]
exec "$(dirname "$0")/../../launch.sh" "$(dirname "$0")" train_performance_1p_dynamic_eval "$@"
