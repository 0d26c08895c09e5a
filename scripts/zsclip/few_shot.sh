#!/usr/bin/env bash
# Zero-shot CLIP, few-shot: evaluate on all classes (SHOTS only names the folder).
# Usage: DATA=... bash scripts/zsclip/few_shot.sh DATASET SEED SHOTS [CFG]
#   CFG: configs/trainers/ZeroshotCLIP/<CFG>.yaml, default vit_b16.
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
protocol few_shot ZeroshotCLIP vit_b16 "$@"
