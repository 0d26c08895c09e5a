#!/usr/bin/env bash
# CoOp, cross-dataset / domain generalization 1/2: train on ImageNet (all classes, 16 shots), test on it.
# Usage: DATA=... bash scripts/coop/xd_train.sh SEED [CFG]
#   CFG: configs/trainers/CoOp/<CFG>.yaml, default vit_b16_few_shot_ep50
#   (CoOp's ImageNet setting: 16 shots, 50 epochs).
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
protocol xd_train CoOp vit_b16_few_shot_ep50 "$@"
