#!/usr/bin/env bash
# Session 14: b1 s1 4K h128 (5% over its target): scheduler floors (fewer, longer chunks) against
# auto, beside FlashMLA HEAD, in one process; then per-kernel times.
set -o pipefail
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/build.log | tail -1
export PYTHONPATH=$PWD:$PWD/.ref/run
AB_SHAPES="1,1,4096,128,F;1,1,4096,16,F;1,2,4096,128,F;1,1,16384,128,F;1,1,1024,128,F;2,1,4096,128,F;4,1,4096,128,F;8,1,4096,128,F" \
AB_VARIANTS=auto,auto@3,auto@4,auto@6,auto@8,ext/fmla_ref_py AB_ROUNDS=7 AB_GRAPH=1 \
  timeout 300 python3 scripts/ab_cuda.py $OUT/ab_floor.csv 2>&1 | tee $OUT/ab_floor.log | tail -30
timeout 120 python3 .ref/run/b1_split.py 2>&1 | tee $OUT/b1_split.log
