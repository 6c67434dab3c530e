#!/usr/bin/env bash
# Stall reasons per SASS instruction of one kernel launch with Nsight Compute, summarised to the
# instructions that collect the most stall samples (docs/kernel-design.md 7, docs/triton-kernel.md).
#   scripts/ncu_stalls.sh seesaw   the CUDA seesaw kernel, b128 s_q2 8K h128 (needs a built flashmla._C)
#   scripts/ncu_stalls.sh triton   the Triton main kernel with the sm90 table entry, b128 s_q1 4K h128
# Needs ncu on PATH or in /usr/local/cuda/bin. Reports go to $OUT (default /tmp).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp}
mkdir -p "$OUT"
CASE=${1:-seesaw}
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "ncu_stalls: Nsight Compute (ncu) not found on this host"; exit 2; }
export PYTHONPATH=$PWD
case "$CASE" in
seesaw)
  KERNEL=regex:seesaw
  cat > /tmp/ncu_case.py <<'PY'
import torch
from flashmla import cuda_backend, testing
x = testing.make_decode_inputs([8192] * 128, 2, 128, 1, torch.bfloat16, torch.device("cuda"))
md, ns = cuda_backend.get_mla_metadata_gpu(x.cache_seqlens, 256, 1, 132)
for _ in range(2):
    cuda_backend.decode(x.q, x.k_cache, x.block_table, x.cache_seqlens, 576 ** -0.5, True, md, ns, schedule="seesaw")
torch.cuda.synchronize()
PY
  ;;
triton)
  KERNEL=regex:_mla_decode_parts_kernel
  cat > /tmp/ncu_case.py <<'PY'
import torch
import flashmla
from flashmla import testing, triton_decode
x = testing.make_decode_inputs([4096] * 128, 1, 128, 1, torch.bfloat16, torch.device("cuda"))
md, ns = flashmla.get_mla_metadata(x.cache_seqlens, 128, 1)
for _ in range(2):
    triton_decode.decode(x.q, x.k_cache, x.block_table, x.cache_seqlens, 576 ** -0.5, True, md, ns)
torch.cuda.synchronize()
PY
  ;;
*) echo "ncu_stalls: unknown case '$CASE' (seesaw or triton)"; exit 2 ;;
esac
"$NCU" --kernel-name "$KERNEL" --launch-skip 1 --launch-count 1 --section WarpStateStats --section SourceCounters \
  --section SpeedOfLight -o "$OUT/${CASE}_ncu" -f python3 /tmp/ncu_case.py > "$OUT/${CASE}_ncu_run.log" 2>&1 || { tail -20 "$OUT/${CASE}_ncu_run.log"; exit 1; }
"$NCU" --import "$OUT/${CASE}_ncu.ncu-rep" --page details > "$OUT/${CASE}_ncu_details.txt" 2>&1
"$NCU" --import "$OUT/${CASE}_ncu.ncu-rep" --page source --csv --print-source sass > "$OUT/${CASE}_ncu_source.csv" 2>&1
grep -iE "stall|throughput|Warp Cycles|Issued|Eligible|Active Warps" "$OUT/${CASE}_ncu_details.txt" | head -60
python3 - "$OUT/${CASE}_ncu_source.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1], errors="replace")))
head = next(i for i, r in enumerate(rows) if r and r[0].strip('"') in ("Address", "#", "Source"))
cols = rows[head]
data = rows[head + 1:]
def idx(name):
    for i, c in enumerate(cols):
        if c.strip() == name:
            return i
    return None
src = idx("Source")
samp = idx("Warp Stall Sampling (All Samples)") or idx("Sampling Data (All)")
print("columns:", [c for c in cols][:40])
if samp is None:
    sys.exit("no sampling column")
tot = sum(float(r[samp] or 0) for r in data if len(r) > samp)
top = sorted(data, key=lambda r: -float(r[samp] or 0) if len(r) > samp else 0)[:45]
print(f"total stall samples {tot:.0f}; top instructions:")
for r in top:
    print(f"{float(r[samp] or 0) / tot * 100:5.1f}%  {r[src][:110]}")
PY
