#!/usr/bin/env bash
# CoCoOp, base-to-novel 2/2: test the base-trained model on the new classes.
# Usage: DATA=... bash scripts/cocoop/base2new_test.sh DATASET SEED [CFG]
#   CFG: configs/trainers/CoCoOp/<CFG>.yaml, default vit_b16_base2new.
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
protocol base2new_test CoCoOp vit_b16_base2new "$@"
