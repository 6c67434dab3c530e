#!/usr/bin/env bash
# Prepared in session 29 (2026-12-07), not yet run (~7 device minutes): the side-by-side bench with
# --clocks, so that each row of bench.csv carries the SM clock and board power it was timed at
# (flashmla/bench/clock_log.py); prints ours' and FlashMLA's on the h128 rows with b >= 32.
# Build first (scripts/gpu_bench.sh reuses flashmla._C). Packed into $OUT/run2.tar.xz. Carry [".gpu"].
set -uo pipefail
OUT=${OUT:-/tmp/next2}; R=$OUT/run2; mkdir -p "$R"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
echo "GPU: $(nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.max.sm --format=csv,noheader | head -1)" | tee "$R/gpu.txt"
FLASHMLA_BUILD_CUDA=1 MAX_JOBS=16 python3 setup.py build_ext --inplace --force >"$R/build.log" 2>&1
echo "build rc=$?; $(grep -c 'instructions are serialized' "$R/build.log") serialisation notes"
OUT=$R/bench BENCH_TIMEOUT=300 timeout 330 bash scripts/gpu_bench.sh --no-e2e --no-time-reference --clocks \
  >"$R/gpu_bench_console.txt" 2>&1
echo "bench exit $?"; python3 scripts/bench_summary.py "$R/bench/bench.csv" | head -3
python3 - "$R/bench/bench.csv" <<'PY'
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["status"] == "ok" and r["provider"] in ("flashmla-cuda", "flashmla-head")
        and r["h_q"] == "128" and r["b"] in ("32", "128")]
for r in rows:
    print(f"{r['shape']:<26} {r['provider']:<14} {float(r['ms']):.4f} ms  {r['sm_mhz']:>7} MHz  {r['power_w']:>6} W")
PY
(cd "$OUT" && tar cJf run2.tar.xz run2)
# The sanitizers again: session 29's review wrote the racecheck build's +pvbfirst handoff through
# publish_barrier (a branch on the flag where run 3 had a predicated bar.sync / bar.arrive; the
# same barriers execute, the normal build's SASS is unchanged).
RACECHECK_KEEP_BUILD=1 timeout 200 bash scripts/gpu_racecheck.sh "$R/sanitizers" 2>&1 | tee "$R/racecheck_summary.txt" | tail -6
(cd "$OUT" && tar cJf run2.tar.xz run2)
