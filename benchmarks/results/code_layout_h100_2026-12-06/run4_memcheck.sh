#!/usr/bin/env bash
# Session 16: memcheck of the sanitizer cases on the committed Q-load change (run 2's memcheck
# stopped after case 0: its experiment variant hit the binding's known error-path crash).
set -o pipefail
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/build.log | tail -1
export PYTHONPATH=$PWD  # (the first try of this call lacked it: "No module named flashmla")
SANITIZE_SCHEDULES=serial,seesaw,auto timeout 110 compute-sanitizer --tool memcheck --error-exitcode 9 python3 scripts/cuda_sanitizer_cases.py > $OUT/memcheck_qload.log 2>&1
echo "memcheck rc $?"; grep -c "out finite=True" $OUT/memcheck_qload.log; tail -2 $OUT/memcheck_qload.log
