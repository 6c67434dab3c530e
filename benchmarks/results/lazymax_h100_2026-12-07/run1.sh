#!/usr/bin/env bash
# Session 28, run 1 (one device call, ~6 min): three compile-time experiments on the seesaw's
# steady state (docs/kernel-design.md 7.29), each a separate build of this tree, timed side by
# side in one process against this tree's own build (`auto`) and FlashMLA 9241ae3 ("head"):
#   build/poly6  -DFLASHMLA_POLY_EXP=6: in +nomask's softmax, 6 of each row's 16 exponentials per
#                block by a degree-5 polynomial on the FMA pipe, the other 10 by MUFU.EX2
#   build/split  -DFLASHMLA_PV_SPLIT -DFLASHMLA_SB_ROPE_FIRST: PV_B of each warpgroup as two
#                column halves, the next B page's boxes refilled half by half as they retire, and
#                that page's S read in the order its boxes are refilled (0-3, rope, 4-7)
#   build/all    both
# 1. the four builds (in parallel); 2. every CUDA GPU test on build/all (all three changes);
# 3. the A/B (8 rounds, output checked against the reference on every shape) on the four 256-row
# target rows plus 2K and 16K, with nvidia-smi sampling clock and power; 4. pick.txt.
# Everything is packed into $OUT/run1.tar.xz. Carry [".gpu/flashmla-head"].
set -uo pipefail
OUT=${OUT:-/tmp/polyexp}; R=$OUT/run1; mkdir -p "$R"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
echo "GPU: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)" | tee "$R/gpu.txt"
declare -A FLAGS=([poly6]="-DFLASHMLA_POLY_EXP=6" [split]="-DFLASHMLA_PV_SPLIT -DFLASHMLA_SB_ROPE_FIRST"
                  [all]="-DFLASHMLA_PV_SPLIT -DFLASHMLA_SB_ROPE_FIRST -DFLASHMLA_POLY_EXP=6")
build() {  # $1: dir, $2: extra nvcc flags, $3: log
  (cd "$1" && FLASHMLA_BUILD_CUDA=1 FLASHMLA_NVCC_EXTRA="$2" MAX_JOBS=4 python3 setup.py build_ext --inplace --force \
     >"$3" 2>&1; echo "build $1 rc=$?")
}
for v in poly6 split all; do
  rm -rf /tmp/$v && mkdir -p /tmp/$v && cp -r setup.py pyproject.toml flashmla csrc tests scripts /tmp/$v/ && rm -f /tmp/$v/flashmla/_C*.so
done
build "$PWD" "" "$R/build_base.log" &
for v in poly6 split all; do build /tmp/$v "${FLAGS[$v]}" "$R/build_$v.log" & done; wait
grep -hE "registers|spill" "$R"/build_*.log | sort | uniq -c | head -20
(cd /tmp/all && PYTHONPATH=/tmp/all timeout 200 python3 -m pytest -q -rs --maxfail=20 -p no:cacheprovider tests/test_cuda.py \
   >"$R/cuda_tests_all.txt" 2>&1; echo "cuda tests (build/all) exit $?: $(tail -1 "$R/cuda_tests_all.txt")")
grep -E "^(FAILED|ERROR)" "$R/cuda_tests_all.txt" | head -10
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,clocks_throttle_reasons.active --format=csv,noheader -lms 200 \
  >"$R/smi.csv" 2>&1 & smi=$!
AB_SHAPES="128,2,8192,128,F;128,2,4096,128,T;128,2,8192,128,T;128,2,4096,128,F;128,2,2048,128,F;128,2,16384,128,F" \
  AB_VARIANTS=auto,build/poly6,build/split,build/all,head AB_ROUNDS=8 \
  timeout 200 python3 scripts/ab_cuda.py "$R/ab.csv" >"$R/ab.txt" 2>&1
echo "ab exit $?"; kill $smi; wait $smi 2>/dev/null
tail -14 "$R/ab.txt"
python3 - "$R/ab.csv" >"$R/pick.txt" <<'PICK'
import csv, math, sys
rows = list(csv.DictReader(open(sys.argv[1])))
base = {(r["mean_seqlen"], r["varied"]): float(r["median_ms"]) for r in rows if r["variant"] == "auto"}
targets = {("8192", "False"), ("4096", "True"), ("8192", "True"), ("4096", "False")}
for variant in ("build/poly6", "build/split", "build/all", "head"):
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
cat "$R/pick.txt"
(cd "$OUT" && tar cJf run1.tar.xz run1)
