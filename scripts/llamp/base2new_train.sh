#!/usr/bin/env bash
# Base-to-novel, step 1: train on the base classes (16 shots) and evaluate them.
# Usage: DATA=... LLM=... bash scripts/llamp/base2new_train.sh DATASET SEED [CFG]
#   DATASET: a name under configs/datasets (e.g. oxford_pets); CFG: default base2new
source "$(dirname "$0")/common.sh"
DATASET=$1; SEED=$2; CFG=${3:-base2new}; SHOTS=16
DIR=output/base2new/train_base/${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}/seed${SEED}
if finished "$DIR"; then echo "Results already in ${DIR}: skipping"; exit 0; fi
# shellcheck disable=SC2046
$LAUNCH train.py --root "$DATA" --seed "$SEED" --trainer "$TRAINER" \
    --dataset-config-file "configs/datasets/${DATASET}.yaml" \
    --config-file "configs/trainers/${TRAINER}/${CFG}.yaml" \
    --output-dir "$DIR" \
    DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES base $(model_opts "$DATASET")
