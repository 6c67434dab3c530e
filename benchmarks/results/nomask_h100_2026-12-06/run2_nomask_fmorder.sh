#!/usr/bin/env bash
# Session 19, run 2 (ran from branch fmorder-port; run 1, +nomask alone, got no machine): +nomask
# (the seesaw's steady-state pair step without masking code where exact) and session 17's
# +fmorder (FlashMLA's order of PVs and refills on +ahead) ported onto today's kernel, with and
# without +nomask. By the step arithmetic of kernel-design 7.20, +fmorder's step is bound by both
# softmaxes and a half page's load, +ahead's by the next B page's load, so +nomask should help
# +fmorder more. Build, the tests that touch the flags, SASS counts, then auto / auto+nomask /
# auto+fmorder+nomask / auto+fmorder / FlashMLA HEAD on the 14 compute-bound rows, 3 rounds.
set -o pipefail
mkdir -p $OUT/x
export PYTHONPATH=$PWD:$PWD/.ref/run
rm -f flashmla/_C*.so
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/x/build.log | tail -1
grep -E "seesaw|registers|spill" $OUT/x/build.log | grep -A2 seesaw | grep -E "Compiling|Used|spill" > $OUT/x/build_regs.txt
timeout 200 python3 -m pytest -q tests/test_cuda.py -k "nomask or fmorder or bit_identical" 2>&1 | tail -4 | tee $OUT/x/pytest_flags.log
so=$(ls flashmla/_C*.so)
for tmpl in "Lb1ELb0ELb0E" "Lb1ELb1ELb1E"; do
  fn=$(cuobjdump -sass $so 2>/dev/null | grep -o "Function : [^ ]*mla_decode_seesaw_kernelI13__nv_bfloat16${tmpl}[^ ]*" | head -1 | sed 's/Function : //')
  cuobjdump -sass -fun "$fn" $so > $OUT/x/sass_$tmpl.sass 2>&1
  { echo "function $fn"; for pat in "MUFU.EX2" "FSEL" "ISETP" "HGMMA" "BRA"; do echo "$pat $(grep -c "$pat" $OUT/x/sass_$tmpl.sass)"; done; } | tee -a $OUT/x/sass_counts.txt
done
tar -cJf $OUT/x/sass.tar.xz -C $OUT/x sass_Lb1ELb0ELb0E.sass sass_Lb1ELb1ELb1E.sass && rm -f $OUT/x/*.sass
AB_ROWS=compute AB_VARIANTS=auto,auto+nomask,auto+fmorder+nomask,auto+fmorder,ext/fmla_ref_py AB_ROUNDS=3 \
  timeout 300 python3 scripts/ab_cuda.py $OUT/x/ab_flags.csv 2>&1 | tee $OUT/x/ab_flags.log | tail -18
cd $OUT && tar -cf run2_all.tar x && rm -rf $OUT/x
