#!/usr/bin/env bash
# compute-sanitizer racecheck on a build of the decode kernels whose barriers racecheck can model
# (GPU host). The normal build reports its correct warpgroup handoffs as hazards: racecheck
# mis-models bar.arrive -> bar.sync and warpgroup-only named barriers (scripts/racecheck_toy.cu).
# -DFLASHMLA_RACECHECK_BARRIERS makes every handoff bar.sync on both sides and each warpgroup's
# own syncs mbarriers; nothing else changes (the default build's SASS is the same with or without
# this code, checked by diff).
#   scripts/gpu_racecheck.sh [OUT_DIR]   (rebuilds flashmla._C in place, then the normal build again;
#   RACECHECK_KEEP_BUILD=1 skips that last rebuild when nothing runs after it)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-/tmp}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
build() {  # $1: extra nvcc flags, $2: log
  FLASHMLA_BUILD_CUDA=1 FLASHMLA_NVCC_EXTRA="$1" MAX_JOBS=${MAX_JOBS:-16} \
    $PY setup.py build_ext --inplace --force >"$2" 2>&1 || { tail -20 "$2"; echo "build FAILED"; exit 1; }
}
echo "== racecheck build (-DFLASHMLA_RACECHECK_BARRIERS)"
build -DFLASHMLA_RACECHECK_BARRIERS "$OUT_DIR/racecheck_build.log"
grep -E "registers|spill" "$OUT_DIR/racecheck_build.log" | sort | uniq -c | head -8
fail=0
SANITIZE_SCHEDULES=${SANITIZE_SCHEDULES:-serial,serial+splitcombine,chained+splitcombine@4,pipelined,seesaw,seesaw+ahead,seesaw+tmaout+tmaq,seesaw+ahead+tmaout+tmaq,seesaw+ahead+tmaout+tmaq+nomask+earlyq,seesaw+ahead+tmaout+tmaq+nomask+earlyq+pvbfirst,seesaw+ahead+tmaout+tmaq+earlyq@4}
export SANITIZE_SCHEDULES PYTHONUNBUFFERED=1
# The cases without a sanitizer first: a deadlock of the racecheck build (every handoff a
# rendezvous) then shows as a timeout here, in seconds, not as a sanitizer run that never ends.
timeout 90 $PY scripts/cuda_sanitizer_cases.py >"$OUT_DIR/racecheck_build_smoke.log" 2>&1
rc=$?
echo "racecheck build without a sanitizer: exit $rc ($(grep -c finite=True "$OUT_DIR/racecheck_build_smoke.log") case runs finished; last: $(tail -1 "$OUT_DIR/racecheck_build_smoke.log"))"
[ $rc -eq 0 ] || fail=1
smoke_failed=$fail
for tool in racecheck memcheck; do
  [ $smoke_failed -eq 0 ] || { echo "$tool: not run (the racecheck build failed without a sanitizer)"; continue; }
  log=$OUT_DIR/racecheck_build_$tool.log
  timeout 300 compute-sanitizer --tool $tool --error-exitcode 9 $PY scripts/cuda_sanitizer_cases.py >"$log" 2>&1
  rc=$?
  echo "$tool: exit $rc; $(grep -E 'SUMMARY' "$log" | tail -1)"
  [ $rc -eq 0 ] || fail=1
done
echo "== the racecheck build against the fp32 reference (foundation grid: auto, seesaw, chained; rendezvous + TMA output)"
timeout 300 $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda.py -x \
  -k "test_gpu_foundation_grid or (variant_foundation_grid and (seesaw or chained)) or rendezvous_with_tma_output" \
  >"$OUT_DIR/racecheck_build_pytest.log" 2>&1; rc=$?
tail -1 "$OUT_DIR/racecheck_build_pytest.log"; [ $rc -eq 0 ] || fail=1
if [ "${RACECHECK_KEEP_BUILD:-0}" = 1 ]; then
  echo "== normal build NOT restored (RACECHECK_KEEP_BUILD=1): flashmla._C is still the racecheck build"
else
  echo "== normal build again"
  build "" "$OUT_DIR/normal_build.log"
fi
echo "gpu_racecheck.sh: $([ $fail -eq 0 ] && echo OK || echo FAILURES)"
exit $fail
