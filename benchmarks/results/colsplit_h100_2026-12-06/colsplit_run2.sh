#!/usr/bin/env bash
# Session 15, second call: auto with the column split for b <= 2 (half the parts in use): the whole
# CUDA GPU suite and the interface tests, then A/B against the old auto (all parts, no column split)
# beside FlashMLA HEAD and the Triton kernel, on short and long small batches.
set -o pipefail
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/build.log | tail -1
export PYTHONPATH=$PWD:$PWD/.ref/run
timeout 280 python3 -m pytest -q tests/test_cuda.py tests/test_interface.py tests/test_scheduler.py 2>&1 | tee $OUT/pytest_cuda.log | tail -4
AB_SHAPES="1,1,4096,128,F;1,1,4096,16,F;1,1,4096,64,F;1,2,4096,128,F;1,1,1024,128,F;1,1,16384,128,F;1,1,32768,128,F;1,1,65536,128,F;2,1,4096,128,F;2,1,16384,128,F;2,1,4096,16,F;2,1,32768,64,F" \
AB_VARIANTS=auto,serial+splitcombine=all,serial+splitcombine+l2keep=all,ext/fmla_ref_py,triton,triton=all AB_ROUNDS=7 AB_GRAPH=1 \
  timeout 240 python3 scripts/ab_cuda.py $OUT/ab_colsplit_auto.csv 2>&1 | tee $OUT/ab_colsplit_auto.log | tail -32
