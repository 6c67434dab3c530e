#!/usr/bin/env bash
# Session 16, second call: the Q tile loaded with one row per thread (the serial kernel's code
# 108 -> 64 KB), and session 15's two-body kernel rebuilt on it (twobody_variant.patch applied,
# uncommitted): tests, memcheck, A/B against main (6eb2881, built beside it) and FlashMLA HEAD,
# ncu stall sampling of b1 4K h128.
set -o pipefail
mkdir -p $OUT/x
rm -rf /tmp/old && mkdir -p /tmp/old && cp -r setup.py pyproject.toml flashmla /tmp/old/ && cp -r .ref/run/csrc_old /tmp/old/csrc
rm -f /tmp/old/flashmla/_C*.so
(cd /tmp/old && FLASHMLA_BUILD_CUDA=1 MAX_JOBS=8 python3 setup.py build_ext --inplace > $OUT/x/build_old.log 2>&1; echo "old build rc=$?") &
MAX_JOBS=8 bash scripts/gpu_build_if_needed.sh $OUT/x/build.log 2>&1 | tail -1
wait
export PYTHONPATH=$PWD:$PWD/.ref/run
timeout 150 python3 -m pytest -q -x tests/test_cuda.py tests/test_scheduler.py 2>&1 | tee $OUT/x/pytest_cuda.log | tail -3
SANITIZE_SCHEDULES=serial,auto,auto+twobody timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 python3 scripts/cuda_sanitizer_cases.py > $OUT/x/memcheck.log 2>&1
echo "memcheck rc $?"; tail -1 $OUT/x/memcheck.log
AB_SHAPES="1,1,4096,128,F;1,1,4096,16,F;1,1,16384,128,F;1,1,32768,128,F;2,1,4096,128,F;2,1,16384,128,F;128,1,4096,64,F;128,1,8192,16,T;128,2,8192,128,F" \
AB_VARIANTS=auto,ext/old_ours,auto+twobody,ext/fmla_ref_py AB_ROUNDS=5 \
  timeout 200 python3 scripts/ab_cuda.py $OUT/ab_qload.csv 2>&1 | tee $OUT/ab_qload.log | tail -20
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
cat > /tmp/ncu_q.py <<'PY'
import sys, torch
from flashmla import cuda_backend, testing
import old_ours
n = int(sys.argv[3])
x = testing.make_decode_inputs([n], 1, 128, 1, torch.bfloat16, torch.device("cuda"))
md, ns = cuda_backend.get_mla_metadata_gpu(x.cache_seqlens, 128, 1, 132)
for _ in range(2):
    if sys.argv[1] == "old":
        old_ours.decode(x.q, x.k_cache, x.block_table, x.cache_seqlens, 576 ** -0.5, True, md, ns)
    else:
        cuda_backend.decode(x.q, x.k_cache, x.block_table, x.cache_seqlens, 576 ** -0.5, True, md, ns, schedule=sys.argv[2])
torch.cuda.synchronize()
PY
S="--section WarpStateStats --section SourceCounters --section SpeedOfLight --section LaunchStats"
for v in "new auto 4096 new4k" "new auto+twobody 4096 tb4k"; do
  set -- $v
  timeout 60 "$NCU" --kernel-name regex:"twobody|colsplit" --launch-skip 1 --launch-count 1 $S -o /tmp/src_$4 -f python3 /tmp/ncu_q.py $1 $2 $3 > $OUT/x/ncu_$4_run.log 2>&1
  "$NCU" --import /tmp/src_$4.ncu-rep --page source --csv --print-source sass > $OUT/x/src_$4.csv 2>&1
  "$NCU" --import /tmp/src_$4.ncu-rep --page details > $OUT/x/ncu_$4_details.txt 2>&1
  "$NCU" --import /tmp/src_$4.ncu-rep --page raw --csv > $OUT/x/ncu_$4_raw.csv 2>&1
  echo "$4: $(grep -E "Duration|Warp Cycles Per Issued" $OUT/x/ncu_$4_details.txt | awk '{print $NF}' | tr '\n' ' ')"
done
tar -C $OUT -cJf $OUT/run2_all.tar.xz x && rm -rf $OUT/x
ls -la $OUT
