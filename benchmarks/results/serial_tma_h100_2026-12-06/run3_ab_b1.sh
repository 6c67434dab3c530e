#!/usr/bin/env bash
# Session 22, after the bench in the same call: b1-b2 with the TMA Q load in the column-split kernel.
set -uo pipefail
OUT=${OUT:-/tmp/run3}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
AB_SHAPES="1,1,4096,16,F;1,1,4096,128,F;1,2,4096,128,F;2,1,4096,64,F;1,1,16384,128,F;1,1,1024,128,F" \
AB_VARIANTS="auto,auto+tmaq,serial+splitcombine+tmaout+tmaq" AB_ROUNDS=6 AB_GRAPH=1 \
  timeout ${AB_TIMEOUT:-100} python3 scripts/ab_cuda.py "$OUT/ab_b1_tmaq.csv" 2>&1 | tee "$OUT/ab_b1_tmaq.txt" | tail -25
