#!/usr/bin/env bash
# Session 27, run 3 (one device call, ~4 min): +earlyq is in `auto` (run 1), so
#   1. scripts/gpu_racecheck.sh with its schedule list now including two +earlyq variants (racecheck
#      and memcheck of the racecheck build, 2,283+ reference checks of that build), then the normal
#      build again;
#   2. memcheck of the normal build on the +earlyq variants, and the long smoke cases (parts of
#      16-40 blocks: many request boundaries and refills) without a sanitizer;
#   3. the A/B again with 12 rounds: `auto` against the same schedule without +earlyq, written out
#      (seesaw+ahead+tmaout+tmaq+nomask+overlapcombine), and FlashMLA 9241ae3.
# Everything is packed into $OUT/run3.tar.xz (the device returns at most 8 files). Carry [".gpu/flashmla-head"].
set -uo pipefail
OUT=${OUT:-/tmp/earlyq3}; R=$OUT/run3; mkdir -p "$R"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
echo "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)" | tee "$R/gpu.txt"
timeout 330 bash scripts/gpu_racecheck.sh "$R" 2>&1 | tee "$R/racecheck_summary.txt" | tail -8
EQ=seesaw+ahead+tmaout+tmaq+nomask+earlyq,seesaw+ahead+tmaout+tmaq+earlyq@4
SANITIZE_SCHEDULES=$EQ timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 python3 scripts/cuda_sanitizer_cases.py \
  >"$R/normal_build_memcheck_earlyq.log" 2>&1
echo "memcheck (normal build, +earlyq): exit $?; $(grep SUMMARY "$R/normal_build_memcheck_earlyq.log" | tail -1)"
SANITIZE_LONG=1 SANITIZE_SCHEDULES=$EQ,auto timeout 90 python3 scripts/cuda_sanitizer_cases.py >"$R/normal_build_long_smoke.log" 2>&1
echo "long smoke (no sanitizer): exit $?; $(grep -c finite=True "$R/normal_build_long_smoke.log") runs finite"
AB_SHAPES="128,2,8192,128,F;128,2,4096,128,T;128,2,8192,128,T;128,2,4096,128,F;128,2,2048,128,F;128,2,16384,128,F" \
  AB_VARIANTS=auto,seesaw+ahead+tmaout+tmaq+nomask+overlapcombine,head AB_ROUNDS=12 \
  timeout 150 python3 scripts/ab_cuda.py "$R/ab_earlyq_again.csv" >"$R/ab_earlyq_again.txt" 2>&1
echo "ab exit $?"; tail -9 "$R/ab_earlyq_again.txt"
(cd "$OUT" && tar cJf run3.tar.xz run3)
