#!/usr/bin/env bash
# Session 16, third call (same warm machine as run 2): run 2's A/B without the previous build,
# which failed to launch in that process. `auto` (this tree) against the previous `auto` for small
# batches (serial+splitcombine=nosplit: the serial kernel on metadata for every part) and FlashMLA
# HEAD; the Q-load change is in every variant built from this tree.
export PYTHONPATH=$PWD:$PWD/.ref/run; MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/build.log | tail -1
AB_SHAPES="1,1,4096,128,F;1,1,4096,16,F;1,1,16384,128,F;1,1,32768,128,F;2,1,4096,128,F;2,1,16384,128,F;128,1,4096,64,F;128,1,8192,16,T;128,2,8192,128,F" \
AB_VARIANTS=auto,serial+splitcombine=nosplit,ext/fmla_ref_py AB_ROUNDS=5 \
  timeout 200 python3 scripts/ab_cuda.py $OUT/ab_qload.csv 2>&1 | tee $OUT/ab_qload.log | tail -14
