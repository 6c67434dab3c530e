#!/usr/bin/env bash
# Session 23, device call 2: `auto` without the column split above 16 query rows per kv head
# (docs/kernel-design.md 7.26). Build, every CUDA GPU test, an interleaved A/B at b1-b2 of the old
# rule (`serial+splitcombine+colsplit`) against the new `auto` and against the serial kernel on
# full-parts metadata (`=nosplit`) and the serial kernel without the TMA boundary, then the side-by-side bench of the b1 h128 table rows.
# Carry .gpu (FlashInfer, vLLM's kernels, FlashMLA 9241ae3).
set -uo pipefail
OUT=${OUT:-/tmp/run2}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
# The A/Bs compare schedules on one card, so any Hopper card serves them; the bench rows are set
# against H100 targets, so they run on an H100 only.
echo "GPU: $gpu"; case "$gpu" in *H100*) on_h100=1 ;; *) on_h100=0 ;; esac
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh "$OUT/build.log" || exit 1
PYTHONPATH=$PWD timeout 150 python3 -m pytest -q -rs --maxfail=20 tests/test_cuda.py >"$OUT/cuda_tests_log.txt" 2>&1
echo "cuda tests exit $?"; tail -2 "$OUT/cuda_tests_log.txt"
shapes="1,1,1024,16,F;1,1,4096,16,F;1,1,16384,16,F;1,1,65536,16,F"
shapes+=";1,1,1024,32,F;1,1,4096,32,F;1,1,8192,32,F;1,1,16384,32,F;1,1,65536,32,F"
shapes+=";1,1,4096,64,F;1,1,16384,64,F;1,1,65536,64,F"
shapes+=";1,1,1024,128,F;1,1,4096,128,F;1,1,16384,128,F;1,1,65536,128,F"
shapes+=";1,2,4096,16,F;1,2,4096,64,F;1,2,4096,128,F;1,2,16384,128,F"
shapes+=";2,1,4096,32,F;2,1,8192,64,F;2,1,4096,128,F;2,1,16384,128,F;2,2,8192,64,F;2,1,4096,128,T"
AB_SHAPES="$shapes" AB_VARIANTS="serial+splitcombine+colsplit,auto,serial+splitcombine+tmaout+tmaq=nosplit,serial+splitcombine" AB_ROUNDS=${ROUNDS:-5} \
  PYTHONPATH=$PWD timeout 200 python3 scripts/ab_cuda.py "$OUT/ab_b1_b2.csv" >"$OUT/ab_b1_b2.txt" 2>&1
echo "ab exit $?"
# LEAN=1 (device time short): stop after the b1-b2 A/B.
if [ "${LEAN:-0}" = 1 ]; then tail -31 "$OUT/ab_b1_b2.txt"; exit 0; fi
# b4-b16 with 64-128 heads, where b8 s1 h128 trails both rivals: fewer, longer chunks (half the
# parts by the column-split metadata, one thread block each; or the scheduler floor) against `auto`.
AB_SHAPES="4,1,4096,128,F;8,1,1024,128,F;8,1,4096,128,F;8,1,16384,128,F;8,1,4096,64,F;16,1,4096,128,F;4,1,16384,64,F;8,1,4096,128,T" \
  AB_VARIANTS="auto,auto=split,auto@2,auto@4" AB_ROUNDS=5 \
  PYTHONPATH=$PWD timeout 120 python3 scripts/ab_cuda.py "$OUT/ab_b4_b16.csv" >"$OUT/ab_b4_b16.txt" 2>&1
echo "ab b4-b16 exit $?"
# BENCH=0: skip the bench rows (for a checkout without the .gpu payloads).
[ "${BENCH:-1}" = 1 ] || on_h100=0
[ $on_h100 = 1 ] || echo "NOT an H100 or BENCH=0 ($gpu): the bench rows are skipped (their targets are H100 numbers)"
[ $on_h100 = 1 ] && BENCH_TIMEOUT=120 OUT=$OUT/bench bash scripts/gpu_bench.sh --no-e2e --no-time-reference --providers flashmla-cuda,flashinfer-fa3,flashmla-head \
  --shape b=1,s_q=1,seqlen=4K,h_q=128,varlen=0 --shape b=1,s_q=1,seqlen=1K,h_q=128,varlen=0 \
  --shape b=1,s_q=1,seqlen=16K,h_q=128,varlen=0 --shape b=1,s_q=2,seqlen=4K,h_q=128,varlen=0 \
  >"$OUT/gpu_bench_out.txt" 2>&1
echo "gpu_bench exit $?"; tail -12 "$OUT/gpu_bench_out.txt"
tail -31 "$OUT/ab_b1_b2.txt"; tail -13 "$OUT/ab_b4_b16.txt"
