#!/usr/bin/env bash
# Session 14, third call: where a small batch's time goes. (1) main-kernel time against the
# sequence length at b1 (ours, FlashMLA HEAD); (2) a trace build of the seesaw kernel: one thread
# block's life from entry to exit at b1 (TRACE_LIFE=1).
set -o pipefail
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/build.log | tail -1
export PYTHONPATH=$PWD:$PWD/.ref/run
timeout 150 python3 .ref/run/b1_sweep.py 2>&1 | grep -v -i warn | tee $OUT/b1_sweep.log
rm -f flashmla/_C*.so
t0=$SECONDS
FLASHMLA_BUILD_CUDA=1 MAX_JOBS=16 FLASHMLA_NVCC_EXTRA=-DFLASHMLA_SEESAW_TRACE python3 setup.py build_ext --inplace --build-temp build/trace > $OUT/build_trace.log 2>&1 || { tail -20 $OUT/build_trace.log; exit 1; }
echo "trace build $((SECONDS - t0)) s"
for shape in "1 1 4096 128" "1 1 64 128" "1 1 1024 128" "1 1 4096 16" "4 1 4096 128"; do
  TRACE_LIFE=1 TRACE_SCHEDULE=seesaw+tmaq+splitcombine timeout 60 python3 scripts/seesaw_trace.py $shape 2>&1 | tee -a $OUT/b1_life.log
done
rm -f flashmla/_C*.so
