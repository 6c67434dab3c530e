#!/usr/bin/env bash
# Session 20, run 3: +overlapcombine (the combine merges each split request as soon as all its
# chunks have published their partials, counted per request, kv head and m-block, while the main
# kernel's last thread blocks still run). Build; every CUDA GPU test (new variants in the grid,
# the CUDA-graph padded batch, bit-identity); memcheck of the small sanitizer cases with the flag;
# A/B on the 14 compute-bound rows beside FlashMLA HEAD; per-kernel device times.
set -o pipefail
mkdir -p $OUT/x
export PYTHONPATH=$PWD:$PWD/.ref/run
rm -f flashmla/_C*.so
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/x/build.log | tail -1
grep -E "registers|spill" $OUT/x/build.log | sort | uniq -c | head -12
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -2 | tee $OUT/x/pytest_cuda.log
AB_VARIANTS=auto,auto+overlapcombine,ext/fmla_ref_py AB_ROUNDS=5 AB_ROWS=compute \
  timeout 200 python3 scripts/ab_cuda.py $OUT/x/ab_overlap.csv 2>&1 | tee $OUT/x/ab_overlap.log | tail -18
SANITIZE_SCHEDULES=seesaw+overlapcombine,seesaw+ahead+tmaout+tmaq+nomask+overlapcombine timeout 120 \
  compute-sanitizer --tool memcheck --error-exitcode 9 python3 scripts/cuda_sanitizer_cases.py > $OUT/x/memcheck.log 2>&1
echo "memcheck rc=$? $(tail -1 $OUT/x/memcheck.log)"
SPLIT_VARIANTS=auto+overlapcombine timeout 100 python3 .ref/run/kernel_split.py > $OUT/x/kernel_split.log 2>&1
grep -E "4096,128|8192,128" $OUT/x/kernel_split.log
