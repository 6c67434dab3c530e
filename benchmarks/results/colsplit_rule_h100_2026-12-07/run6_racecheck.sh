#!/usr/bin/env bash
# Session 25: run4_verify.sh slimmed to fit one device call behind power_leads run1 (its run1.sh), which
# already runs every CUDA GPU test (on this tree plus a seesaw-only patch, so the serial kernel's
# WG1 P_FREE fix and test_gpu_rendezvous_with_tma_output are covered there). Here only
# scripts/gpu_racecheck.sh: the racecheck build without a sanitizer (a deadlock shows as a timeout),
# racecheck and memcheck on the sanitizer cases, and the racecheck build against the reference.
set -uo pipefail
OUT=${OUT:-/tmp/run6}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
echo "GPU: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)"
SANITIZE_SCHEDULES="auto,serial+splitcombine+tmaout+tmaq,serial+splitcombine+colsplit,seesaw+ahead+tmaout+tmaq" \
  RACECHECK_KEEP_BUILD=1 timeout 560 bash scripts/gpu_racecheck.sh "$OUT/racecheck" 2>&1 | tee "$OUT/racecheck_out.txt" | tail -14
rm -f flashmla/_C*.so  # the racecheck build stays on the device otherwise; the next call builds main
