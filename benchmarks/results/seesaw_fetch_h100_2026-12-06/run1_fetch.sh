#!/usr/bin/env bash
# Session 17, run 1 (code_layout_h100_2026-12-06/next_seesaw_fetch.sh, plus the per-instruction
# stall samples): does instruction fetch hold the seesaw kernel at 256 query rows per kv head?
# 1) ncu per-issue stall reasons of main's seesaw+ahead and FlashMLA HEAD at b128 s_q2 8K h128
#    (one launch each; the source page of ours too); 2) the compute-bound rows beside FlashMLA HEAD
#    on main, then with zero_tail_shifts.patch applied and rebuilt, GPU tests on the patched build.
# Needs .ref/run (fmla_ref_py) carried.
set -o pipefail
mkdir -p $OUT/x
export PYTHONPATH=$PWD:$PWD/.ref/run
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
cat > /tmp/ncu_s.py <<'PY'
import sys, torch
from flashmla import cuda_backend, testing
import fmla_ref_py
x = testing.make_decode_inputs([8192] * 128, 2, 128, 1, torch.bfloat16, torch.device("cuda"))
md, ns = cuda_backend.get_mla_metadata_gpu(x.cache_seqlens, 256, 1, 132)
for _ in range(2):
    if sys.argv[1] == "fmla":
        fmla_ref_py.decode(x.q, x.k_cache, x.block_table, x.cache_seqlens, 576 ** -0.5, True)
    else:
        cuda_backend.decode(x.q, x.k_cache, x.block_table, x.cache_seqlens, 576 ** -0.5, True, md, ns)
torch.cuda.synchronize()
PY
ncu_stalls() {  # $1 label, $2 kernel-name regex, $3 extra sections
  timeout 120 "$NCU" --kernel-name regex:$2 --launch-skip 1 --launch-count 1 --section WarpStateStats --section SpeedOfLight $3 -o /tmp/s_$1 -f python3 /tmp/ncu_s.py ${1%_*} > $OUT/x/ncu_$1_run.log 2>&1
  "$NCU" --import /tmp/s_$1.ncu-rep --page raw --csv > $OUT/x/ncu_$1_raw.csv 2>&1
  [ -n "$3" ] && "$NCU" --import /tmp/s_$1.ncu-rep --page source --csv --print-source sass > $OUT/x/src_$1.csv 2>&1
  python3 - $OUT/x/ncu_$1_raw.csv $1 <<'PY' | tee -a $OUT/x/stalls.txt
import csv, sys
rows = list(csv.reader(open(sys.argv[1]))); d = dict(zip(rows[0], rows[2]))
st = sorted(((float(d[k].replace(",", "")), k.split("stalled_")[1].split("_per")[0]) for k in rows[0]
             if "average_warps_issue_stalled" in k and "per_issue_active" in k and d[k] not in ("", "n/a")), reverse=True)
print(sys.argv[2], "duration", d.get("gpu__time_duration.sum"), " ".join(f"{n}={v:.2f}" for v, n in st[:9]))
PY
}
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/x/build_main.log | tail -1
ncu_stalls main seesaw "--section SourceCounters"; ncu_stalls fmla flash_fwd_splitkv_mla_kernel "--section SourceCounters"
AB_ROWS=compute AB_VARIANTS=auto,ext/fmla_ref_py AB_ROUNDS=3 timeout 150 python3 scripts/ab_cuda.py $OUT/x/ab_main.csv 2>&1 | tee $OUT/x/ab_main.log | tail -3
git apply benchmarks/results/code_layout_h100_2026-12-06/zero_tail_shifts.patch && rm -rf build flashmla/_C*.so && MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/x/build_patch.log | tail -1
ncu_stalls patch_z seesaw
timeout 120 python3 -m pytest -q -x tests/test_cuda.py 2>&1 | tail -2 | tee $OUT/x/pytest_cuda.log
AB_ROWS=compute AB_VARIANTS=auto,ext/fmla_ref_py AB_ROUNDS=3 timeout 150 python3 scripts/ab_cuda.py $OUT/x/ab_patch.csv 2>&1 | tee $OUT/x/ab_patch.log | tail -3
cd $OUT/x && xz -9 src_*.csv ncu_*_raw.csv; cd $OUT && tar -cf run1_all.tar x && rm -rf $OUT/x
