#!/usr/bin/env bash
# Session 16, first call: session 15's two-body experiment (twobody_variant.patch applied, uncommitted).
# Does the ~22 us penalty of the two-body kernel's unmarked path follow the code layout? Then ncu
# source-level stall samples of the two-body kernel's slow path against the one-body kernel.
set -o pipefail
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/build.log | tail -1
grep -E "twobody|colsplit" $OUT/build.log | grep -iE "registers|spill" | head -8
export PYTHONPATH=$PWD:$PWD/.ref/run
AB_SHAPES="1,1,4096,128,F;1,1,32768,128,F;2,1,16384,128,F;1,1,4096,16,F" \
AB_VARIANTS=auto,auto+twobody,serial+splitcombine=nosplit,ext/fmla_ref_py AB_ROUNDS=5 \
  timeout 120 python3 scripts/ab_cuda.py $OUT/ab_twobody.csv 2>&1 | tee $OUT/ab_twobody.log | tail -14
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
cat > /tmp/ncu_tb.py <<'PY'
import sys, torch
from flashmla import cuda_backend, testing
n = int(sys.argv[2])
x = testing.make_decode_inputs([n], 1, 128, 1, torch.bfloat16, torch.device("cuda"))
md, ns = cuda_backend.get_mla_metadata_gpu(x.cache_seqlens, 128, 1, 132)
for _ in range(2):
    cuda_backend.decode(x.q, x.k_cache, x.block_table, x.cache_seqlens, 576 ** -0.5, True, md, ns, schedule=sys.argv[1])
torch.cuda.synchronize()
PY
S="--section WarpStateStats --section SourceCounters --section SpeedOfLight --section LaunchStats"
for v in "auto+twobody 32768 tb32k" "auto 32768 one32k" "auto+twobody 4096 tb4k"; do
  set -- $v
  timeout 90 "$NCU" --kernel-name regex:"twobody|colsplit" --launch-skip 1 --launch-count 1 $S -o /tmp/src_$3 -f python3 /tmp/ncu_tb.py $1 $2 > $OUT/ncu_$3_run.log 2>&1
  "$NCU" --import /tmp/src_$3.ncu-rep --page source --csv --print-source sass > /tmp/src_$3.csv 2>&1
  "$NCU" --import /tmp/src_$3.ncu-rep --page details > $OUT/ncu_$3_details.txt 2>&1
  xz -T4 -c /tmp/src_$3.csv > $OUT/src_$3.csv.xz
  grep -E "Duration|Executed Ipc A|Warp Cycles Per Issued" $OUT/ncu_$3_details.txt | head -4
done
ls -la $OUT
