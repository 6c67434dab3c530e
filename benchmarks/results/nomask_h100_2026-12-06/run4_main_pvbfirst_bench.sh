#!/usr/bin/env bash
# Session 19, run 4: main with "auto" = ... +ahead+nomask on the 256-row rows. Build, every CUDA GPU
# test, an A/B of auto / auto+pvbfirst (an experiment: WG0 issues the next pair's S only after WG1
# has issued PV_B,right) / the old auto of those rows (seesaw+ahead+tmaout+tmaq) / the serial CUDA
# kernel / the Triton backend's Gluon kernel (serial-style, with a TMA loader warp: 7% faster than
# ours at b128 s_q2 8K h128 in session 16's bench) / FlashMLA HEAD on the 14 compute-bound rows
# (4 rounds), then the side-by-side benchmark of every provider.
set -o pipefail
mkdir -p $OUT/x
export PYTHONPATH=$PWD:$PWD/.ref/run
rm -f flashmla/_C*.so
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/x/build.log | tail -1
timeout 150 python3 -m pytest -q tests/test_cuda.py 2>&1 | tail -3 | tee $OUT/x/pytest_cuda.log
AB_ROWS=compute AB_VARIANTS=auto,auto+pvbfirst,seesaw+ahead+tmaout+tmaq,serial,gluon,ext/fmla_ref_py AB_ROUNDS=4 \
  timeout 180 python3 scripts/ab_cuda.py $OUT/x/ab_pvbfirst.csv 2>&1 | tee $OUT/x/ab_pvbfirst.log | tail -8
cd $OUT && tar -cf run4_ab.tar x && rm -rf $OUT/x && cd - >/dev/null
BENCH_TIMEOUT=320 BENCH_PACK=1 OUT=$OUT/bench bash scripts/gpu_bench.sh > $OUT/gpu_bench_out.txt 2>&1
tail -15 $OUT/gpu_bench_out.txt
