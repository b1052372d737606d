#!/usr/bin/env bash
# GPT-2-small-shaped bf16 training on one accelerator, JAX then TensorFlow: tokens/s and MFU.
#   bench/gpu.sh                 # on a GPU/TPU machine; results also appended to bench/gpu-results.jsonl
#   bench/gpu.sh --smoke         # a debug-sized dry run (works on CPU)
#   BATCH=32 STEPS=50 bench/gpu.sh --peak-tflops 989
# Extra arguments go to bench/gpu_train.py (see its --help).
set -euo pipefail
cd "$(dirname "$0")/.."
BATCH=${BATCH:-16}
STEPS=${STEPS:-30}
OUT=${OUT:-bench/gpu-results.jsonl}
for backend in jax tensorflow; do
    python bench/gpu_train.py --backend "$backend" --batch-size "$BATCH" --steps "$STEPS" --json "$OUT" "$@"
done
