#!/usr/bin/env bash
# Build scripts/racecheck_toy.cu and run compute-sanitizer's racecheck on each of its modes
# (see the .cu for what each mode is and why). Prints one summary line per mode.
#   scripts/racecheck_toy.sh [OUT_DIR]     (logs: racecheck_toy_mode<N>.log; MODES="8 9" for some)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-/tmp}}
mkdir -p "$OUT_DIR"
BIN=$OUT_DIR/racecheck_toy
nvcc -O2 -lineinfo -gencode arch=compute_90a,code=sm_90a -Icsrc scripts/racecheck_toy.cu -o "$BIN" || exit 1
for mode in ${MODES:-0 1 2 3 4 5 6 7 8 9}; do
  log=$OUT_DIR/racecheck_toy_mode$mode.log
  timeout 120 compute-sanitizer --tool racecheck --racecheck-report hazard "$BIN" $mode >"$log" 2>&1
  rc=$?
  summary=$(grep -E "RACECHECK SUMMARY|ERROR SUMMARY" "$log" | tail -1)
  echo "mode $mode: exit $rc; $(grep -m1 '^mode' "$log"); ${summary:-no summary line}"
done
