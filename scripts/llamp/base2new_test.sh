#!/usr/bin/env bash
# Base-to-novel, step 2: evaluate the base-trained model on the new classes.
# Usage: DATA=... LLM=... bash scripts/llamp/base2new_test.sh DATASET SEED [CFG]
source "$(dirname "$0")/common.sh"
DATASET=$1; SEED=$2; CFG=${3:-base2new}; SHOTS=16
COMMON=${DATASET}/shots_${SHOTS}/${TRAINER}/${CFG}/seed${SEED}
MODEL_DIR=output/base2new/train_base/${COMMON}
DIR=output/base2new/test_new/${COMMON}
if finished "$DIR"; then echo "Results already in ${DIR}: skipping"; exit 0; fi
LOADEP=${LOADEP:-$(epochs_for "$DATASET")}
# shellcheck disable=SC2046
python train.py --root "$DATA" --seed "$SEED" --trainer "$TRAINER" \
    --dataset-config-file "configs/datasets/${DATASET}.yaml" \
    --config-file "configs/trainers/${TRAINER}/${CFG}.yaml" \
    --output-dir "$DIR" --model-dir "$MODEL_DIR" --load-epoch "$LOADEP" --eval-only \
    DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES new $(model_opts "$DATASET")
