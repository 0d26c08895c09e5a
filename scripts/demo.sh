#!/usr/bin/env bash
# The embedded default, offline on CPU: tiny random-weight models, the Synthetic
# dataset and its knowledge cache, LLaMP trained on the base classes through
# train.py, then evaluated on base and new classes: prints Base / New / HM.
# Usage: bash scripts/demo.sh [WORK_DIR]   (default: ./demo)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-demo}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
SECONDS=0

bash scripts/install.sh
echo "== tiny models -> $WORK/tiny"
python -m llamp.tiny --out "$WORK/tiny" > /dev/null

echo "== knowledge cache for Synthetic (the dataset is drawn under $WORK/data on first use)"
python -m llm_prompts build --root "$WORK/data" --dataset-config-file configs/datasets/synthetic.yaml \
    --llm "$WORK/tiny/llm" --clip "$WORK/tiny/clip" --quiet

run() {  # OUTPUT_DIR [train.py flags and KEY VALUE options]
    local out=$1; shift
    python train.py --root "$WORK/data" --seed 1 --trainer LLaMP \
        --dataset-config-file configs/datasets/synthetic.yaml \
        --config-file configs/trainers/LLaMP/demo.yaml --output-dir "$out" "$@" \
        > "$out.out" 2>&1 || { tail -n 30 "$out.out"; exit 1; }
    grep '\* accuracy' "$out.out" | tail -n 1 | sed -E 's/.* ([0-9.]+)%/\1/'
}
OPTS=(MODEL.BACKBONE.PATH "$WORK/tiny/clip" TRAINER.LLAMP.LLM_PATH "$WORK/tiny/llm" DATASET.NUM_SHOTS 16)
EPOCHS=$(grep -E '^\s*MAX_EPOCH' configs/trainers/LLaMP/demo.yaml | awk '{print $2}')
mkdir -p "$WORK/output"
echo "== training LLaMP on the base classes ($EPOCHS epochs)"
BASE=$(run "$WORK/output/train_base" "${OPTS[@]}" DATASET.SUBSAMPLE_CLASSES base)
echo "== evaluating on the new classes"
NEW=$(run "$WORK/output/test_new" --eval-only --model-dir "$WORK/output/train_base" --load-epoch "$EPOCHS" \
    "${OPTS[@]}" DATASET.SUBSAMPLE_CLASSES new)
python - "$BASE" "$NEW" <<'PY'
import sys
base, new = map(float, sys.argv[1:])
hm = 2 * base * new / (base + new) if base + new else 0.0
print(f"Base {base:.1f}  New {new:.1f}  HM {hm:.1f}")
PY
echo "(tiny random-weight models: chance is 16.7%; logs in $WORK/output; ${SECONDS}s)"
