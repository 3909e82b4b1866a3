#!/usr/bin/env bash
# ModelZoo learnable_resizer_ID2518 test/train_performance_1p_dynamic_eval.sh on the runner: bash train_performance_1p_dynamic_eval.sh --data_path=/home [flags]
exec "$(dirname "$0")/../launch.sh" learnable_resizer train_performance_1p_dynamic_eval "$@"
