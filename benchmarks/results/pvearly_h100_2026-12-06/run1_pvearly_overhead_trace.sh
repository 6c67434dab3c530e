#!/usr/bin/env bash
# Session 20, run 1 (one machine call). Three builds side by side: main as committed (/tmp/old,
# timed as ext/old_ours), main with the trace instrumentation (/tmp/trace), and main with
# pvearly_variant.patch applied here (session 19's +pvearly, rebased onto db5a266).
#  1. every CUDA GPU test on the patched build (also the first GPU run of db5a266's refactored
#     bit-identity test and launcher edit);
#  2. A/B on the 14 compute-bound rows: auto, auto+pvearly, main's auto (is the patch's register
#     change free?), auto with the Python scheduler charging 3 or 2 blocks per chunk instead of 5
#     (the balance of parts on varied lengths), FlashMLA HEAD;
#  3. session 19's run6: raw step timelines of main's auto at the three rows that miss.
set -o pipefail
mkdir -p $OUT/x
R=$PWD
for d in /tmp/old /tmp/trace; do rm -rf $d && mkdir -p $d && cp -r setup.py pyproject.toml flashmla csrc scripts $d/ && rm -f $d/flashmla/_C*.so; done
git apply benchmarks/results/pvearly_h100_2026-12-06/pvearly_variant.patch || exit 1
rm -f flashmla/_C*.so
(cd /tmp/old && FLASHMLA_BUILD_CUDA=1 MAX_JOBS=5 python3 setup.py build_ext --inplace > $OUT/x/build_main.log 2>&1; echo "main build rc=$?") &
(cd /tmp/trace && FLASHMLA_BUILD_CUDA=1 FLASHMLA_NVCC_EXTRA=-DFLASHMLA_SEESAW_TRACE MAX_JOBS=5 python3 setup.py build_ext --inplace --build-temp build/trace > $OUT/x/build_trace.log 2>&1; echo "trace build rc=$?") &
MAX_JOBS=8 bash scripts/gpu_build_if_needed.sh $OUT/x/build_pvearly.log | tail -1
grep -E "registers|spill" $OUT/x/build_pvearly.log | sort | uniq -c | head -12
export PYTHONPATH=$R:$R/.ref/run
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -3 | tee $OUT/x/pytest_cuda.log
wait
grep -E "registers|spill" $OUT/x/build_main.log | sort | uniq -c | head -12 > $OUT/x/build_main_regs.txt
AB_VARIANTS=auto,auto+pvearly,ext/old_ours,auto%3,auto%2,ext/fmla_ref_py AB_ROUNDS=5 AB_ROWS=compute \
  timeout 260 python3 scripts/ab_cuda.py $OUT/x/ab_pvearly_overhead.csv 2>&1 | tee $OUT/x/ab_pvearly_overhead.log | tail -24
cd /tmp/trace
sch=seesaw+ahead+tmaout+tmaq+nomask
for shape in "128 2 8192 128 0" "128 2 4096 128 1" "128 2 8192 128 1"; do
  set -- $shape
  TRACE_SCHEDULE=$sch TRACE_VARIED=$5 TRACE_SAVE=$OUT/x/trace_$1_$2_$3_$4_v$5.pt PYTHONPATH=/tmp/trace \
    timeout 60 python3 scripts/seesaw_trace.py $1 $2 $3 $4 > $OUT/x/trace_$1_$2_$3_$4_v$5.txt 2>&1
  head -3 $OUT/x/trace_$1_$2_$3_$4_v$5.txt
done
cd $OUT && tar -cJf run1_all.tar.xz x && rm -rf $OUT/x && ls -la $OUT
