#!/usr/bin/env bash
# MaPLe, cross-dataset / domain generalization 1/2: train on ImageNet (all classes, 16 shots), test on it.
# Usage: DATA=... bash scripts/maple/xd_train.sh SEED [CFG]
#   CFG: configs/trainers/MaPLe/<CFG>.yaml, default vit_b16_cross_datasets (the release's cross-dataset setting).
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
protocol xd_train MaPLe vit_b16_cross_datasets "$@"
