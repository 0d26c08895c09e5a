#!/usr/bin/env bash
# CoOp, few-shot: train and test on all classes, SHOTS (1, 2, 4, 8, 16) images per class.
# Usage: DATA=... bash scripts/coop/few_shot.sh DATASET SEED SHOTS [CFG]
#   CFG: configs/trainers/CoOp/<CFG>.yaml, default by CoOp's reference epochs:
#   vit_b16_few_shot_ep50 for 1 shot and for ImageNet, vit_b16_few_shot_ep100 for 2 and 4 shots,
#   vit_b16_few_shot (200 epochs) for 8 and 16 shots.
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
case "${3:-}" in
    1) cfg=vit_b16_few_shot_ep50 ;;
    2|4) cfg=vit_b16_few_shot_ep100 ;;
    *) cfg=vit_b16_few_shot ;;
esac
if [ "${1:-}" = imagenet ]; then cfg=vit_b16_few_shot_ep50; fi
protocol few_shot CoOp "$cfg" "$@"
