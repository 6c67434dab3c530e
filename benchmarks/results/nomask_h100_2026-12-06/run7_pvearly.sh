#!/usr/bin/env bash
# Prepared in session 19 (not run: no device time left). +pvearly: in the unmasked steady state WG0
# issues its PV_A,left (P_A from registers) right after its softmax and only then stores P_A, fences
# and publishes m0/s0/P_A, as FlashMLA's WG0 does (kernel-design 7.20: FlashMLA's first PV starts
# ~200 cycles after it publishes s0, ours ~700 after the softmax arithmetic). The patch
# (pvearly_variant.patch, against main b1c26c1) adds a third copy of the steady loop;
# it compiles clean but moves the +ahead seesaw from 247 to 255 registers, so it stays out of main
# until timed: if auto+pvearly wins, check that auto (without it) did not slow down against a
# build without the patch. The four rows where the flag's code runs; about 2 minutes after a start.
set -o pipefail
git apply benchmarks/results/nomask_h100_2026-12-06/pvearly_variant.patch || exit 1
mkdir -p $OUT/x
export PYTHONPATH=$PWD:$PWD/.ref/run
rm -f flashmla/_C*.so
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/x/build.log | tail -1
timeout 60 python3 -m pytest -q tests/test_cuda.py -k "pvearly or bit_identical" 2>&1 | tail -2 | tee $OUT/x/pytest_pvearly.log
AB_SHAPES="128,2,4096,128,F;128,2,8192,128,F;128,2,4096,128,T;128,2,8192,128,T" \
AB_VARIANTS=auto,auto+pvearly,ext/fmla_ref_py AB_ROUNDS=5 \
  timeout 100 python3 scripts/ab_cuda.py $OUT/x/ab_pvearly.csv 2>&1 | tee $OUT/x/ab_pvearly.log | tail -8
cd $OUT && tar -cf run7_all.tar x && rm -rf $OUT/x
