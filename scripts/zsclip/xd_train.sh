#!/usr/bin/env bash
# Zero-shot CLIP, cross-dataset / domain generalization 1/2: evaluate on ImageNet.
# Usage: DATA=... bash scripts/zsclip/xd_train.sh SEED [CFG]
#   CFG: configs/trainers/ZeroshotCLIP/<CFG>.yaml, default vit_b16.
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
protocol xd_train ZeroshotCLIP vit_b16 "$@"
