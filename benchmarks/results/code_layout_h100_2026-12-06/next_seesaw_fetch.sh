#!/usr/bin/env bash
# Prepared for the next session (not run): does instruction fetch hold the seesaw kernel's steady
# state at 256 query rows per kv head, as it held the serial kernel at b = 1 (kernel-design 7.17)?
# 1) ncu's per-issue stall reasons (no_instruction among them) of main's seesaw+ahead and of
#    FlashMLA HEAD at b128 s_q2 8K h128 (raw metrics, one launch each); 2) the compute-bound rows
#    timed beside FlashMLA HEAD on main, then with zero_tail_shifts.patch applied and rebuilt
#    (seesaw+ahead 10,704 -> 9,992 instructions; compiles clean, 248 registers, no spills), GPU
#    tests on the patched build. The two builds are timed in two processes on one machine, each
#    against FlashMLA (run 2's same-process A/B against a second build failed to launch).
#    Needs .ref/run (fmla_ref_py) carried.
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
ncu_stalls() {  # $1 label, $2 kernel-name regex
  timeout 90 "$NCU" --kernel-name regex:$2 --launch-skip 1 --launch-count 1 --section WarpStateStats --section SpeedOfLight -o /tmp/s_$1 -f python3 /tmp/ncu_s.py $1 > $OUT/x/ncu_$1_run.log 2>&1
  "$NCU" --import /tmp/s_$1.ncu-rep --page raw --csv > $OUT/x/ncu_$1_raw.csv 2>&1
  python3 - $OUT/x/ncu_$1_raw.csv $1 <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1]))); d = dict(zip(rows[0], rows[2]))
st = sorted(((float(d[k].replace(",", "")), k.split("stalled_")[1].split("_per")[0]) for k in rows[0]
             if "average_warps_issue_stalled" in k and "per_issue_active" in k and d[k] not in ("", "n/a")), reverse=True)
print(sys.argv[2], "duration", d.get("gpu__time_duration.sum"), " ".join(f"{n}={v:.2f}" for v, n in st[:7]))
PY
}
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/x/build_main.log | tail -1
ncu_stalls main seesaw; ncu_stalls fmla flash_fwd_splitkv_mla_kernel
AB_ROWS=compute AB_VARIANTS=auto,ext/fmla_ref_py AB_ROUNDS=3 timeout 150 python3 scripts/ab_cuda.py $OUT/x/ab_main.csv 2>&1 | tail -3
git apply benchmarks/results/code_layout_h100_2026-12-06/zero_tail_shifts.patch && rm -rf build flashmla/_C*.so && MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/x/build_patch.log | tail -1
ncu_stalls patch seesaw
timeout 120 python3 -m pytest -q -x tests/test_cuda.py 2>&1 | tail -2 | tee $OUT/x/pytest_cuda.log
AB_ROWS=compute AB_VARIANTS=auto,ext/fmla_ref_py AB_ROUNDS=3 timeout 150 python3 scripts/ab_cuda.py $OUT/x/ab_patch.csv 2>&1 | tail -3
tar -C $OUT -cJf $OUT/next_all.tar.xz x && rm -rf $OUT/x
