#!/usr/bin/env bash
# Session 27: +earlyq (docs/kernel-design.md 7.28) on an H100, one device call (~6 min):
#   1. build this tree's flashmla._C (the flag is a runtime schedule bit: one build serves both)
#   2. every CUDA GPU test (the two +earlyq variants run the foundation grid and the benchmark
#      shapes; +earlyq is checked bit for bit against the same schedule without it)
#   3. scripts/ab_cuda.py: auto against auto+earlyq and FlashMLA 9241ae3 ("head"), 8 interleaved
#      rounds, on the four 256-row target rows plus 2K and 16K at the same shape (more and fewer
#      request boundaries per part), nvidia-smi sampling clock and power every 200 ms
#   4. pick.txt: auto+earlyq / auto per row and geomean over the four target rows
# Carry [".gpu/flashmla-head"]. The build stays in flashmla/ for a bench call right after.
set -uo pipefail
OUT=${OUT:-/tmp/earlyq}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
echo "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)"
FLASHMLA_BUILD_CUDA=1 MAX_JOBS=16 python3 setup.py build_ext --inplace --force >"$OUT/build.log" 2>&1
echo "build rc=$?"; grep -E "registers|spill" "$OUT/build.log" | sort | uniq -c | head -12
timeout 220 python3 -m pytest -q -rs --maxfail=20 -p no:cacheprovider tests/test_cuda.py >"$OUT/cuda_tests.txt" 2>&1
rc=$?; echo "cuda tests exit $rc: $(tail -1 "$OUT/cuda_tests.txt")"
grep -E "^(FAILED|ERROR)" "$OUT/cuda_tests.txt" | head -10
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,clocks_throttle_reasons.active --format=csv,noheader -lms 200 \
  >"$OUT/smi.csv" 2>&1 & smi=$!
AB_SHAPES="128,2,8192,128,F;128,2,4096,128,T;128,2,8192,128,T;128,2,4096,128,F;128,2,2048,128,F;128,2,16384,128,F" \
  AB_VARIANTS=auto,auto+earlyq,head AB_ROUNDS=8 \
  timeout 240 python3 scripts/ab_cuda.py "$OUT/ab_earlyq.csv" >"$OUT/ab_earlyq.txt" 2>&1
echo "ab exit $?"; kill $smi; wait $smi 2>/dev/null
tail -16 "$OUT/ab_earlyq.txt"
python3 - "$OUT/ab_earlyq.csv" >"$OUT/pick.txt" <<'PICK'
import csv, math, sys
rows = list(csv.DictReader(open(sys.argv[1])))
base = {(r["mean_seqlen"], r["varied"]): float(r["median_ms"]) for r in rows if r["variant"] == "auto"}
targets = {("8192", "False"), ("4096", "True"), ("8192", "True"), ("4096", "False")}
for variant in ("auto+earlyq", "head"):
    ratios = {}
    for r in rows:
        key = (r["mean_seqlen"], r["varied"])
        if r["variant"] == variant and key in base:
            ratios[key] = float(r["median_ms"]) / base[key]
            print(f"{variant:12s} {key[0]:>6s} varied={key[1]:5s} {float(r['median_ms']):.4f} ms  / auto {ratios[key]:.4f}")
    on_targets = [v for k, v in ratios.items() if k in targets]
    if on_targets:
        print(f"{variant:12s} geomean / auto over the {len(on_targets)} target rows: "
              f"{math.exp(sum(map(math.log, on_targets)) / len(on_targets)):.4f}")
PICK
cat "$OUT/pick.txt"
