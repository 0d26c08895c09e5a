#!/usr/bin/env bash
# Zero-shot CLIP, base-to-novel 1/2: evaluate on the base classes (nothing is trained).
# Usage: DATA=... bash scripts/zsclip/base2new_train.sh DATASET SEED [CFG]
#   CFG: configs/trainers/ZeroshotCLIP/<CFG>.yaml, default vit_b16.
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
protocol base2new_train ZeroshotCLIP vit_b16 "$@"
