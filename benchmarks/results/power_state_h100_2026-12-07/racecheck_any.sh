#!/usr/bin/env bash
# Session 30: run2.sh's sanitizer half alone, for whichever sm_90 card comes first (H100 or H200):
# it checks correctness of the racecheck build's +pvbfirst handoff through publish_barrier
# (session 29's review), not timing. Packed into $OUT/racecheck.tar.xz.
set -uo pipefail
OUT=${OUT:-/tmp/rc}; R=$OUT/racecheck; mkdir -p "$R"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
echo "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)" | tee "$R/gpu.txt"
RACECHECK_KEEP_BUILD=1 timeout 420 bash scripts/gpu_racecheck.sh "$R" 2>&1 | tee "$R/racecheck_summary.txt" | tail -8
(cd "$OUT" && tar cJf racecheck.tar.xz racecheck)
