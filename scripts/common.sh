# shellcheck shell=bash
# Shared code of the protocol scripts scripts/<method>/*.sh (sourced, not run).
#
# A method's script names its stage, trainer and default config, e.g.
#     protocol base2new_train CoOp vit_b16_base2new "$@"
# and everything else is here: the output layout, skipping finished runs,
# which runs are evaluations, and the options a trainer needs.
#
# Stages and arguments (CFG: a file configs/trainers/<Trainer>/<CFG>.yaml):
#   base2new_train DATASET SEED [CFG]        train on the base classes (SHOTS shots), test on them
#   base2new_test  DATASET SEED [CFG]        test that model on the new classes
#   few_shot       DATASET SEED SHOTS [CFG]  train and test on all classes, SHOTS shots
#   xd_train       SEED [CFG]                train on ImageNet, all classes, SHOTS shots; test on ImageNet
#   xd_test        DATASET SEED [CFG]        test that model on another dataset (all its classes)
#
# Environment:
#   DATA        folder holding the datasets (train.py --root)                                  [required]
#   CLIP        CLIP weights for every trainer (MODEL.BACKBONE.PATH: folder, OpenAI .pt or
#               cached hub name); empty: the config's, else ~/.cache/clip
#   LLM         LLaMP: the LLM folder (TRAINER.LLAMP.LLM_PATH)                               [required for LLaMP]
#   CACHE       LLaMP: knowledge cache folder (TRAINER.LLAMP.CACHE_DIR); empty: the dataset's own,
#               <dataset folder>/llamp_cache/<LLM folder name> (ImageNet's for the ImageNet variants in xd_test).
#               On ImageNet LLaMP trains 10 epochs (OPTIM.MAX_EPOCH 10, the reference; EXTRA_OPTS may override)
#   LAUNCH      how training runs start (default python; e.g. "deepspeed --num_gpus 4"); tests use python
#   OUTPUT      root of the output layout (default <repository>/output)
#   EXTRA_OPTS  KEY VALUE pairs appended to every train.py call (split on spaces), e.g. "OPTIM.MAX_EPOCH 5"
#   SHOTS       shots per class of base2new and xd (default 16; few_shot takes SHOTS as an argument)
#   LOADEP      checkpoint epoch the *_test stages load (default: model-best if saved, else the last epoch)
# Relative paths are relative to the current folder; the scripts run from anywhere.
#
# Output layout (read back by python -m comparison.results; comparison/layout.py):
#   $OUTPUT/base2new/train_base/<dataset>/shots_<K>/<Trainer>/<cfg>/seed<k>
#   $OUTPUT/base2new/test_new/<dataset>/shots_<K>/<Trainer>/<cfg>/seed<k>
#   $OUTPUT/few_shot/<dataset>/shots_<K>/<Trainer>/<cfg>/seed<k>
#   $OUTPUT/xd/train/imagenet/shots_<K>/<Trainer>/<cfg>/seed<k>
#   $OUTPUT/xd/test/<dataset>/shots_<K>/<Trainer>/<cfg>/seed<k>
# each with train.py's log.txt (and checkpoints, for training runs). A run whose
# log already holds a result is skipped.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PYTHONPATH="${REPO}${PYTHONPATH:+:${PYTHONPATH}}"
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}  # models come from local folders: no network at run time
CLIP=${CLIP:-}
LLM=${LLM:-}
CACHE=${CACHE:-}
LAUNCH=${LAUNCH:-python}
OUTPUT=${OUTPUT:-${REPO}/output}
EXTRA_OPTS=${EXTRA_OPTS:-}
SHOTS=${SHOTS:-16}
LOADEP=${LOADEP:-}

XD_SOURCE=imagenet
IMAGENET_VARIANTS=" imagenetv2 imagenet_sketch imagenet_a imagenet_r "
EVAL_ONLY_TRAINERS=" ZeroshotCLIP "  # nothing to train: every stage is an evaluation

fail() { echo "error: $*" >&2; exit 2; }

# The accuracy of a finished run (the same reading as the results parser); fails if there is none.
run_result() { python -m comparison.logs "$1" 2>/dev/null; }

# The epoch to load from a training run's checkpoints: LOADEP, or empty when the
# trainer saved model-best (train.py then loads it), or the last epoch saved.
load_epoch() {
    local model_dir=$1 file epoch last=""
    if [ -n "$LOADEP" ]; then echo "$LOADEP"; return; fi
    if compgen -G "${model_dir}/*/model-best.pth.tar" > /dev/null; then return; fi
    for file in "${model_dir}"/*/model.pth.tar-*; do
        epoch=${file##*-}
        if [[ $epoch =~ ^[0-9]+$ ]] && { [ -z "$last" ] || [ "$epoch" -gt "$last" ]; }; then last=$epoch; fi
    done
    [ -n "$last" ] || fail "no checkpoint (<model>/model.pth.tar-<epoch>) in ${model_dir}"
    echo "$last"
}

# LLaMP's default cache folder of a dataset folder and an LLM (llamp/knowledge_cache/files.py decides).
default_cache_folder() {
    python - "$1" "$2" <<'PY'
import sys
from llamp.knowledge_cache.files import default_cache_folder
print(default_cache_folder(sys.argv[1], sys.argv[2]))
PY
}

# Options a trainer needs beyond its config: OPTS+=(KEY VALUE ...). Args: TRAINER STAGE DATASET
trainer_opts() {
    local trainer=$1 stage=$2 dataset=$3
    if [ -n "$CLIP" ]; then OPTS+=(MODEL.BACKBONE.PATH "$CLIP"); fi
    case "$trainer" in
        LLaMP)
            [ -n "$LLM" ] || fail "set LLM to the LLM folder (TRAINER.LLAMP.LLM_PATH), e.g. LLM=/models/Llama-2-7b-chat-hf"
            OPTS+=(TRAINER.LLAMP.LLM_PATH "$LLM")
            if [ -n "$CACHE" ]; then
                OPTS+=(TRAINER.LLAMP.CACHE_DIR "$CACHE")
            elif [ "$stage" = xd_test ] && [[ $IMAGENET_VARIANTS == *" ${dataset} "* ]]; then
                # ImageNet's classes: its cache serves them (classes are looked up by name)
                OPTS+=(TRAINER.LLAMP.CACHE_DIR "$(default_cache_folder "${DATA}/${XD_SOURCE}" "$LLM")")
            fi
            # The reference setting trains 10 epochs on ImageNet instead of 20.
            if [ "$dataset" = imagenet ]; then OPTS+=(OPTIM.MAX_EPOCH 10); fi
            ;;
    esac
}

# protocol STAGE TRAINER DEFAULT_CFG [the stage's arguments]
protocol() {
    local stage=$1 trainer=$2 default_cfg=$3 dataset seed shots=$SHOTS cfg usage
    shift 3
    case "$stage" in
        few_shot) usage="DATASET SEED SHOTS [CFG]" ;;
        xd_train) usage="SEED [CFG]" ;;
        *) usage="DATASET SEED [CFG]" ;;
    esac
    local want=${usage//[^ ]/}; want=$(( ${#want} + 1 ))  # words in usage; the last is optional
    if [ $# -lt $(( want - 1 )) ] || [ $# -gt "$want" ]; then
        echo "usage: [DATA=...] bash $0 ${usage}   (CFG default: ${default_cfg}; environment: scripts/common.sh)" >&2
        exit 2
    fi
    case "$stage" in
        few_shot) dataset=$1; seed=$2; shots=$3; cfg=${4:-$default_cfg} ;;
        xd_train) dataset=$XD_SOURCE; seed=$1; cfg=${2:-$default_cfg} ;;
        *) dataset=$1; seed=$2; cfg=${3:-$default_cfg} ;;
    esac
    [[ $seed =~ ^[0-9]+$ ]] || fail "SEED must be a number, got '${seed}'"
    [[ $shots =~ ^[0-9]+$ ]] || fail "SHOTS must be a number, got '${shots}'"
    if [ "$stage" = xd_test ] && [ "$dataset" = "$XD_SOURCE" ]; then
        fail "xd_test evaluates on another dataset than ${XD_SOURCE} (xd_train's log holds the ${XD_SOURCE} result)"
    fi
    [[ " ${EXTRA_OPTS} " != *" DATASET.NUM_SHOTS "* ]] \
        || fail "EXTRA_OPTS sets DATASET.NUM_SHOTS: set SHOTS (or few_shot's SHOTS argument) so the folder names it"

    local run="${dataset}/shots_${shots}/${trainer}/${cfg}/seed${seed}" dir model_dir=""
    local -a subset=()
    case "$stage" in
        base2new_train) dir=${OUTPUT}/base2new/train_base/${run}; subset=(DATASET.SUBSAMPLE_CLASSES base) ;;
        base2new_test)  dir=${OUTPUT}/base2new/test_new/${run}; subset=(DATASET.SUBSAMPLE_CLASSES new)
                        model_dir=${OUTPUT}/base2new/train_base/${run} ;;
        few_shot)       dir=${OUTPUT}/few_shot/${run} ;;
        xd_train)       dir=${OUTPUT}/xd/train/${run} ;;
        xd_test)        dir=${OUTPUT}/xd/test/${run}
                        model_dir=${OUTPUT}/xd/train/${XD_SOURCE}/shots_${shots}/${trainer}/${cfg}/seed${seed} ;;
        *) fail "unknown stage ${stage}" ;;
    esac

    local result
    if result=$(run_result "$dir"); then
        echo "${trainer} ${stage} ${dataset} seed${seed}: ${result}% already in ${dir}, skipping"
        return 0
    fi
    : "${DATA:?set DATA to the folder holding the datasets (train.py --root)}"
    local dataset_cfg=${REPO}/configs/datasets/${dataset}.yaml trainer_cfg=${REPO}/configs/trainers/${trainer}/${cfg}.yaml
    [ -f "$dataset_cfg" ] || fail "${dataset_cfg} does not exist (DATASET names configs/datasets/<name>.yaml)"
    [ -f "$trainer_cfg" ] || fail "${trainer_cfg} does not exist (CFG names configs/trainers/${trainer}/<cfg>.yaml)"

    # Evaluation: every test stage, and every stage of a trainer with nothing to train.
    local -a launch flags
    OPTS=()
    if [[ $stage == *_test || $EVAL_ONLY_TRAINERS == *" ${trainer} "* ]]; then
        launch=(python)
        flags=(--eval-only)
        if [[ $EVAL_ONLY_TRAINERS != *" ${trainer} "* ]]; then
            run_result "$model_dir" > /dev/null \
                || fail "no finished training run in ${model_dir}: run $(dirname "$0")/${stage%_test}_train.sh first"
            flags+=(--model-dir "$model_dir")
            local epoch; epoch=$(load_epoch "$model_dir")
            if [ -n "$epoch" ]; then flags+=(--load-epoch "$epoch"); fi
        fi
    else
        read -r -a launch <<< "$LAUNCH"
        flags=()
    fi
    # base2new and xd sample SHOTS shots; an xd target is evaluated whole (NUM_SHOTS stays -1)
    if [ "$stage" != xd_test ]; then OPTS+=(DATASET.NUM_SHOTS "$shots"); fi
    OPTS+=("${subset[@]}")
    trainer_opts "$trainer" "$stage" "$dataset"
    local -a extra
    read -r -a extra <<< "$EXTRA_OPTS"

    local -a command=("${launch[@]}" "${REPO}/train.py" --root "$DATA" --seed "$seed" --trainer "$trainer"
        --dataset-config-file "$dataset_cfg" --config-file "$trainer_cfg" --output-dir "$dir"
        "${flags[@]}" "${OPTS[@]}" "${extra[@]}")
    echo "+ ${command[*]}"
    "${command[@]}"
    result=$(run_result "$dir") || fail "train.py exited normally but ${dir}/log.txt holds no accuracy line"
    echo "${trainer} ${stage} ${dataset} seed${seed}: ${result}% (${dir})"
}
