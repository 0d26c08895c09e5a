#!/usr/bin/env bash
# The CUDA path in one short run (benchmarks/gpu_check.py): LLaMP's bf16 DeepSpeed step and evaluation at real
# widths with MaPLe beside it, at 24 and 500 classes, and a bf16-vs-fp32 loss check; prints the rows of the
# README's GPU table. On one CUDA GPU: `bash benchmarks/gpu_check.sh` (a few minutes; results also in
# output/benchmarks/gpu_check.json). CI runs `bash benchmarks/gpu_check.sh --tiny` on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p output/benchmarks
python benchmarks/gpu_check.py --json output/benchmarks/gpu_check.json "$@"
