#!/usr/bin/env bash
# CoCoOp, base-to-novel 1/2: train on the base classes (16 shots) and test on them.
# Usage: DATA=... bash scripts/cocoop/base2new_train.sh DATASET SEED [CFG]
#   CFG: configs/trainers/CoCoOp/<CFG>.yaml, default vit_b16_base2new.
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
protocol base2new_train CoCoOp vit_b16_base2new "$@"
