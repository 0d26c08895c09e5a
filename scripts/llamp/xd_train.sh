#!/usr/bin/env bash
# LLaMP, cross-dataset / domain generalization 1/2: train on ImageNet (all classes, 16 shots), test on it.
# Usage: DATA=... LLM=... bash scripts/llamp/xd_train.sh SEED [CFG]
#   CFG: configs/trainers/LLaMP/<CFG>.yaml, default few_shot.
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
protocol xd_train LLaMP few_shot "$@"
