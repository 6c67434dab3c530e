#!/usr/bin/env bash
# Prepared in session 30 (not run: the last starts were refused; ~2.5 device minutes): does the V-address patch (run 1: level at the cap)
# save cycles at full clock? power_transient.py for auto and build/vaddr (and FlashMLA for scale) on
# the two 8K 256-row rows. Packed into $OUT/run1.tar.xz. Carry [".gpu/flashmla-head"].
set -uo pipefail
OUT=${OUT:-/tmp/next1}; R=$OUT/run1; mkdir -p "$R"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
bash scripts/ab_build_patched.sh vaddr benchmarks/results/power_leads_h100_2026-12-07/vaddr_uniform.patch "$R" || exit 1
PT_VARIANTS=auto,build/vaddr,head PT_SHAPES="128,2,8192,128,F;128,2,8192,128,T" PT_ROUNDS=3 PT_CALLS=400 timeout 150 \
  python3 scripts/power_transient.py "$R/transient.csv" 2>&1 | grep -v '^wrote' | tee "$R/transient.txt"
(cd "$OUT" && tar cJf run1.tar.xz run1)
