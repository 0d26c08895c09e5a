#!/usr/bin/env bash
# The embedded default, offline on CPU: the tiny models (the CLIP pre-trained for a minute
# or two on Synthetic-style drawings, the LLM random), the Synthetic dataset and its knowledge
# cache; zero-shot CLIP evaluated on the base and new classes, then LLaMP trained on the base
# classes through train.py and evaluated on both: prints the two side by side (Base / New / HM).
# Usage: bash scripts/demo.sh [WORK_DIR]   (default: ./demo)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-demo}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
SECONDS=0

bash scripts/install.sh
echo "== tiny models -> $WORK/tiny (the CLIP's pre-training runs once)"
python -m llamp.tiny --out "$WORK/tiny" --log-every 250 | grep -v '^{' 

echo "== knowledge cache for Synthetic (the dataset is drawn under $WORK/data on first use)"
python -m llm_prompts build --root "$WORK/data" --dataset-config-file configs/datasets/synthetic.yaml \
    --llm "$WORK/tiny/llm" --clip "$WORK/tiny/clip" --quiet

run() {  # TRAINER OUTPUT_DIR [train.py flags and KEY VALUE options]
    local trainer=$1 out=$2; shift 2
    python train.py --root "$WORK/data" --seed 1 --trainer "$trainer" \
        --dataset-config-file configs/datasets/synthetic.yaml \
        --config-file "configs/trainers/$trainer/demo.yaml" --output-dir "$out" "$@" \
        > "$out.out" 2>&1 || { tail -n 30 "$out.out"; exit 1; }
    grep '\* accuracy' "$out.out" | tail -n 1 | sed -E 's/.* ([0-9.]+)%/\1/'
}
OPTS=(MODEL.BACKBONE.PATH "$WORK/tiny/clip" TRAINER.LLAMP.LLM_PATH "$WORK/tiny/llm" DATASET.NUM_SHOTS 16)
EPOCHS=$(grep -E '^\s*MAX_EPOCH' configs/trainers/LLaMP/demo.yaml | awk '{print $2}')
mkdir -p "$WORK/output"
echo "== zero-shot CLIP on the base and new classes"
ZS_BASE=$(run ZeroshotCLIP "$WORK/output/zeroshot_base" "${OPTS[@]}" DATASET.SUBSAMPLE_CLASSES base)
ZS_NEW=$(run ZeroshotCLIP "$WORK/output/zeroshot_new" "${OPTS[@]}" DATASET.SUBSAMPLE_CLASSES new)
echo "== training LLaMP on the base classes ($EPOCHS epochs), then evaluating on the new classes"
BASE=$(run LLaMP "$WORK/output/train_base" "${OPTS[@]}" DATASET.SUBSAMPLE_CLASSES base)
NEW=$(run LLaMP "$WORK/output/test_new" --eval-only --model-dir "$WORK/output/train_base" --load-epoch "$EPOCHS" \
    "${OPTS[@]}" DATASET.SUBSAMPLE_CLASSES new)
python - "$ZS_BASE" "$ZS_NEW" "$BASE" "$NEW" <<'PY'
import sys
zs_base, zs_new, base, new = map(float, sys.argv[1:])
hm = lambda b, n: 2 * b * n / (b + n) if b + n else 0.0
print(f"{'':<10}{'Base':>7}{'New':>7}{'HM':>7}")
for name, b, n in (("zero-shot", zs_base, zs_new), ("LLaMP", base, new)):
    print(f"{name:<10}{b:7.1f}{n:7.1f}{hm(b, n):7.1f}")
PY
echo "(18 base and 18 new classes: chance is 5.6%; logs in $WORK/output; ${SECONDS}s)"
