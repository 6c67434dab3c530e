#!/usr/bin/env bash
# Session 31, call 4 (~9 device minutes): main with `auto` = ... +chainpv+sbrightfirst at 256 query
# rows per kv head. 1. The side-by-side bench again (a second machine start). 2. The sanitizers,
# with the racecheck build's +chainpv vote now through shared memory and WG1's mbarrier (run 3's
# 43 hazards were racecheck's known false report once a warpgroup-only named barrier, the vote's
# bar.red, is in the block). Packed into $OUT/run4.tar.xz. Carry [".gpu"].
set -uo pipefail
OUT=${OUT:-/tmp/chain4}; R=$OUT/run4; mkdir -p "$R"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
echo "GPU: $(nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.max.sm --format=csv,noheader | head -1)" | tee "$R/gpu.txt"
FLASHMLA_BUILD_CUDA=1 MAX_JOBS=16 python3 setup.py build_ext --inplace --force >"$R/build.log" 2>&1
echo "build rc=$?; $(grep -c 'instructions are serialized' "$R/build.log") serialisation notes, $(grep -cE '[1-9][0-9]* bytes spill' "$R/build.log") spilling"
OUT=$R/bench BENCH_TIMEOUT=270 timeout 300 bash scripts/gpu_bench.sh --no-e2e --no-time-reference >"$R/gpu_bench_console.txt" 2>&1
echo "bench exit $?"; python3 scripts/bench_summary.py "$R/bench/bench.csv" | head -3
rm -f "$R/bench/"*.png
(cd "$OUT" && tar cJf run4.tar.xz run4)
base=seesaw+ahead+tmaout+tmaq+nomask+earlyq+pvbfirst
SANITIZE_SCHEDULES="seesaw,$base,$base+chainpv,$base+chainpv+sbrightfirst,seesaw+ahead+nomask+chainpv@4,auto" \
  RACECHECK_KEEP_BUILD=1 timeout 200 bash scripts/gpu_racecheck.sh "$R/rc" 2>&1 | tee "$R/racecheck_summary.txt" | tail -7
(cd "$OUT" && tar cJf run4.tar.xz run4)
