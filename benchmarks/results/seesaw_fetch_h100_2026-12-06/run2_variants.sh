#!/usr/bin/env bash
# Session 17, run 2: three +ahead experiments as schedule flags (kernel-design 7.18), one build.
# 1) build, GPU tests (the new flags run the foundation grid as two VARIANTS); 2) the compute-bound
# rows: auto, auto+sbright, auto+salate, auto+earlymax, all three, FlashMLA HEAD, same process,
# 3 rounds; 3) the trace build: the step timeline of seesaw+ahead (auto's form) and of all three
# flags at b128 s_q2 8K h128. Needs .ref/run (fmla_ref_py) carried.
set -o pipefail
mkdir -p $OUT/x
export PYTHONPATH=$PWD:$PWD/.ref/run
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/x/build.log | tail -1
grep -E "registers|spill" $OUT/x/build.log | sort | uniq -c | head -20 > $OUT/x/build_regs.txt
timeout 150 python3 -m pytest -q -x tests/test_cuda.py 2>&1 | tail -3 | tee $OUT/x/pytest_cuda.log
AB_ROWS=compute AB_VARIANTS=auto,auto+sbright,auto+salate,auto+earlymax,auto+sbright+salate+earlymax,ext/fmla_ref_py \
  AB_ROUNDS=3 timeout 260 python3 scripts/ab_cuda.py $OUT/x/ab_variants.csv 2>&1 | tee $OUT/x/ab_variants.log | tail -24
rm -f flashmla/_C*.so
FLASHMLA_BUILD_CUDA=1 FLASHMLA_NVCC_EXTRA=-DFLASHMLA_SEESAW_TRACE MAX_JOBS=16 timeout 150 python3 setup.py build_ext --inplace --build-temp build/trace > $OUT/x/build_trace.log 2>&1 || tail -5 $OUT/x/build_trace.log
for sch in seesaw+ahead+tmaout+tmaq seesaw+ahead+tmaout+tmaq+sbright+salate+earlymax; do
  TRACE_SCHEDULE=$sch timeout 60 python3 scripts/seesaw_trace.py 128 2 8192 128 > $OUT/x/trace_$sch.txt 2>&1
  head -3 $OUT/x/trace_$sch.txt
done
cd $OUT && tar -cf run2_all.tar x && rm -rf $OUT/x
