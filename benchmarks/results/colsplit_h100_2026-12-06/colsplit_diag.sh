#!/usr/bin/env bash
# Session 15, fourth call: why is the colsplit kernel's unmarked (full-column) path slower than the
# serial kernel? SASS statistics of both kernels, an A/B at long small batches, ncu of both.
set -o pipefail
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/build.log | tail -1
export PYTHONPATH=$PWD:$PWD/.ref/run
SO=$(ls flashmla/_C*.so)
CUOBJ=$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)
$CUOBJ -sass $SO > $OUT/all.sass 2>&1
python3 - <<'PY' 2>&1 | tee $OUT/sass_stats.log
import re, os, collections
text = open(os.environ["OUT"] + "/all.sass").read()
funcs = re.split(r"\n\s*Function : ", text)
for f in funcs[1:]:
    name = f.split("\n", 1)[0].strip()
    if "bfloat16" not in name or "decode" not in name or "seesaw" in name:
        continue
    ops = re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", f)
    c = collections.Counter(o.split(".")[0] for o in ops)
    print(name[:90], "total", len(ops), {k: c[k] for k in ("HGMMA", "WARPGROUP", "WARPSYNC", "BAR", "LDL", "STL", "LDC", "BRA", "MUFU", "STG", "LDG", "SYNCS", "UTMALDG", "DEPBAR")})
PY
AB_SHAPES="1,1,32768,128,F;2,1,16384,128,F;1,1,4096,128,F" \
AB_VARIANTS=auto,serial+splitcombine=nosplit,serial+splitcombine+colsplit=nosplit,serial+splitcombine=split AB_ROUNDS=3 \
  timeout 100 python3 scripts/ab_cuda.py $OUT/ab_diag.csv 2>&1 | tail -10
cat > /tmp/ncu_case.py <<'PY'
import torch
from flashmla import cuda_backend, testing
x = testing.make_decode_inputs([32768], 1, 128, 1, torch.bfloat16, torch.device("cuda"))
md, ns = cuda_backend.get_mla_metadata_gpu(x.cache_seqlens, 128, 1, 132, column_split=False)
for sched in ("serial+splitcombine", "serial+splitcombine+colsplit"):
    cuda_backend.decode(x.q, x.k_cache, x.block_table, x.cache_seqlens, 576 ** -0.5, False, md, ns, schedule=sched)
torch.cuda.synchronize()
PY
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
timeout 150 $NCU --kernel-name regex:mla_decode --section SpeedOfLight --section WarpStateStats --section LaunchStats --section Occupancy python3 /tmp/ncu_case.py > $OUT/ncu_diag.log 2>&1
grep -E "mla_decode|Duration|Registers|Block Limit|Achieved Occupancy|Stall|Warp Cycles|Dynamic Shared|Grid Size|Threads" $OUT/ncu_diag.log | head -60
