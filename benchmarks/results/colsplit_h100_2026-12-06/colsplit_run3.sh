#!/usr/bin/env bash
# Session 15, third call: the column split decided by the GPU scheduler (mark in metadata column 7,
# only for short parts): GPU tests, smoke + memcheck of the split path, A/B against the old auto.
set -o pipefail
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/build.log | tail -1
grep -E "registers|spill" $OUT/build.log | sed 's/^ptxas info *: //' | sort | uniq -c | head -12
export PYTHONPATH=$PWD:$PWD/.ref/run
SANITIZE_LONG=1 SANITIZE_SCHEDULES=serial+colsplit,serial+colsplit+splitcombine@3,auto timeout 60 python3 scripts/cuda_sanitizer_cases.py 2>&1 | tail -3 || { echo SMOKE FAILED; exit 1; }
timeout 200 python3 -m pytest -q tests/test_cuda.py tests/test_interface.py tests/test_scheduler.py 2>&1 | tee $OUT/pytest_cuda.log | tail -4
AB_SHAPES="1,1,4096,128,F;1,1,4096,16,F;1,1,4096,64,F;1,2,4096,128,F;1,1,1024,128,F;1,1,16384,128,F;1,1,32768,128,F;1,1,65536,128,F;2,1,4096,128,F;2,1,16384,128,F;2,1,4096,16,F;2,1,32768,64,F" \
AB_VARIANTS=auto,serial+splitcombine=nosplit,serial+splitcombine+colsplit=split:264,ext/fmla_ref_py AB_ROUNDS=7 AB_GRAPH=1 \
  timeout 200 python3 scripts/ab_cuda.py $OUT/ab_colsplit_gpu_rule.csv 2>&1 | tee $OUT/ab_colsplit_gpu_rule.log | tail -30
SANITIZE_SCHEDULES=serial+colsplit,serial+colsplit+splitcombine@4,auto timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 python3 scripts/cuda_sanitizer_cases.py > $OUT/memcheck_colsplit.log 2>&1
echo "memcheck rc $?"; tail -2 $OUT/memcheck_colsplit.log
