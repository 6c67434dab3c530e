#!/usr/bin/env bash
# Session 31, call 3 (if run 2 adopted a flag; ~6 device minutes): compute-sanitizer racecheck and
# memcheck on the racecheck build (scripts/gpu_racecheck.sh) with the new flags' paths added to the
# sanitizer cases. Packed into $OUT/run3.tar.xz.
set -uo pipefail
OUT=${OUT:-/tmp/chain3}; R=$OUT/run3; mkdir -p "$R"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
echo "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)" | tee "$R/gpu.txt"
base=seesaw+ahead+tmaout+tmaq+nomask+earlyq+pvbfirst
SANITIZE_SCHEDULES="seesaw,seesaw+ahead,$base,$base+chainpv,$base+chainpv+sbrightfirst,seesaw+ahead+nomask+chainpv@4,serial" \
  RACECHECK_KEEP_BUILD=1 timeout 500 bash scripts/gpu_racecheck.sh "$R" 2>&1 | tee "$R/racecheck_summary.txt" | tail -8
(cd "$OUT" && tar cJf run3.tar.xz run3)
