#!/usr/bin/env bash
# LLaMP, few-shot: train and test on all classes, SHOTS (1, 2, 4, 8, 16) images per class.
# Usage: DATA=... LLM=... bash scripts/llamp/few_shot.sh DATASET SEED SHOTS [CFG]
#   CFG: configs/trainers/LLaMP/<CFG>.yaml, default few_shot.
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
protocol few_shot LLaMP few_shot "$@"
