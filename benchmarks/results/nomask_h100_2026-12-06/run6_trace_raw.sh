#!/usr/bin/env bash
# Session 19, run 6 (session 18's next_trace_raw.sh with today's auto form, +nomask): the raw step timelines of auto's seesaw form at the three rows
# that miss their targets, saved whole (TRACE_SAVE) so that per-sample orderings and the tensor
# pipe's idle windows can be read offline, not only per-event medians (kernel-design 7.19, records
# README run 6). About two minutes of device time after a machine start.
set -o pipefail
mkdir -p $OUT/x
rm -f flashmla/_C*.so
FLASHMLA_BUILD_CUDA=1 FLASHMLA_NVCC_EXTRA=-DFLASHMLA_SEESAW_TRACE MAX_JOBS=16 timeout 150 python3 setup.py build_ext --inplace --build-temp build/trace > $OUT/x/build_trace.log 2>&1 || { tail -5 $OUT/x/build_trace.log; exit 1; }
sch=seesaw+ahead+tmaout+tmaq+nomask
for shape in "128 2 8192 128 0" "128 2 4096 128 1" "128 2 8192 128 1"; do
  set -- $shape
  TRACE_SCHEDULE=$sch TRACE_VARIED=$5 TRACE_SAVE=$OUT/x/trace_$1_$2_$3_$4_v$5.pt PYTHONPATH=$PWD \
    timeout 60 python3 scripts/seesaw_trace.py $1 $2 $3 $4 > $OUT/x/trace_$1_$2_$3_$4_v$5.txt 2>&1
  head -2 $OUT/x/trace_$1_$2_$3_$4_v$5.txt
done
rm -f flashmla/_C*.so  # the next normal build must not pick up the instrumented kernels
cd $OUT && tar -cf run6_trace_raw.tar x && rm -rf $OUT/x
