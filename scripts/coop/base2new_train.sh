#!/usr/bin/env bash
# CoOp, base-to-novel 1/2: train on the base classes (16 shots) and test on them.
# Usage: DATA=... bash scripts/coop/base2new_train.sh DATASET SEED [CFG]
#   CFG: configs/trainers/CoOp/<CFG>.yaml, default vit_b16_base2new
#   (vit_b16_base2new_imagenet on ImageNet: 50 epochs instead of 200, as CoOp's scripts).
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
cfg=vit_b16_base2new
if [ "${1:-}" = imagenet ]; then cfg=vit_b16_base2new_imagenet; fi
protocol base2new_train CoOp "$cfg" "$@"
