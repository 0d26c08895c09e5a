#!/usr/bin/env bash
# Every trainer through base-to-novel on one dataset, with the same seeds, shots and CLIP,
# then the side-by-side table (python -m comparison.results) and its PNG.
#
# Usage: DATA=... [CLIP=...] [LLM=...] bash scripts/compare.sh DATASET [SEED ...]   (default seed 1)
#        TINY=1 bash scripts/compare.sh [synthetic] [SEED ...]
#
# Real setting (DATA set): each method's scripts/<method>/base2new_train.sh and
#   base2new_test.sh with its default (reference) config; CLIP, LLM, CACHE, LAUNCH, OUTPUT
#   and EXTRA_OPTS as for those scripts (scripts/common.sh). Tables and PNG go to
#   RESULTS (default $OUTPUT/compare/<dataset>).
# Tiny setting (TINY=1, or DATA unset): offline on CPU in WORK (default <repository>/compare_work):
#   the tiny models (python -m llamp.tiny: the CLIP pre-trained on drawings), the Synthetic dataset drawn under
#   $WORK/data, every method's demo config, LLaMP's knowledge cache built first; runs in
#   $WORK/output, tables and PNG in $WORK/results, each run's console output in $WORK/logs.
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
    if [ "$DATASET" != synthetic ]; then
        echo "error: the tiny setting (TINY=1 or DATA unset) runs on synthetic only; set DATA to run ${DATASET}" >&2
        exit 2
    fi
elif [ -z "$DATASET" ]; then
    echo "usage: DATA=... bash $0 DATASET [SEED ...]   or   TINY=1 bash $0 [synthetic] [SEED ...]" >&2
    exit 2
fi
shift $(( $# > 0 ? 1 : 0 ))
SEEDS=("$@")
if [ ${#SEEDS[@]} -eq 0 ]; then SEEDS=(1); fi
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
export PYTHONWARNINGS=${PYTHONWARNINGS:-"ignore:pkg_resources is deprecated"}  # a dependency's start-up noise
export PYTHONPATH="${REPO}${PYTHONPATH:+:${PYTHONPATH}}"
SECONDS=0

CFG=()  # the per-method scripts' default config; the tiny setting uses each method's demo.yaml
if [ "$TINY" = 1 ]; then
    WORK=${WORK:-${REPO}/compare_work}
    mkdir -p "$WORK"
    [ -f "${WORK}/.gitignore" ] || echo "*" > "${WORK}/.gitignore"  # never committed by accident
    export DATA=${WORK}/data CLIP=${WORK}/tiny/clip LLM=${WORK}/tiny/llm CACHE="" OUTPUT=${WORK}/output SHOTS=16
    RESULTS=${RESULTS:-${WORK}/results}
    LOGS=${WORK}/logs
    CFG=(demo)
    echo "== tiny models -> ${WORK}/tiny"
    python -m llamp.tiny --out "${WORK}/tiny" > /dev/null
    if [[ " ${TRAINERS[*]} " == *" LLaMP "* ]]; then
        echo "== LLaMP knowledge cache of Synthetic (the dataset is drawn under ${DATA} on first use)"
        python -m llm_prompts build --root "$DATA" --dataset-config-file "${REPO}/configs/datasets/synthetic.yaml" \
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
mkdir -p "$LOGS"
echo "== base-to-novel on ${DATASET}, seeds ${SEEDS[*]}: ${TRAINERS[*]} (console output in ${LOGS})"

FAILED=()
for i in "${!FOLDERS[@]}"; do
    folder=${FOLDERS[$i]} trainer=${TRAINERS[$i]} start=$SECONDS ok=1
    for seed in "${SEEDS[@]}"; do
        for stage in base2new_train base2new_test; do
            log=${LOGS}/${folder}_${stage}_seed${seed}.txt
            if bash "${REPO}/scripts/${folder}/${stage}.sh" "$DATASET" "$seed" "${CFG[@]}" > "$log" 2>&1; then
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
    --seeds "${SEEDS[@]}" --methods "${TRAINERS[@]}" || status=$?
echo "plot: ${RESULTS}/base2new.png   (${SECONDS} s in all)"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "failed: ${FAILED[*]}" >&2
    exit 1
fi
exit "$status"
