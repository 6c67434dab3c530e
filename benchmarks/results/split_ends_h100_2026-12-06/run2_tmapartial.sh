#!/usr/bin/env bash
# Session 18, run 2: run 1's +tmapartial again, alone beside auto and FlashMLA HEAD, 5 rounds on
# the 14 compute-bound rows (same code as run 1, whose GPU tests passed). Needs .ref/run carried.
set -o pipefail
mkdir -p $OUT/x
export PYTHONPATH=$PWD:$PWD/.ref/run
rm -f flashmla/_C*.so
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/x/build.log | tail -1
AB_ROWS=compute AB_VARIANTS=auto,auto+tmapartial,ext/fmla_ref_py AB_ROUNDS=5 \
  timeout 300 python3 scripts/ab_cuda.py $OUT/x/ab_tmapartial.csv 2>&1 | tee $OUT/x/ab_tmapartial.log | tail -18
cd $OUT && tar -cf run2_all.tar x && rm -rf $OUT/x
