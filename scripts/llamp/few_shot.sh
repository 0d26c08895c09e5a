#!/usr/bin/env bash
# Few-shot: train and evaluate on all classes with K shots per class.
# Usage: DATA=... LLM=... bash scripts/llamp/few_shot.sh DATASET SEED SHOTS [CFG]
source "$(dirname "$0")/common.sh"
DATASET=$1; SEED=$2; SHOTS=$3; CFG=${4:-few_shot}
DIR=output/few_shot/${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}/seed${SEED}
if finished "$DIR"; then echo "Results already in ${DIR}: skipping"; exit 0; fi
# shellcheck disable=SC2046
$LAUNCH train.py --root "$DATA" --seed "$SEED" --trainer "$TRAINER" \
    --dataset-config-file "configs/datasets/${DATASET}.yaml" \
    --config-file "configs/trainers/${TRAINER}/${CFG}.yaml" \
    --output-dir "$DIR" \
    DATASET.NUM_SHOTS "$SHOTS" $(model_opts "$DATASET")
