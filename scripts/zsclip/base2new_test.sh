#!/usr/bin/env bash
# Zero-shot CLIP, base-to-novel 2/2: evaluate on the new classes.
# Usage: DATA=... bash scripts/zsclip/base2new_test.sh DATASET SEED [CFG]
#   CFG: configs/trainers/ZeroshotCLIP/<CFG>.yaml, default vit_b16.
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
protocol base2new_test ZeroshotCLIP vit_b16 "$@"
