#!/usr/bin/env bash
# Session 22, device call 2 (same warm machine, right after run1.sh): the side-by-side benchmark
# of every provider with the new `auto`. Carry .gpu (FlashInfer, vLLM's kernels, FlashMLA 9241ae3).
set -uo pipefail
OUT=${OUT:-/tmp/run2}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# The targets are H100 numbers: on any other card stop at once (REQUIRE_GPU= to run anyway).
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
case "$gpu" in *${REQUIRE_GPU-H100}*) echo "GPU: $gpu" ;; *) echo "GPU is $gpu, not ${REQUIRE_GPU-H100}: stopping"; exit 3 ;; esac
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh "$OUT/build.log" || exit 1
if [ "${CUDA_TESTS:-1}" = 1 ]; then  # CUDA_TESTS=0 when device time is short (run1 ran them)
  PYTHONPATH=$PWD timeout 150 python3 -m pytest -q -rs --maxfail=20 tests/test_cuda.py >"$OUT/cuda_tests_log.txt" 2>&1
  echo "cuda tests exit $?"; tail -2 "$OUT/cuda_tests_log.txt"
fi
PYTHONPATH=$PWD timeout 90 python3 -m pytest -m gpu -q tests/test_bench.py -k agree >"$OUT/bench_gpu_test_log.txt" 2>&1
echo "provider agreement tests exit $?"; tail -2 "$OUT/bench_gpu_test_log.txt"
BENCH_TIMEOUT=${BENCH_TIMEOUT:-345} BENCH_PACK=1 OUT=$OUT/bench bash scripts/gpu_bench.sh >"$OUT/gpu_bench_out.txt" 2>&1
echo "gpu_bench exit $?"
tail -75 "$OUT/gpu_bench_out.txt"
