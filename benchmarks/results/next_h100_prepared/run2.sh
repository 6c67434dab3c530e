#!/usr/bin/env bash
# Prepared in session 31 (not run: no device time left; ~6 device minutes): after +chainpv+sbrightfirst
# (docs/kernel-design.md 7.32). 1. The table suite with `--settle 1` (ours, FlashMLA 9241ae3, FlashInfer
# fa3, each timed after the same 1 s idle): session 30 met the same-run bar on 35 of 35 that way with
# the kernels before; do the new ones? 2. The step timeline of the new `auto` beside the old one at
# b128 s2 8K h128 from the trace build (scripts/seesaw_trace.py; TRACE_SAVE keeps the raw samples),
# to see which wait is now the longest (7.5 Next). Packed into $OUT/run2.tar.xz. Carry [".gpu"].
set -uo pipefail
OUT=${OUT:-/tmp/next2}; R=$OUT/run2; mkdir -p "$R"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
echo "GPU: $(nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.max.sm --format=csv,noheader | head -1)" | tee "$R/gpu.txt"
FLASHMLA_BUILD_CUDA=1 MAX_JOBS=16 python3 setup.py build_ext --inplace --force >"$R/build.log" 2>&1
echo "build rc=$?; $(grep -c 'instructions are serialized' "$R/build.log") serialisation notes"
OUT=$R/bench BENCH_TIMEOUT=280 timeout 310 bash scripts/gpu_bench.sh --no-e2e --no-time-reference --suite table \
  --providers flashmla-cuda,flashmla-head,flashinfer-fa3 --settle 1 >"$R/gpu_bench_console.txt" 2>&1
echo "bench exit $?"; python3 scripts/bench_summary.py "$R/bench/bench.csv" | head -3
rm -f "$R/bench/"*.png
(cd "$OUT" && tar cJf run2.tar.xz run2)
rm -f flashmla/_C*.so
FLASHMLA_BUILD_CUDA=1 FLASHMLA_NVCC_EXTRA=-DFLASHMLA_SEESAW_TRACE MAX_JOBS=16 timeout 150 python3 setup.py build_ext \
  --inplace --build-temp build/trace >"$R/build_trace.log" 2>&1 || { tail -5 "$R/build_trace.log"; exit 1; }
base=seesaw+ahead+tmaout+tmaq+nomask+earlyq+pvbfirst
for sch in $base $base+chainpv+sbrightfirst; do
  TRACE_SCHEDULE=$sch TRACE_SAVE="$R/trace_$sch.pt" timeout 60 python3 scripts/seesaw_trace.py 128 2 8192 128 \
    >"$R/trace_$sch.txt" 2>&1
  head -2 "$R/trace_$sch.txt"
done
rm -f flashmla/_C*.so
(cd "$OUT" && tar cJf run2.tar.xz run2)
