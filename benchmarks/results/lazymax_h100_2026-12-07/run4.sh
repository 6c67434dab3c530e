#!/usr/bin/env bash
# Session 28, run 4 (one device call, ~7 min, a fresh machine start): main as after run 3 (the lazy
# running max and the XORed P-store addresses), built here, then
#   1. the side-by-side bench again (a second sample on another machine start: compute-bound rows
#      have moved by up to 9% between starts for unchanged code)
#   2. ab_cuda.py `auto` against FlashMLA 9241ae3 on all 14 compute-bound target rows, 8 rounds
# Everything is packed into $OUT/run4.tar.xz. Carry [".gpu"].
set -uo pipefail
OUT=${OUT:-/tmp/lazy4}; R=$OUT/run4; mkdir -p "$R"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
echo "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)" | tee "$R/gpu.txt"
FLASHMLA_BUILD_CUDA=1 MAX_JOBS=16 python3 setup.py build_ext --inplace --force >"$R/build.log" 2>&1
echo "build rc=$?; $(grep -c '0 bytes spill stores' "$R/build.log") kernels without spills"
OUT=$R/bench BENCH_TIMEOUT=300 timeout 330 bash scripts/gpu_bench.sh --no-e2e --no-time-reference >"$R/gpu_bench_console.txt" 2>&1
echo "bench exit $?"; python3 scripts/bench_summary.py "$R/bench/bench.csv" | head -3
(cd "$OUT" && tar cJf run4.tar.xz run4)
AB_VARIANTS=auto,head AB_ROUNDS=8 timeout 170 python3 scripts/ab_cuda.py "$R/ab_compute_rows.csv" >"$R/ab_compute_rows.txt" 2>&1
echo "ab exit $?"; tail -18 "$R/ab_compute_rows.txt"
(cd "$OUT" && tar cJf run4.tar.xz run4)
