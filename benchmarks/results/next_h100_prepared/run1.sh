#!/usr/bin/env bash
# Prepared in session 29 (2026-12-07), not yet run (~8 device minutes). The open question of
# docs/kernel-design.md 7.27 and 7.30: at what SM clock and board power do ours and FlashMLA run
# on the compute-bound rows, and is that what moves between machine starts? scripts/ab_cuda.py
# with AB_CLOCKS=1 (flashmla/bench/clock_log.py: nvidia-smi sampling every 50 ms, each timing's
# medians) on the four 256-row rows and two 128-row rows, `auto` against FlashMLA 9241ae3, 8 rounds;
# then the side-by-side bench with --clocks (every provider's clock and power per row). ~8 min.
# Carry [".gpu"].
set -uo pipefail
OUT=${OUT:-/tmp/next1}; R=$OUT/run1; mkdir -p "$R"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
echo "GPU: $(nvidia-smi --query-gpu=name,driver_version,power.limit,clocks.max.sm --format=csv,noheader | head -1)" | tee "$R/gpu.txt"
FLASHMLA_BUILD_CUDA=1 MAX_JOBS=16 python3 setup.py build_ext --inplace --force >"$R/build.log" 2>&1
echo "build rc=$?; $(grep -c 'instructions are serialized' "$R/build.log") serialisation notes"
AB_CLOCKS=1 AB_SHAPES="128,2,8192,128,F;128,2,4096,128,T;128,2,8192,128,T;128,2,4096,128,F;128,1,8192,128,F;32,1,32768,128,F" \
  AB_VARIANTS=auto,head AB_ROUNDS=8 timeout 240 python3 scripts/ab_cuda.py "$R/ab_clocks.csv" >"$R/ab_clocks.txt" 2>&1
echo "ab exit $?"; tail -12 "$R/ab_clocks.txt"
(cd "$OUT" && tar cJf run1.tar.xz run1)
# The side-by-side bench with every timing's clock and power (bench.csv: sm_mhz, power_w).
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
(cd "$OUT" && tar cJf run1.tar.xz run1)
