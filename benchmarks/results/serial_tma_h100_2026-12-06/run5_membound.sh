#!/usr/bin/env bash
# Session 22, last device minutes: our kernel alone on the five fixed-length 4K memory-bound table
# rows, with the benchmark's own copy ceiling, for their share of copy bandwidth (the 90% bar).
set -uo pipefail
OUT=${OUT:-/tmp/run5}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm --format=csv,noheader
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh "$OUT/build.log" || exit 1
BENCH_TIMEOUT=150 OUT=$OUT/bench bash scripts/gpu_bench.sh --providers flashmla-cuda --no-time-reference --no-e2e \
  --shape b=128,s_q=1,seqlen=4K,h_q=16,varlen=0 --shape b=128,s_q=1,seqlen=4K,h_q=32,varlen=0 \
  --shape b=128,s_q=1,seqlen=4K,h_q=64,varlen=0 --shape b=128,s_q=2,seqlen=4K,h_q=16,varlen=0 \
  --shape b=128,s_q=2,seqlen=4K,h_q=32,varlen=0 >"$OUT/gpu_bench_out.txt" 2>&1
echo "gpu_bench exit $?"; tail -25 "$OUT/gpu_bench_out.txt"
