#!/usr/bin/env bash
# KgCoOp, cross-dataset / domain generalization 1/2: train on ImageNet (all classes, 16 shots), test on it.
# Usage: DATA=... bash scripts/kgcoop/xd_train.sh SEED [CFG]
#   CFG: configs/trainers/KgCoOp/<CFG>.yaml, default vit_b16_few_shot.
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
protocol xd_train KgCoOp vit_b16_few_shot "$@"
