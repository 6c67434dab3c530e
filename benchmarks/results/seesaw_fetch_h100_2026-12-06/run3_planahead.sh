#!/usr/bin/env bash
# Session 17, run 3: the +ahead refills planned one step early (kernel-design 7.18), A/B against the
# old place (+planattop, the A/B switch) beside FlashMLA HEAD on the compute-bound rows, GPU tests;
# if the new place is at least 1% faster (geomean), the side-by-side bench of every provider.
# Needs .ref/run (fmla_ref_py) and .gpu (FlashInfer, vLLM kernels) carried.
set -o pipefail
mkdir -p $OUT/x
export PYTHONPATH=$PWD:$PWD/.ref/run
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/x/build.log | tail -1
timeout 120 python3 -m pytest -q -x tests/test_cuda.py 2>&1 | tail -2 | tee $OUT/x/pytest_cuda.log
AB_ROWS=compute AB_VARIANTS=auto,auto+planattop,ext/fmla_ref_py AB_ROUNDS=3 timeout 150 \
  python3 scripts/ab_cuda.py $OUT/x/ab_planahead.csv 2>&1 | tee $OUT/x/ab_planahead.log | tail -18
ratio=$(grep "auto+planattop: time / auto geomean" $OUT/x/ab_planahead.log | awk '{print $6}')
echo "planattop / auto geomean: ${ratio:-none}"
cd $OUT && tar -cf run3_all.tar x && rm -rf $OUT/x && cd - >/dev/null
if python3 -c "import sys; sys.exit(0 if float('${ratio:-0}') >= 1.01 else 1)"; then
  BENCH_TIMEOUT=380 BENCH_PACK=1 OUT=$OUT/bench bash scripts/gpu_bench.sh 2>&1 | tail -45
else
  echo "bench SKIPPED: planning ahead was not 1% faster (ratio ${ratio:-none})"
fi
