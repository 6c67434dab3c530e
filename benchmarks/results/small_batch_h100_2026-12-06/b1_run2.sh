#!/usr/bin/env bash
# Session 14, second call: the seesaw kernel (both warpgroups compute S, two blocks per step) with
# longer chunks (scheduler floors) at small batches with 128 heads, against auto and FlashMLA HEAD.
set -o pipefail
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/build.log | tail -1
export PYTHONPATH=$PWD:$PWD/.ref/run
S=seesaw+tmaq+splitcombine
AB_SHAPES="1,1,4096,128,F;1,2,4096,128,F;1,1,1024,128,F;1,1,16384,128,F;2,1,4096,128,F;4,1,4096,128,F;8,1,4096,128,F;1,1,4096,64,F" \
AB_VARIANTS=auto,$S,$S@3,$S@4,$S@6,$S@8,ext/fmla_ref_py AB_ROUNDS=7 AB_GRAPH=1 \
  timeout 400 python3 scripts/ab_cuda.py $OUT/ab_seesaw_floor.csv 2>&1 | tee $OUT/ab_seesaw_floor.log | tail -30
