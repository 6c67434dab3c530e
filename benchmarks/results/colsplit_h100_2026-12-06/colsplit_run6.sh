#!/usr/bin/env bash
# Session 15, sixth call: the column split with unrolled split-mode stores: GPU tests, a short A/B,
# then the full side-by-side benchmark (every provider, 35 perf-target rows) for the records.
set -o pipefail
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/build.log | tail -1
export PYTHONPATH=$PWD:$PWD/.ref/run
timeout 90 python3 -m pytest -q tests/test_cuda.py tests/test_scheduler.py 2>&1 | tee $OUT/pytest_cuda.log | tail -2
AB_SHAPES="1,1,4096,128,F;1,1,4096,16,F;1,1,32768,128,F;2,1,4096,128,F" \
AB_VARIANTS=auto,serial+splitcombine=nosplit,ext/fmla_ref_py AB_ROUNDS=5 AB_GRAPH=1 \
  timeout 60 python3 scripts/ab_cuda.py $OUT/ab_colsplit_unrolled.csv 2>&1 | tee $OUT/ab_colsplit_unrolled.log | tail -12
mkdir -p $OUT/bench
BENCH_TIMEOUT=400 BENCH_PACK=1 OUT=$OUT/bench timeout 430 bash scripts/gpu_bench.sh > $OUT/gpu_bench.out 2>&1
echo "gpu_bench rc $?"; tail -45 $OUT/gpu_bench.out
