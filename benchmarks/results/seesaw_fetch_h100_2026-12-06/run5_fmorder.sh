#!/usr/bin/env bash
# Session 17, run 5: session 10's +fmorder (FlashMLA's order of the PVs and refills) ported to
# today's seesaw+ahead (kernel-design 7.18): GPU tests (two fmorder VARIANTS on the foundation
# grid), the compute-bound rows for auto, auto+fmorder and FlashMLA HEAD (3 rounds). (A side-by-side
# bench did not fit the session's device time left.) Needs .ref/run carried.
set -o pipefail
mkdir -p $OUT/x
export PYTHONPATH=$PWD:$PWD/.ref/run
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/x/build.log | tail -1
timeout 120 python3 -m pytest -q -x tests/test_cuda.py 2>&1 | tail -2 | tee $OUT/x/pytest_cuda.log
AB_ROWS=compute AB_VARIANTS=auto,auto+fmorder,ext/fmla_ref_py AB_ROUNDS=3 timeout 150 \
  python3 scripts/ab_cuda.py $OUT/x/ab_fmorder.csv 2>&1 | tee $OUT/x/ab_fmorder.log | tail -18
ratio=$(grep "auto+fmorder: time / auto geomean" $OUT/x/ab_fmorder.log | awk '{print $6}')
echo "fmorder / auto geomean: ${ratio:-none}"
cd $OUT && tar -cf run5_all.tar x && rm -rf $OUT/x && cd - >/dev/null
