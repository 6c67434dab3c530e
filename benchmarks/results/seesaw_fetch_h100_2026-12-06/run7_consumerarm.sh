#!/usr/bin/env bash
# Prepared for the next session (not run): consumerarm_variant.patch (kernel-design 7.18's lead:
# each K box's mbarrier armed by the warpgroup that consumes it, just before its waits, as
# FlashMLA's SASS shows, so that a refill is TMA issues alone; a runtime flag, so the A/B is in one
# process). Compiles clean for sm_90a (seesaw 252 / 249 registers, no spills, no serialised wgmma);
# untested on a GPU. GPU tests (three consumerarm VARIANTS on the foundation grid), then the
# compute-bound rows for auto, auto+consumerarm and FlashMLA HEAD. Needs .ref/run carried.
set -o pipefail
mkdir -p $OUT/x
export PYTHONPATH=$PWD:$PWD/.ref/run
# The patch is against session 17's sources (3ee4aa3); later trees edit the same lines.
git checkout 3ee4aa3 -- csrc flashmla tests || exit 1
git apply benchmarks/results/seesaw_fetch_h100_2026-12-06/consumerarm_variant.patch || exit 1
rm -f flashmla/_C*.so
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/x/build.log | tail -1
timeout 150 python3 -m pytest -q -x tests/test_cuda.py 2>&1 | tail -2 | tee $OUT/x/pytest_cuda.log
AB_ROWS=compute AB_VARIANTS=auto,auto+consumerarm,ext/fmla_ref_py AB_ROUNDS=3 timeout 150 \
  python3 scripts/ab_cuda.py $OUT/x/ab_consumerarm.csv 2>&1 | tee $OUT/x/ab_consumerarm.log | tail -18
cd $OUT && tar -cf next_all.tar x && rm -rf $OUT/x
