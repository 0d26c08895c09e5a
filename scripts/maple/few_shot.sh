#!/usr/bin/env bash
# MaPLe, few-shot: train and test on all classes, SHOTS (1, 2, 4, 8, 16) images per class.
# Usage: DATA=... bash scripts/maple/few_shot.sh DATASET SEED SHOTS [CFG]
#   CFG: configs/trainers/MaPLe/<CFG>.yaml, default vit_b16_few_shot.
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
protocol few_shot MaPLe vit_b16_few_shot "$@"
