#!/usr/bin/env bash
# Session 24, device call 3: the new `auto` (column split only up to 16 query rows per kv head) under
# the tests and the sanitizers. Build, every CUDA GPU test (with the column-split graph test now
# parametrized over h16 / h128), then scripts/gpu_racecheck.sh (racecheck + memcheck on the sanitizer
# cases, which gained a padded b2 h128 case that takes the half-parts metadata) over `auto`, the
# path `auto` takes at b1-b2 above 16 rows per kv head, the column-split kernel and the seesaw.
set -uo pipefail
OUT=${OUT:-/tmp/run4}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
echo "GPU: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh "$OUT/build.log" || exit 1
PYTHONPATH=$PWD timeout 150 python3 -m pytest -q -rs --maxfail=20 tests/test_cuda.py >"$OUT/cuda_tests_log.txt" 2>&1
echo "cuda tests exit $?"; tail -2 "$OUT/cuda_tests_log.txt"
SANITIZE_SCHEDULES="auto,serial+splitcombine+tmaout+tmaq,serial+splitcombine+colsplit,seesaw+ahead+tmaout+tmaq" \
  timeout 420 bash scripts/gpu_racecheck.sh "$OUT/racecheck" 2>&1 | tee "$OUT/racecheck_out.txt" | tail -12
