#!/usr/bin/env bash
# Session 20, run 2: +ropea / +ropeb (P_A or P_B in an 8 KiB buffer of its own, so that its stage's
# rope box is refilled right after that block's S instead of after the PVs). GPU tests of the new
# variants (bit-identical to seesaw, reference grid), then A/B on the 14 compute-bound rows beside
# FlashMLA HEAD. It ran with the flags committed on main (990e5a2 + rope_variant.patch); they were
# taken out again after this run (not kept), so the script now applies the patch first.
set -o pipefail
git apply benchmarks/results/pvearly_h100_2026-12-06/rope_variant.patch || exit 1
mkdir -p $OUT/x
export PYTHONPATH=$PWD:$PWD/.ref/run
rm -f flashmla/_C*.so
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/x/build.log | tail -1
grep -E "registers|spill" $OUT/x/build.log | sort | uniq -c | head -12
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -2 | tee $OUT/x/pytest_rope.log
AB_VARIANTS=auto,auto+ropea,auto+ropeb,ext/fmla_ref_py AB_ROUNDS=5 AB_ROWS=compute \
  timeout 240 python3 scripts/ab_cuda.py $OUT/x/ab_rope.csv 2>&1 | tee $OUT/x/ab_rope.log | tail -20
