#!/bin/bash
# Build the LLaMP knowledge cache of every benchmark dataset (one LLM, one CLIP).
#
#   bash scripts/llamp/build_cache.sh DATA LLM CLIP [extra flags for python -m llm_prompts build]
#
# DATA: the folder that holds the datasets (train.py --root); LLM: a chat model
# folder (e.g. /models/Llama-2-7b-chat-hf); CLIP: the CLIP used for the
# distillation targets (a folder, an OpenAI .pt file, or ViT-B/16).
# Each cache goes to DATA/<dataset folder>/llamp_cache/<LLM folder name>/.
# A build that is interrupted is finished by running the script again.
#
# DATASETS="oxford_pets eurosat" limits the run to some datasets. The ImageNet
# variants (imagenetv2, imagenet_sketch, imagenet_a, imagenet_r) hold ImageNet
# classes and share ImageNet's query templates, so ImageNet's cache serves them
# (classes are looked up by name); add them to DATASETS to build their own.
set -euo pipefail

if [ $# -lt 3 ]; then
    echo "usage: $0 DATA LLM CLIP [extra build flags]" >&2
    exit 2
fi
DATA=$1
LLM=$2
CLIP=$3
shift 3

HERE=$(cd "$(dirname "$0")/../.." && pwd)
DATASETS=${DATASETS:-"imagenet caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101"}

cd "${HERE}"
for DATASET in ${DATASETS}; do
    CONFIG=configs/datasets/${DATASET}.yaml
    if [ ! -f "${CONFIG}" ]; then
        echo "error: ${CONFIG} does not exist (DATASETS names configs/datasets/<name>.yaml)" >&2
        exit 2
    fi
    echo "=== ${DATASET}"
    python -m llm_prompts build --root "${DATA}" --dataset-config-file "${CONFIG}" \
        --llm "${LLM}" --clip "${CLIP}" "$@"
done
