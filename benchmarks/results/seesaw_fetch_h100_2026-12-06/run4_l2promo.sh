#!/usr/bin/env bash
# Session 17, run 4: does the K tensor map's 256-byte L2 promotion make the L2 serve ours with more
# lookups (hits) than FlashMLA (128-byte promotion)? ncu L2 counters of auto, auto+l2promo128 and
# FlashMLA HEAD at b128 s_q2 8K h128 (one launch each), and the three timed side by side on the
# 256-row rows. Needs .ref/run (fmla_ref_py) carried.
set -o pipefail
mkdir -p $OUT/x
export PYTHONPATH=$PWD:$PWD/.ref/run
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
MAX_JOBS=16 bash scripts/gpu_build_if_needed.sh $OUT/x/build.log | tail -1
cat > /tmp/ncu_l2.py <<'PY'
import sys, torch
from flashmla import cuda_backend, testing
import fmla_ref_py
x = testing.make_decode_inputs([8192] * 128, 2, 128, 1, torch.bfloat16, torch.device("cuda"))
md, ns = cuda_backend.get_mla_metadata_gpu(x.cache_seqlens, 256, 1, 132)
for _ in range(2):
    if sys.argv[1] == "fmla":
        fmla_ref_py.decode(x.q, x.k_cache, x.block_table, x.cache_seqlens, 576 ** -0.5, True)
    else:
        cuda_backend.decode(x.q, x.k_cache, x.block_table, x.cache_seqlens, 576 ** -0.5, True, md, ns, schedule=sys.argv[1])
torch.cuda.synchronize()
PY
M=gpu__time_duration.sum,lts__t_requests_srcunit_tex_op_read.sum,lts__t_sectors_srcunit_tex_op_read.sum,lts__t_sectors_srcunit_tex_op_read_lookup_hit.sum,lts__t_sectors_srcunit_tex_op_read_lookup_miss.sum,lts__t_sectors_srcunit_ltcfabric.sum,l1tex__m_xbar2l1tex_read_sectors_mem_global_op_tma_ld.sum,dram__bytes_read.sum,lts__t_sector_op_read_hit_rate.pct
for v in auto auto+l2promo128 fmla; do
  timeout 90 "$NCU" --kernel-name regex:"seesaw|flash_fwd_splitkv_mla" --launch-skip 1 --launch-count 1 --metrics $M --csv python3 /tmp/ncu_l2.py $v > $OUT/x/ncu_$v.csv 2>&1
  echo "== $v"; grep -E '"(gpu__time|lts__|l1tex__|dram__)' $OUT/x/ncu_$v.csv | awk -F'","' '{print $(NF-2), $NF}' | tr -d '"'
done
AB_SHAPES="128,2,8192,128,F;128,2,8192,128,T;128,2,4096,128,T;128,2,4096,128,F" AB_VARIANTS=auto,auto+l2promo128,ext/fmla_ref_py AB_ROUNDS=5 \
  timeout 150 python3 scripts/ab_cuda.py $OUT/x/ab_l2promo.csv 2>&1 | tee $OUT/x/ab_l2promo.log | tail -9
cd $OUT && tar -cf run4_all.tar x && rm -rf $OUT/x
