#!/usr/bin/env bash
# Session 31 (2026-12-07), call 1 (~7 device minutes): are +chainpv / +chainpv+sbrightfirst faster?
# Builds the tree (a2a769b: the flags, off by default) and /tmp/base (the tree before them, by
# before_chainpv.patch) side by side; the GPU tests of the new flags (bit identity, the lazy-max
# ramp with and without the fallback, the foundation grid); then the A/B (6 rounds: base, auto
# with and without the flags, FlashMLA 9241ae3) on the four rows with 256 query rows per kv head,
# and power_transient.py (full clock / capped apart) on the two 8K ones. Leaves the A/B CSV in
# /tmp/chain_state for run2.sh. Packed into $OUT/run1.tar.xz. Carry [".gpu"].
set -uo pipefail
OUT=${OUT:-/tmp/chain}; R=$OUT/run1; mkdir -p "$R" /tmp/chain_state
D=benchmarks/results/chainpv_h100_2026-12-07
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
echo "GPU: $(nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.max.sm --format=csv,noheader | head -1)" | tee "$R/gpu.txt"
date -u | tee -a "$R/gpu.txt"
bash scripts/ab_build_patched.sh base "$D/before_chainpv.patch" "$R" || exit 1
grep -E "registers|spill" "$R/build_tree.log" | sort | uniq -c | sort -rn | head -4
timeout 200 python3 -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py \
  -k "chainpv or sbrightfirst or bit_identical or lazy_running" >"$R/tests.txt" 2>&1
echo "flag tests exit $?: $(tail -n 1 "$R/tests.txt")"
AB_SHAPES="128,2,8192,128,F;128,2,4096,128,T;128,2,8192,128,T;128,2,4096,128,F" \
  AB_VARIANTS=build/base,auto,auto+chainpv,auto+chainpv+sbrightfirst,head AB_ROUNDS=6 \
  timeout 240 python3 scripts/ab_cuda.py "$R/ab.csv" >"$R/ab.txt" 2>&1
echo "ab exit $?"; tail -n 12 "$R/ab.txt"; cp "$R/ab.csv" /tmp/chain_state/ab.csv
(cd "$OUT" && tar cJf run1.tar.xz run1)
PT_VARIANTS=build/base,auto+chainpv,auto+chainpv+sbrightfirst,head PT_SHAPES="128,2,8192,128,F;128,2,8192,128,T" \
  PT_ROUNDS=3 PT_CALLS=400 timeout 170 python3 scripts/power_transient.py "$R/transient.csv" 2>&1 | grep -v '^wrote' | tee "$R/transient.txt"
(cd "$OUT" && tar cJf run1.tar.xz run1)
