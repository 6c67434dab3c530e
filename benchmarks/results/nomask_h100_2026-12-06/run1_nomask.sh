#!/usr/bin/env bash
# Session 19, run 1: +nomask (the seesaw's steady-state pair step without masking code where that
# is exact: WG0's masking branches, whose targets missed the instruction cache in ncu's samples, and
# WG1's 64 selects + 32 scale multiplies per block are gone). Build, the tests that touch it (bit
# for bit against seesaw+ahead, the reference, the fallback for s_q > 66 and a negative scale), the
# seesaw kernel's SASS instruction counts, then auto / auto+nomask / FlashMLA HEAD on the 14
# compute-bound rows, 3 rounds, one process.
set -o pipefail
mkdir -p $OUT/x
export PYTHONPATH=$PWD:$PWD/.ref/run
rm -f flashmla/_C*.so
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/x/build.log | tail -1
grep -E "seesaw|registers|spill" $OUT/x/build.log | grep -B1 -A1 seesaw | head -20 > $OUT/x/build_regs.txt
timeout 300 python3 -m pytest -q tests/test_cuda.py -k "nomask or bit_identical or softmax_scale" 2>&1 | tail -4 | tee $OUT/x/pytest_nomask.log
so=$(ls flashmla/_C*.so)
fn=$(cuobjdump -sass $so 2>/dev/null | grep -o "Function : .*mla_decode_seesaw_kernelI13__nv_bfloat16Lb1E[^ ]*" | head -1 | sed 's/Function : //')
cuobjdump -sass -fun "$fn" $so > $OUT/x/seesaw_bf16_ahead.sass 2>&1
{ echo "function $fn"; for pat in "MUFU.EX2" "FSEL" "ISETP" "HGMMA" "BRA"; do echo "$pat $(grep -c "$pat" $OUT/x/seesaw_bf16_ahead.sass)"; done; } | tee $OUT/x/sass_counts.txt
xz -9 $OUT/x/seesaw_bf16_ahead.sass
AB_ROWS=compute AB_VARIANTS=auto,auto+nomask,ext/fmla_ref_py AB_ROUNDS=3 \
  timeout 240 python3 scripts/ab_cuda.py $OUT/x/ab_nomask.csv 2>&1 | tee $OUT/x/ab_nomask.log | tail -18
cd $OUT && tar -cf run1_all.tar x && rm -rf $OUT/x
