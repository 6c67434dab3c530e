#!/usr/bin/env bash
# Session 18, run 1: what a split request's ends cost the seesaw, and +tmapartial (the fp32
# partial by TMA box stores). Probes (wrong output by design, timed without the output check):
# +nopartial (no fp32 partial stores), +nocombine (no combine kernel); beside auto,
# auto+tmapartial and FlashMLA HEAD on the 14 compute-bound rows, 3 rounds, one process. GPU tests
# first (two +tmapartial variants on the foundation grid). Needs .ref/run carried.
set -o pipefail
mkdir -p $OUT/x
export PYTHONPATH=$PWD:$PWD/.ref/run
rm -f flashmla/_C*.so
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/x/build.log | tail -1
timeout 200 python3 -m pytest -q -x tests/test_cuda.py 2>&1 | tail -2 | tee $OUT/x/pytest_cuda.log
AB_ROWS=compute AB_VARIANTS=auto,auto+tmapartial,auto+nopartial,auto+nocombine,ext/fmla_ref_py AB_ROUNDS=3 \
  timeout 300 python3 scripts/ab_cuda.py $OUT/x/ab_probes.csv 2>&1 | tee $OUT/x/ab_probes.log | tail -20
cd $OUT && tar -cf run1_all.tar x && rm -rf $OUT/x
