#!/usr/bin/env bash
# Session 23, last device seconds: build and every CUDA GPU test on the new `auto` (7.26), nothing else.
set -uo pipefail
OUT=${OUT:-/tmp/run3}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name --format=csv,noheader | head -1
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh "$OUT/build.log" || exit 1
PYTHONPATH=$PWD timeout 110 python3 -m pytest -q -rs --maxfail=20 tests/test_cuda.py >"$OUT/cuda_tests_log.txt" 2>&1
echo "cuda tests exit $?"; tail -3 "$OUT/cuda_tests_log.txt"
