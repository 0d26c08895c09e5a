#!/usr/bin/env bash
# KgCoOp, cross-dataset / domain generalization 2/2: test the ImageNet model on DATASET
# (one of the other 10 datasets, or imagenetv2, imagenet_sketch, imagenet_a, imagenet_r).
# Usage: DATA=... bash scripts/kgcoop/xd_test.sh DATASET SEED [CFG]
#   CFG: configs/trainers/KgCoOp/<CFG>.yaml, default vit_b16_few_shot.
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
protocol xd_test KgCoOp vit_b16_few_shot "$@"
