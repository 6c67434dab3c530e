#!/usr/bin/env bash
# Session 28, run 5 (one short device call, ~2.5 min): with the lazy running max the step's
# critical path changed, so two earlier decisions are timed again on main, both runtime flags:
#   auto+pvbfirst   WG0 issues the next S_A only after WG1 has issued PV_B,right (7.20: 1.000 then)
#   no earlyq       auto's schedule without +earlyq (7.28: +earlyq 0.994 then)
# 10 interleaved rounds on the four 256-row target rows. Packed into $OUT/run5.tar.xz. No carry.
set -uo pipefail
OUT=${OUT:-/tmp/lazy5}; R=$OUT/run5; mkdir -p "$R"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
FLASHMLA_BUILD_CUDA=1 MAX_JOBS=16 python3 setup.py build_ext --inplace --force >"$R/build.log" 2>&1
echo "build rc=$?"
AB_SHAPES="128,2,8192,128,F;128,2,4096,128,T;128,2,8192,128,T;128,2,4096,128,F" \
  AB_VARIANTS=auto,auto+pvbfirst,seesaw+ahead+tmaout+tmaq+nomask+overlapcombine AB_ROUNDS=10 \
  timeout 150 python3 scripts/ab_cuda.py "$R/ab.csv" >"$R/ab.txt" 2>&1
echo "ab exit $?"; tail -9 "$R/ab.txt"
(cd "$OUT" && tar cJf run5.tar.xz run5)
