#!/usr/bin/env bash
# LLaMP, base-to-novel 2/2: test the base-trained model on the new classes.
# Usage: DATA=... LLM=... bash scripts/llamp/base2new_test.sh DATASET SEED [CFG]
#   CFG: configs/trainers/LLaMP/<CFG>.yaml, default base2new.
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
protocol base2new_test LLaMP base2new "$@"
