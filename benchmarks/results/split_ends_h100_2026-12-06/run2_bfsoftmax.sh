#!/usr/bin/env bash
# Session 18, run 2 (the last device minutes): +bfsoftmax, WG0's softmax in the straight-line form
# that WG1 runs (select masking on every block, no branch), beside auto and FlashMLA HEAD on the 14
# compute-bound rows, 3 rounds, one process; ab_cuda checks every non-probe variant's output
# against the reference. In the trace, WG0's softmax takes ~1,190 cycles and WG1's ~790.
set -o pipefail
# Ran at a752db3 with the flag in the tree; reverted since, so its patch is applied here.
git apply benchmarks/results/split_ends_h100_2026-12-06/bfsoftmax_variant.patch || exit 1
mkdir -p $OUT/x
export PYTHONPATH=$PWD:$PWD/.ref/run
rm -f flashmla/_C*.so
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/x/build.log | tail -1
timeout 60 python3 -m pytest -q -x tests/test_cuda.py -k bfsoftmax 2>&1 | tail -1 | tee $OUT/x/pytest_bfsoftmax.log
AB_ROWS=compute AB_VARIANTS=auto,auto+bfsoftmax,ext/fmla_ref_py AB_ROUNDS=3 \
  timeout 150 python3 scripts/ab_cuda.py $OUT/x/ab_bfsoftmax.csv 2>&1 | tee $OUT/x/ab_bfsoftmax.log | tail -18
cd $OUT && tar -cf run2_all.tar x && rm -rf $OUT/x
