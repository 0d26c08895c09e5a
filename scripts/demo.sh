#!/usr/bin/env bash
# The embedded default, offline on CPU: tiny random-weight models, the Synthetic
# dataset, and zero-shot CLIP evaluated on its base and new classes.
# Usage: bash scripts/demo.sh [WORK_DIR]   (default: ./demo)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-demo}
export HF_HUB_OFFLINE=1

bash scripts/install.sh
python -m llamp.tiny --out "$WORK/tiny"

for SUBSET in base new; do
    python train.py --root "$WORK/data" --trainer ZeroshotCLIP --seed 1 \
        --dataset-config-file configs/datasets/synthetic.yaml \
        --config-file configs/trainers/ZeroshotCLIP/demo.yaml \
        --output-dir "$WORK/output/zsclip/$SUBSET" --eval-only \
        MODEL.BACKBONE.PATH "$WORK/tiny/clip" DATASET.SUBSAMPLE_CLASSES "$SUBSET" > "$WORK/zsclip_$SUBSET.out" 2>&1 \
        || { tail -n 20 "$WORK/zsclip_$SUBSET.out"; exit 1; }
    echo "$SUBSET: $(grep '\* accuracy' "$WORK/zsclip_$SUBSET.out")"
done
echo "(random-weight tiny CLIP: accuracies are near chance, 1/6 = 16.7%; logs in $WORK/output)"
