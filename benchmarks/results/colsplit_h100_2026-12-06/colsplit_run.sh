#!/usr/bin/env bash
# Session 15, first call: +colsplit (serial kernel, two thread blocks per row tile and part, each
# doing PV and the partial store for 256 of the 512 columns): smoke, A/B at small batch beside
# FlashMLA HEAD, GPU tests, memcheck; then the trace build check left from session 14.
set -o pipefail
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/build.log | tail -1
grep -E "registers|spill" $OUT/build.log | sed 's/^ptxas info *: //' | sort | uniq -c | head -12
export PYTHONPATH=$PWD:$PWD/.ref/run
SANITIZE_LONG=1 SANITIZE_SCHEDULES=serial+colsplit,serial+colsplit+splitcombine@3,serial+colsplit@8 timeout 60 python3 scripts/cuda_sanitizer_cases.py 2>&1 | tail -3 || { echo SMOKE FAILED; exit 1; }
AB_SHAPES="1,1,4096,128,F;1,1,4096,16,F;1,2,4096,128,F;1,1,16384,128,F;1,1,1024,128,F;2,1,4096,128,F;4,1,4096,128,F;8,1,4096,128,F" \
AB_VARIANTS=auto,auto+colsplit,auto+colsplit:66,auto+colsplit@3,ext/fmla_ref_py AB_ROUNDS=7 AB_GRAPH=1 \
  timeout 200 python3 scripts/ab_cuda.py $OUT/ab_colsplit.csv 2>&1 | tee $OUT/ab_colsplit.log | tail -20
timeout 150 python3 -m pytest -q -k "colsplit or bit_identical or schedule" tests/test_cuda.py 2>&1 | tee $OUT/pytest_colsplit.log | tail -4
SANITIZE_SCHEDULES=serial+colsplit,serial+colsplit+splitcombine@4 timeout 90 compute-sanitizer --tool memcheck --error-exitcode 9 python3 scripts/cuda_sanitizer_cases.py > $OUT/memcheck_colsplit.log 2>&1
echo "memcheck rc $?"; tail -2 $OUT/memcheck_colsplit.log
timeout 100 bash .ref/run/trace_check.sh 2>&1 | tail -25
