#!/usr/bin/env bash
# ModelZoo learnable_resizer_ID2518 test/train_performance_1p_static_eval.sh on the runner: cd test && bash train_performance_1p_static_eval.sh --data_path=/home [flags]
exec "$(dirname "$0")/../../launch.sh" "$(dirname "$0")" train_performance_1p_static_eval "$@"
