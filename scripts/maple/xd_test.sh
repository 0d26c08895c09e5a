#!/usr/bin/env bash
# MaPLe, cross-dataset / domain generalization 2/2: test the ImageNet model on DATASET
# (one of the other 10 datasets, or imagenetv2, imagenet_sketch, imagenet_a, imagenet_r).
# Usage: DATA=... bash scripts/maple/xd_test.sh DATASET SEED [CFG]
#   CFG: configs/trainers/MaPLe/<CFG>.yaml, default vit_b16_cross_datasets (the release's cross-dataset setting).
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
protocol xd_test MaPLe vit_b16_cross_datasets "$@"
