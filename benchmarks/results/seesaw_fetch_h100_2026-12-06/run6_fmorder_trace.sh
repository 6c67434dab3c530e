#!/usr/bin/env bash
# Session 17, run 6 (the device time left): the step timeline of run 5's +fmorder beside auto's
# seesaw+ahead at b128 s_q2 8K h128, from the trace build (scripts/seesaw_trace.py). The event
# names that script prints are +ahead's; for +fmorder read them by fmorder_variant.patch's
# SEESAW_TRACE comments.
set -o pipefail
mkdir -p $OUT/x
# The patch is against session 17's sources (3ee4aa3); later trees edit the same lines.
git checkout 3ee4aa3 -- csrc flashmla tests || exit 1
git apply benchmarks/results/seesaw_fetch_h100_2026-12-06/fmorder_variant.patch || exit 1
rm -f flashmla/_C*.so
FLASHMLA_BUILD_CUDA=1 FLASHMLA_NVCC_EXTRA=-DFLASHMLA_SEESAW_TRACE MAX_JOBS=16 timeout 120 python3 setup.py build_ext --inplace --build-temp build/trace > $OUT/x/build_trace.log 2>&1 || { tail -5 $OUT/x/build_trace.log; exit 1; }
for sch in seesaw+ahead+tmaout+tmaq seesaw+ahead+tmaout+tmaq+fmorder; do
  TRACE_SCHEDULE=$sch PYTHONPATH=$PWD timeout 40 python3 scripts/seesaw_trace.py 128 2 8192 128 > $OUT/x/trace_$sch.txt 2>&1
  head -2 $OUT/x/trace_$sch.txt
done
cd $OUT && tar -cf run6_all.tar x && rm -rf $OUT/x
