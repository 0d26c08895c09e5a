#!/usr/bin/env bash
# LLaMP, base-to-novel 1/2: train on the base classes (16 shots) and test on them.
# Usage: DATA=... LLM=... bash scripts/llamp/base2new_train.sh DATASET SEED [CFG]
#   CFG: configs/trainers/LLaMP/<CFG>.yaml, default base2new.
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
protocol base2new_train LLaMP base2new "$@"
