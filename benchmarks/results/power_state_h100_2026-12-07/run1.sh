#!/usr/bin/env bash
# Prepared in session 29 (2026-12-07), not yet run (~5 device minutes). Two questions, one call:
#  1. docs/kernel-design.md 7.27 / 7.30: at what SM clock and board power do ours and FlashMLA run
#     on the compute-bound rows? scripts/ab_cuda.py with AB_CLOCKS=1 (flashmla/bench/clock_log.py:
#     nvidia-smi sampled every 50 ms, each timing's medians).
#  2. The V-address patch again (../power_leads_h100_2026-12-07/vaddr_uniform.patch: the seesaw's V
#     operand at `wg != 0 ? 4 : 0` boxes, so the compiler keeps its descriptors uniform; 238 / 232
#     registers instead of 247 / 255, no spills, no serialisation, checked offline in session 29).
#     Session 26 measured 0.993 geomean before the lazy max, and +pvbfirst went from neutral to
#     ~0.7% faster once the rescales were gone (7.30), so it is worth one more A/B.
# Builds the tree and /tmp/vaddr side by side, runs every CUDA GPU test on the patched build, then
# the A/B (auto, build/vaddr, head; 8 rounds) on the four 256-row and two 128-row rows.
# Packed into $OUT/run1.tar.xz. Carry [".gpu/flashmla-head"].
set -uo pipefail
OUT=${OUT:-/tmp/next1}; R=$OUT/run1; mkdir -p "$R"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
echo "GPU: $(nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.max.sm --format=csv,noheader | head -1)" | tee "$R/gpu.txt"
bash scripts/ab_build_patched.sh vaddr benchmarks/results/power_leads_h100_2026-12-07/vaddr_uniform.patch "$R" || exit 1
(cd /tmp/vaddr && PYTHONPATH=/tmp/vaddr timeout 150 python3 -m pytest -q -rs --maxfail=20 -p no:cacheprovider tests/test_cuda.py \
   >"$R/cuda_tests_vaddr.txt" 2>&1; echo "cuda tests (build/vaddr) exit $?: $(tail -n 1 "$R/cuda_tests_vaddr.txt")")
AB_CLOCKS=1 AB_SHAPES="128,2,8192,128,F;128,2,4096,128,T;128,2,8192,128,T;128,2,4096,128,F;128,1,8192,128,F;32,1,32768,128,F" \
  AB_VARIANTS=auto,build/vaddr,head AB_ROUNDS=8 timeout 240 python3 scripts/ab_cuda.py "$R/ab_clocks.csv" >"$R/ab_clocks.txt" 2>&1
echo "ab exit $?"; tail -16 "$R/ab_clocks.txt"
(cd "$OUT" && tar cJf run1.tar.xz run1)
