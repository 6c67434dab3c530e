#!/usr/bin/env bash
# Session 29, run 2 (one device call, ~8 min): main with "+pvbfirst" in "auto" at 256 query rows
# per kv head (run 1: 0.991 geomean of auto without it, 0.990-0.994 on the four 256-row rows):
#   1. build; 2. every CUDA GPU test (new: +earlyq+pvbfirst bit-identical to the TMA boundary without
#   them; the foundation grid and the lazy-max test on that schedule); 3. the side-by-side bench
#   (README table); 4. scripts/gpu_racecheck.sh (racecheck and memcheck of the racecheck build, now
#   with +earlyq+pvbfirst too, its reference checks, then the normal build again).
# Everything is packed into $OUT/run2.tar.xz (the device returns at most 8 files). Carry [".gpu"].
set -uo pipefail
OUT=${OUT:-/tmp/pvb2}; R=$OUT/run2; mkdir -p "$R"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
echo "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)" | tee "$R/gpu.txt"
FLASHMLA_BUILD_CUDA=1 MAX_JOBS=16 python3 setup.py build_ext --inplace --force >"$R/build.log" 2>&1
echo "build rc=$?; $(grep -c '0 bytes spill stores' "$R/build.log") kernels without spills; $(grep -c 'instructions are serialized' "$R/build.log") serialisation notes"
grep -E "Used [0-9]+ registers" "$R/build.log" | sort | uniq -c
timeout 150 python3 -m pytest -q -rs --maxfail=20 -p no:cacheprovider tests/test_cuda.py >"$R/cuda_tests.txt" 2>&1
echo "cuda tests exit $?: $(tail -n 1 "$R/cuda_tests.txt")"; grep -E "^(FAILED|ERROR)" "$R/cuda_tests.txt" | head -10
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H100; then
  OUT=$R/bench BENCH_TIMEOUT=300 timeout 330 bash scripts/gpu_bench.sh --no-e2e --no-time-reference >"$R/gpu_bench_console.txt" 2>&1
  echo "bench exit $?"; python3 scripts/bench_summary.py "$R/bench/bench.csv" | head -3
else  # the targets are an H100's; on another card only the tests and the sanitizers run
  echo "BENCH SKIPPED: this card is not an H100 ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))"
fi
(cd "$OUT" && tar cJf run2.tar.xz run2)  # in case the sanitizers run out of time
timeout 170 bash scripts/gpu_racecheck.sh "$R/sanitizers" 2>&1 | tee "$R/racecheck_summary.txt" | tail -8
(cd "$OUT" && tar cJf run2.tar.xz run2)
