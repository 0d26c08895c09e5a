#!/usr/bin/env bash
# CoCoOp, cross-dataset / domain generalization 1/2: train on ImageNet (all classes, 16 shots), test on it.
# Usage: DATA=... bash scripts/cocoop/xd_train.sh SEED [CFG]
#   CFG: configs/trainers/CoCoOp/<CFG>.yaml, default vit_b16_few_shot.
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
protocol xd_train CoCoOp vit_b16_few_shot "$@"
