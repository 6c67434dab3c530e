#!/usr/bin/env bash
# Session 27, run 4 (one device call, ~5 min, on a fresh machine start): main as committed after
# runs 1-3 (auto with +earlyq; csrc identical to d9fd49b's), built here, then
#   1. the side-by-side bench again (a second sample of the same code on another machine start:
#      session 26's and 27's runs differed by up to 9% on compute-bound rows whose code had not changed)
#   2. ab_cuda.py `auto` against FlashMLA 9241ae3 on all 14 compute-bound target rows, 8 rounds
# Everything is packed into $OUT/run4.tar.xz (the device returns at most 8 files). Carry [".gpu"].
set -uo pipefail
OUT=${OUT:-/tmp/earlyq4}; R=$OUT/run4; mkdir -p "$R"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
echo "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)" | tee "$R/gpu.txt"
FLASHMLA_BUILD_CUDA=1 MAX_JOBS=16 python3 setup.py build_ext --inplace --force >"$R/build.log" 2>&1
echo "build rc=$?; $(grep -c '0 bytes spill stores' "$R/build.log") kernels without spills"
OUT=$R/bench BENCH_TIMEOUT=300 timeout 330 bash scripts/gpu_bench.sh --no-e2e --no-time-reference >"$R/gpu_bench_console.txt" 2>&1
echo "bench exit $?"; python3 scripts/bench_summary.py "$R/bench/bench.csv" | head -3
AB_VARIANTS=auto,head AB_ROUNDS=8 timeout 200 python3 scripts/ab_cuda.py "$R/ab_compute_rows.csv" >"$R/ab_compute_rows.txt" 2>&1
echo "ab exit $?"; tail -18 "$R/ab_compute_rows.txt"
(cd "$OUT" && tar cJf run4.tar.xz run4)
