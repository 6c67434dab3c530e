#!/usr/bin/env bash
# Prepared in session 28 (2026-12-07), not yet run: the two leads left after the lazy running max
# (docs/kernel-design.md 7.29 and 7.5), one device call of ~4 min:
#   auto                        main
#   auto+pvbfirst               runtime flag: WG0 issues the next S_A after WG1 has issued
#                               PV_B,right (session 28 run 5: 0.995 of auto)
#   build/late                  main + late_a_refill.patch: WG1 refills A' right and rope after
#                               it has issued PV_B,right instead of before (the refill's per-lane
#                               TMA loop, ~60 instructions, then no longer delays that PV); same bits
#   build/late/auto+pvbfirst    both
#   head                        FlashMLA 9241ae3
# 1. the late build and every CUDA GPU test on it; 2. the A/B, 10 rounds, on the four 256-row
# target rows and two 128-row rows. Packed into $OUT/run1.tar.xz. Carry [".gpu/flashmla-head"].
set -uo pipefail
OUT=${OUT:-/tmp/next1}; R=$OUT/run1; mkdir -p "$R"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
D=benchmarks/results/pvbfirst_h100_2026-12-07  # next_h100_prepared/ when prepared (session 28)
echo "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)" | tee "$R/gpu.txt"
rm -rf /tmp/late && mkdir -p /tmp/late && cp -r setup.py pyproject.toml flashmla csrc tests scripts /tmp/late/ && rm -f /tmp/late/flashmla/_C*.so
(cd /tmp/late && git apply "$OLDPWD/$D/late_a_refill.patch") || { echo "late_a_refill.patch does not apply"; exit 1; }
build() {  # $1: dir, $2: log
  (cd "$1" && FLASHMLA_BUILD_CUDA=1 MAX_JOBS=8 python3 setup.py build_ext --inplace --force >"$2" 2>&1
   echo "build $1 rc=$? $(grep -c 'instructions are serialized' "$2") serialised, $(grep -cE '[1-9][0-9]* bytes spill' "$2") spilling")
}
build "$PWD" "$R/build_tree.log" & build /tmp/late "$R/build_late.log" & wait
(cd /tmp/late && PYTHONPATH=/tmp/late timeout 150 python3 -m pytest -q -rs --maxfail=20 -p no:cacheprovider tests/test_cuda.py \
   >"$R/cuda_tests_late.txt" 2>&1; echo "cuda tests (build/late) exit $?: $(tail -n 1 "$R/cuda_tests_late.txt")")
AB_SHAPES="128,2,8192,128,F;128,2,4096,128,T;128,2,8192,128,T;128,2,4096,128,F;128,1,8192,128,F;32,1,32768,128,F" \
  AB_VARIANTS=auto,auto+pvbfirst,build/late,build/late/auto+pvbfirst,head AB_ROUNDS=10 \
  timeout 240 python3 scripts/ab_cuda.py "$R/ab.csv" >"$R/ab.txt" 2>&1
echo "ab exit $?"; tail -12 "$R/ab.txt"
(cd "$OUT" && tar cJf run1.tar.xz run1)
