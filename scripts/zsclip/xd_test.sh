#!/usr/bin/env bash
# Zero-shot CLIP, cross-dataset / domain generalization 2/2: evaluate on DATASET
# (one of the other 10 datasets, or imagenetv2, imagenet_sketch, imagenet_a, imagenet_r).
# Usage: DATA=... bash scripts/zsclip/xd_test.sh DATASET SEED [CFG]
#   CFG: configs/trainers/ZeroshotCLIP/<CFG>.yaml, default vit_b16.
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
protocol xd_test ZeroshotCLIP vit_b16 "$@"
