# Shared settings of the LLaMP protocol scripts (sourced, not run).
#   DATA   folder holding the datasets (CoOp layout)              [required]
#   LLM    LLM folder (e.g. a local copy of Llama-2-7b-chat-hf)    [required]
#   CLIP   CLIP folder or OpenAI .pt; empty: ~/.cache/clip/ViT-B-16.pt
#   CACHE  knowledge cache folder; empty: <dataset folder>/llamp_cache/<LLM folder name>
#   LAUNCH how to start train.py (default "python"; e.g. "deepspeed --num_gpus 4")
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
: "${DATA:?set DATA to the folder holding the datasets}"
: "${LLM:?set LLM to the LLM folder (TRAINER.LLAMP.LLM_PATH)}"
CLIP=${CLIP:-}
CACHE=${CACHE:-}
LAUNCH=${LAUNCH:-python}
TRAINER=LLaMP

# KEY VALUE overrides every run shares.
model_opts() {
    echo TRAINER.LLAMP.LLM_PATH "$LLM"
    [ -n "$CLIP" ] && echo MODEL.BACKBONE.PATH "$CLIP"
    [ -n "$CACHE" ] && echo TRAINER.LLAMP.CACHE_DIR "$CACHE"
    # ImageNet: 10 epochs instead of 20 (the reference setting).
    [ "$1" = "imagenet" ] && echo OPTIM.MAX_EPOCH 10
    return 0
}

epochs_for() { if [ "$1" = "imagenet" ]; then echo 10; else echo 20; fi; }

# A run is finished when its log holds Dassl's accuracy line.
finished() { [ -f "$1/log.txt" ] && grep -q "\* accuracy" "$1/log.txt"; }
