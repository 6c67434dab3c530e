#!/usr/bin/env bash
# Session 14, fifth call: the serial family's other schedules at small batch, where a thread block's
# blocks run as a latency chain (S -> softmax -> PV): pipelined (S of block j+1 before PV of j) and
# chained, with and without floors, against auto beside FlashMLA HEAD.
set -o pipefail
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/build.log | tail -1
export PYTHONPATH=$PWD:$PWD/.ref/run
AB_SHAPES="1,1,4096,128,F;1,1,4096,16,F;1,2,4096,128,F;1,1,16384,128,F;2,1,4096,128,F;8,1,4096,128,F" \
AB_VARIANTS=auto,pipelined+splitcombine,pipelined+splitcombine@3,pipelined+splitcombine@4,chained+splitcombine@3,ext/fmla_ref_py AB_ROUNDS=7 \
  timeout 300 python3 scripts/ab_cuda.py $OUT/ab_pipelined_small.csv 2>&1 | tee $OUT/ab_pipelined_small.log | tail -12
