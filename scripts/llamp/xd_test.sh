#!/usr/bin/env bash
# LLaMP, cross-dataset / domain generalization 2/2: test the ImageNet model on DATASET
# (one of the other 10 datasets, or imagenetv2, imagenet_sketch, imagenet_a, imagenet_r).
# The knowledge cache is DATASET's own; ImageNet's serves the ImageNet variants (classes by name).
# Usage: DATA=... LLM=... bash scripts/llamp/xd_test.sh DATASET SEED [CFG]
#   CFG: configs/trainers/LLaMP/<CFG>.yaml, default few_shot.
#   Environment and output layout: scripts/common.sh
# shellcheck source=scripts/common.sh
source "$(dirname "$0")/../common.sh"
protocol xd_test LLaMP few_shot "$@"
