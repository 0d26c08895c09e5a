#!/usr/bin/env bash
# Every trainer through base-to-novel on one dataset, with the same seeds, shots and CLIP,
# then the side-by-side table (python -m comparison.results) and its PNG.
#
# Usage: DATA=... [CLIP=...] [LLM=...] [CFG=...] bash scripts/compare.sh DATASET [SEED ...]   (default seed 1)
#        TINY=1 [DATA=...] [CFG=...] bash scripts/compare.sh [DATASET] [SEED ...]
#
# Real setting (DATA set, TINY unset): each method's scripts/<method>/base2new_train.sh and
#   base2new_test.sh; CLIP, LLM, CACHE, LAUNCH, OUTPUT and EXTRA_OPTS as for those scripts
#   (scripts/common.sh). Tables and PNG go to RESULTS (default $OUTPUT/compare/<dataset>).
# Tiny setting (TINY=1, or DATA unset): offline on CPU in WORK (default <repository>/compare_work):
#   the tiny models (python -m llamp.tiny: the CLIP pre-trained on drawings), LLaMP's knowledge cache of
#   DATASET built first, every method's demo config; DATASET defaults to synthetic (synthetic and
#   synthetic_sketch are drawn on first use), DATA to $WORK/data (any data root works: the tiny models
#   then run on its dataset); runs in $WORK/output, tables and PNG in $WORK/results, each run's console
#   output in $WORK/logs.
# CFG: the config every method runs, configs/trainers/<Trainer>/<CFG>.yaml: "demo" in the tiny setting,
#   else each method's reference config (the per-method scripts' default; e.g. CFG=demo on real data).
#
# METHODS="ZeroshotCLIP LLaMP" runs some trainers only (trainer or folder names; default all seven).
# Finished runs are skipped, so a second call only prints the table again. A method that fails
# does not stop the others; the exit status is 1 if any failed.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ALL_METHODS="ZeroshotCLIP CoOp CoCoOp MaPLe KgCoOp PromptSRC LLaMP"
METHODS=${METHODS:-$ALL_METHODS}

folder_of() {  # trainer or folder name -> scripts/<folder>
    case "${1,,}" in
        zeroshotclip|zsclip) echo zsclip ;;
        coop|cocoop|maple|kgcoop|promptsrc|llamp) echo "${1,,}" ;;
        *) echo "error: unknown method '$1' in METHODS (one of: ${ALL_METHODS})" >&2; exit 2 ;;
    esac
}
trainer_of() {  # scripts/<folder> -> the registered trainer name
    case "$1" in
        zsclip) echo ZeroshotCLIP ;; coop) echo CoOp ;; cocoop) echo CoCoOp ;; maple) echo MaPLe ;;
        kgcoop) echo KgCoOp ;; promptsrc) echo PromptSRC ;; llamp) echo LLaMP ;;
    esac
}
FOLDERS=() TRAINERS=()
for method in $METHODS; do
    folder=$(folder_of "$method")
    FOLDERS+=("$folder")
    TRAINERS+=("$(trainer_of "$folder")")
done

if [ "${TINY:-0}" = 1 ] || [ -z "${DATA:-}" ]; then TINY=1; else TINY=0; fi
DATASET=${1:-}
if [ "$TINY" = 1 ]; then
    DATASET=${DATASET:-synthetic}
elif [ -z "$DATASET" ]; then
    echo "usage: DATA=... bash $0 DATASET [SEED ...]   or   TINY=1 bash $0 [DATASET] [SEED ...]" >&2
    exit 2
fi
if [ ! -f "${REPO}/configs/datasets/${DATASET}.yaml" ]; then
    echo "error: ${REPO}/configs/datasets/${DATASET}.yaml does not exist (DATASET names configs/datasets/<name>.yaml)" >&2
    exit 2
fi
shift $(( $# > 0 ? 1 : 0 ))
SEEDS=("$@")
if [ ${#SEEDS[@]} -eq 0 ]; then SEEDS=(1); fi
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
export PYTHONWARNINGS=${PYTHONWARNINGS:-"ignore:pkg_resources is deprecated"}  # a dependency's start-up noise
export PYTHONPATH="${REPO}${PYTHONPATH:+:${PYTHONPATH}}"
SECONDS=0

CFG_ARG=()  # empty: the per-method scripts' default config
if [ "$TINY" = 1 ]; then
    WORK=${WORK:-${REPO}/compare_work}
    mkdir -p "$WORK"
    [ -f "${WORK}/.gitignore" ] || echo "*" > "${WORK}/.gitignore"  # never committed by accident
    DATA=${DATA:-${WORK}/data}
    export DATA CLIP=${WORK}/tiny/clip LLM=${WORK}/tiny/llm CACHE="" OUTPUT=${WORK}/output SHOTS=16
    RESULTS=${RESULTS:-${WORK}/results}
    LOGS=${WORK}/logs
    CFG=${CFG:-demo}
    echo "== tiny models -> ${WORK}/tiny"
    python -m llamp.tiny --out "${WORK}/tiny" > /dev/null
    if [[ " ${TRAINERS[*]} " == *" LLaMP "* ]]; then
        echo "== LLaMP knowledge cache of ${DATASET} under ${DATA} (a drawn dataset is drawn there on first use)"
        python -m llm_prompts build --root "$DATA" --dataset-config-file "${REPO}/configs/datasets/${DATASET}.yaml" \
            --llm "$LLM" --clip "$CLIP" --quiet | tail -n 1
    fi
else
    OUTPUT=${OUTPUT:-${REPO}/output}
    export OUTPUT
    RESULTS=${RESULTS:-${OUTPUT}/compare/${DATASET}}
    LOGS=${RESULTS}/logs
    if [[ " ${TRAINERS[*]} " == *" LLaMP "* ]] && [ -z "${LLM:-}" ]; then
        echo "error: LLaMP needs LLM (the LLM folder); or leave LLaMP out with METHODS=..." >&2
        exit 2
    fi
fi
if [ -n "${CFG:-}" ]; then CFG_ARG=("$CFG"); fi
mkdir -p "$LOGS"
echo "== base-to-novel on ${DATASET}, seeds ${SEEDS[*]}, config ${CFG:-"(each method's reference)"}: ${TRAINERS[*]} (console output in ${LOGS})"

FAILED=()
for i in "${!FOLDERS[@]}"; do
    folder=${FOLDERS[$i]} trainer=${TRAINERS[$i]} start=$SECONDS ok=1
    for seed in "${SEEDS[@]}"; do
        for stage in base2new_train base2new_test; do
            log=${LOGS}/${folder}_${stage}_seed${seed}.txt
            if bash "${REPO}/scripts/${folder}/${stage}.sh" "$DATASET" "$seed" "${CFG_ARG[@]}" > "$log" 2>&1; then
                # the script's last line: "<Trainer> <stage> <dataset> seed<k>: <accuracy>% (<dir>)" or "... already in <dir>, skipping"
                result=$(tail -n 1 "$log" | sed -E 's/^[^:]*: //; s/ \(.*\)$//; s/ already in .*/ (done before)/')
                printf '   %-13s %-15s seed %s: %s\n' "$trainer" "$stage" "$seed" "$result"
            else
                echo "   ${trainer} ${stage} seed ${seed} failed; the end of ${log}:" >&2
                tail -n 15 "$log" | sed 's/^/      /' >&2
                ok=0
                break 2
            fi
        done
    done
    if [ "$ok" = 0 ]; then FAILED+=("$trainer"); fi
    echo "== ${trainer}: $(( SECONDS - start )) s"
done

echo
status=0
python -m comparison.results "$OUTPUT" --out "$RESULTS" --protocol base2new --datasets "$DATASET" \
    --seeds "${SEEDS[@]}" --methods "${TRAINERS[@]}" ${CFG:+--configs "$CFG"} || status=$?
echo "plot: ${RESULTS}/base2new.png   (${SECONDS} s in all)"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "failed: ${FAILED[*]}" >&2
    exit 1
fi
exit "$status"
