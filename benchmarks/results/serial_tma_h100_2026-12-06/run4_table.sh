#!/usr/bin/env bash
# Session 22, the short form of run2 when device time ran low (four failed machine starts): the 35
# rows of perf-targets.md's table plus b8 s1 4K h128, with the three providers that set the bars
# (ours, FlashMLA 9241ae3, FlashInfer fa3); every output is still checked against the fp32 reference.
# Carry .gpu.
set -uo pipefail
OUT=${OUT:-/tmp/run4}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
case "$gpu" in *${REQUIRE_GPU-H100}*) echo "GPU: $gpu" ;; *) echo "GPU is $gpu, not ${REQUIRE_GPU-H100}: stopping"; exit 3 ;; esac
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh "$OUT/build.log" || exit 1
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300} BENCH_PACK=1 OUT=$OUT/bench bash scripts/gpu_bench.sh \
  --suites table --providers flashmla-cuda,flashmla-head,flashinfer-fa3 --no-time-reference --no-e2e \
  --shape b=8,s_q=1,seqlen=4K,h_q=128,varlen=0 >"$OUT/gpu_bench_out.txt" 2>&1
echo "gpu_bench exit $?"
tail -50 "$OUT/gpu_bench_out.txt"
