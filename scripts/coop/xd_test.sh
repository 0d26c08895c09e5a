#!/usr/bin/env bash
# CoOp, cross-dataset / domain generalization 2/2: test the ImageNet model on DATASET
# (one of the other 10 datasets, or imagenetv2, imagenet_sketch, imagenet_a, imagenet_r).
# Usage: DATA=... bash scripts/coop/xd_test.sh DATASET SEED [CFG]
#   CFG: configs/trainers/CoOp/<CFG>.yaml, default vit_b16_few_shot_ep50
#   (CoOp's ImageNet setting: 16 shots, 50 epochs).
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
protocol xd_test CoOp vit_b16_few_shot_ep50 "$@"
