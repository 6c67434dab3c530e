#!/usr/bin/env bash
# Prepared in session 24 for the next session's first call (~5-6 min on a fresh H100): the WG1
# P_FREE fix for rendezvous + TMA output (run4/hang_diagnosis.txt). Build, every CUDA GPU test (the
# new test_gpu_rendezvous_with_tma_output among them; it hung before the fix), then
# scripts/gpu_racecheck.sh over `auto` and the serial kernel's TMA path (smoke without a sanitizer,
# racecheck, memcheck, the foundation grid in the racecheck build), then the normal build again.
set -uo pipefail
OUT=${OUT:-/tmp/run5}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
echo "GPU: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh "$OUT/build.log" || exit 1
PYTHONPATH=$PWD timeout 180 python3 -m pytest -q -rs --maxfail=20 tests/test_cuda.py >"$OUT/cuda_tests_log.txt" 2>&1
echo "cuda tests exit $?"; tail -2 "$OUT/cuda_tests_log.txt"
SANITIZE_SCHEDULES="auto,serial+splitcombine+tmaout+tmaq,serial+splitcombine+colsplit,seesaw+ahead+tmaout+tmaq" \
  timeout 400 bash scripts/gpu_racecheck.sh "$OUT/racecheck" 2>&1 | tee "$OUT/racecheck_out.txt" | tail -14
