#!/usr/bin/env bash
# Session 22, device call 1: the serial kernel's TMA request boundary (+tmaout +tmaq), checked and
# timed. Run from the repo root on the GPU host: bash benchmarks/results/serial_tma_h100_2026-12-06/run1.sh
set -uo pipefail
OUT=${OUT:-/tmp/run1}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
t0=$SECONDS
say() { echo "=== $* (t=$((SECONDS - t0)) s)"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader
say build
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh "$OUT/build.log" || exit 1
grep -E "registers|spill" "$OUT/build.log" | sed 's/^ptxas info *: //' | sort | uniq -c | head -12
say "smoke (a hang = a pipeline deadlock)"
SANITIZE_LONG=1 SANITIZE_SCHEDULES=serial+tmaout+tmaq,serial+tmaout,serial+l2keep+tmaq,chained+tmaout+tmaq,serial+tmaout+tmaq@4,auto \
  timeout 120 python3 scripts/cuda_sanitizer_cases.py >"$OUT/smoke.log" 2>&1; echo "smoke exit $?"; tail -3 "$OUT/smoke.log"
say "A/B memory-bound b128 rows (first = the old auto there)"
AB_SHAPES="128,1,4096,32,F;128,1,4096,64,F;128,2,4096,16,F;128,2,4096,32,F;128,1,8192,64,F;128,1,4096,64,T;128,2,8192,32,T" \
AB_VARIANTS="serial+l2keep,auto,serial+l2keep+tmaout,serial+l2keep+tmaq" AB_ROUNDS=8 \
  timeout 240 python3 scripts/ab_cuda.py "$OUT/ab_memory_bound.csv" 2>&1 | tee "$OUT/ab_memory_bound.txt" | tail -45
say "pytest tests/test_cuda.py"
timeout 240 python3 -m pytest -q -rs --maxfail=20 tests/test_cuda.py >"$OUT/cuda_tests_log.txt" 2>&1; echo "pytest exit $?"
tail -5 "$OUT/cuda_tests_log.txt"
say "memcheck"
SANITIZE_SCHEDULES=serial+tmaout+tmaq,serial+tmaout,chained+tmaout+tmaq,auto \
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 python3 scripts/cuda_sanitizer_cases.py >"$OUT/memcheck.log" 2>&1
echo "memcheck exit $?"; tail -3 "$OUT/memcheck.log"
say "A/B small and mid batches (first = auto)"
AB_SHAPES="1,1,4096,16,F;1,1,4096,128,F;4,1,4096,128,F;8,1,4096,64,F;8,1,4096,128,F;8,1,16384,128,F;8,2,4096,64,F;16,1,4096,128,F;16,1,4096,64,T;16,1,16384,64,F;32,1,4096,16,F;32,1,4096,32,F;32,1,4096,64,F;32,2,4096,16,F;64,1,4096,16,F" \
AB_VARIANTS="auto,serial+splitcombine+l2keep+colsplit,serial+splitcombine,serial+splitcombine+tmaout+tmaq,serial+tmaout+tmaq,serial+l2keep+tmaout+tmaq" AB_ROUNDS=6 \
  timeout 200 python3 scripts/ab_cuda.py "$OUT/ab_small_batch.csv" 2>&1 | tee "$OUT/ab_small_batch.txt" | tail -100
say done
