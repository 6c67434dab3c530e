#!/usr/bin/env bash
# Session 14, fourth call: +bulkpart (a part's last split request writes its fp32 partials through
# shared memory with bulk copies): smoke, tests, memcheck, then A/B against auto beside FlashMLA HEAD.
set -o pipefail
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/build.log | tail -1
grep -E "registers|spill" $OUT/build.log | sed 's/^ptxas info *: //' | sort | uniq -c | head -12
export PYTHONPATH=$PWD:$PWD/.ref/run
SANITIZE_LONG=1 SANITIZE_SCHEDULES=serial+bulkpart,chained+bulkpart+splitcombine,serial+bulkpart@8 timeout 60 python3 scripts/cuda_sanitizer_cases.py 2>&1 | tail -3 || { echo SMOKE FAILED; exit 1; }
timeout 200 python3 -m pytest -q -x -k "bulkpart or bit_identical or variants_on_benchmark or schedule" tests/test_cuda.py 2>&1 | tail -4
AB_SHAPES="1,1,4096,128,F;1,1,4096,16,F;1,2,4096,128,F;1,1,16384,128,F;1,1,1024,128,F;2,1,4096,128,F;4,1,4096,128,F;8,1,4096,128,F;128,1,4096,16,T;128,1,4096,64,T;128,2,8192,32,T;128,1,8192,16,T" \
AB_VARIANTS=auto,auto+bulkpart,ext/fmla_ref_py AB_ROUNDS=7 AB_GRAPH=1 \
  timeout 240 python3 scripts/ab_cuda.py $OUT/ab_bulkpart.csv 2>&1 | tee $OUT/ab_bulkpart.log | tail -22
SANITIZE_SCHEDULES=serial+bulkpart,chained+bulkpart+splitcombine@4 timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 python3 scripts/cuda_sanitizer_cases.py > $OUT/memcheck_bulkpart.log 2>&1
echo "memcheck rc $?"; tail -2 $OUT/memcheck_bulkpart.log
