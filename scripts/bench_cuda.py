#!/usr/bin/env python3
"""Times the CUDA backend on perf-targets.md's shapes the way that file measured them.

do_bench(warmup=25, rep=100, median) of the whole flash_mla_with_kvcache-equivalent call
(metadata computed once outside), data randn/10 clamped, pages permuted, FlashMLA's FLOP/byte
formulas. Prints a table with the target and writes a CSV (GPU, versions, date) to argv[1].
"""
import csv
import datetime
import math
import os
import random
import sys

import torch
import triton
import triton.testing

from flashmla import cuda_backend

TARGETS = {  # (b, s_q, mean, h_q, varied): (FlashMLA ms, FlashInfer ms, target ms) on H100
}
TABLE = """1,1,4096,16,F,0.0278,0.0236,0.0262
1,1,4096,128,F,0.0254,0.0237,0.0263
32,1,32768,128,F,0.5018,0.5738,0.5576
128,1,4096,16,F,0.2322,0.2212,0.2458
128,1,4096,32,F,0.2333,0.2223,0.2470
128,1,4096,64,F,0.2357,0.2247,0.2497
128,1,4096,128,F,0.2626,0.2822,0.2918
128,1,8192,16,F,0.4439,0.4189,0.4654
128,1,8192,32,F,0.4414,0.4206,0.4673
128,1,8192,64,F,0.4446,0.4229,0.4699
128,1,8192,128,F,0.5365,0.5333,0.5926
128,2,4096,16,F,0.2332,0.2221,0.2468
128,2,4096,32,F,0.2361,0.2248,0.2498
128,2,4096,64,F,0.2615,0.2800,0.2906
128,2,4096,128,F,0.4849,0.5292,0.5388
128,2,8192,16,F,0.4427,0.4203,0.4670
128,2,8192,32,F,0.4449,0.4232,0.4702
128,2,8192,64,F,0.5270,0.5477,0.5856
128,2,8192,128,F,0.8759,1.0405,0.9732
128,1,4096,16,T,0.2408,0.2739,0.2676
128,1,4096,32,T,0.2444,0.2806,0.2716
128,1,4096,64,T,0.2542,0.2958,0.2824
128,1,4096,128,T,0.2897,0.3962,0.3219
128,1,8192,16,T,0.4520,0.5108,0.5022
128,1,8192,32,T,0.4552,0.5220,0.5058
128,1,8192,64,T,0.4666,0.5388,0.5184
128,1,8192,128,T,0.5328,0.7545,0.5920
128,2,4096,16,T,0.2444,0.2797,0.2716
128,2,4096,32,T,0.2552,0.2944,0.2836
128,2,4096,64,T,0.2906,0.3916,0.3229
128,2,4096,128,T,0.4770,0.5985,0.5300
128,2,8192,16,T,0.4552,0.5192,0.5058
128,2,8192,32,T,0.4677,0.5365,0.5197
128,2,8192,64,T,0.5370,0.7411,0.5967
128,2,8192,128,T,0.8884,1.1894,0.9871"""
for line in TABLE.splitlines():
    b, s_q, mean, h_q, varied, fm, fi, tgt = line.split(",")
    TARGETS[(int(b), int(s_q), int(mean), int(h_q), varied == "T")] = (float(fm), float(fi), float(tgt))


def seqlens_for(b, mean, s_q, varied):
    if not varied:
        return [mean] * b
    rng = random.Random(0)
    return [max(int(rng.normalvariate(mean, mean / 2)), s_q) for _ in range(b)]


def make(b, s_q, mean, h_q, varied, device):
    lens = seqlens_for(b, mean, s_q, varied)
    pages = [math.ceil(n / 64) for n in lens]
    nblk = sum(pages)
    k = (torch.randn(nblk, 64, 1, 576, device=device) / 10).clamp_(-1, 1).to(torch.bfloat16)
    q = (torch.randn(b, s_q, h_q, 576, device=device) / 10).clamp_(-1, 1).to(torch.bfloat16)
    perm = torch.randperm(nblk, device=device).to(torch.int32)
    bt = torch.zeros(b, max(pages), dtype=torch.int32, device=device)
    pos = 0
    for i, n in enumerate(pages):
        bt[i, :n] = perm[pos:pos + n]
        pos += n
    return q, k, bt, torch.tensor(lens, dtype=torch.int32, device=device), sum(lens)


def main():
    out_csv = sys.argv[1] if len(sys.argv) > 1 else "cuda_bench.csv"
    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    # Copy-bandwidth ceiling measured in the same run.
    x = torch.empty(2 * 1024**3 // 2, dtype=torch.bfloat16, device=device)
    y = torch.empty_like(x)
    copy_ms = triton.testing.do_bench(lambda: y.copy_(x), warmup=25, rep=100, return_mode="median")
    copy_gbs = 2 * x.numel() * 2 / copy_ms / 1e6
    del x, y
    print(f"GPU {props.name}, {props.multi_processor_count} SMs, torch {torch.__version__}, "
          f"triton {triton.__version__}, copy {copy_gbs:.0f} GB/s", flush=True)
    rows = []
    # Extra schedules to time beside "auto" (comma list, e.g. "serial,pipelined").
    extra = [x for x in os.environ.get("BENCH_SCHEDULES", "").split(",") if x]
    hdr = (f"{'shape':<28}{'ms':>9}{'target':>9}{'FlashMLA':>9}{'TB/s':>7}{'TFLOPS':>8}"
           + "".join(f"{x[:8]:>9}" for x in extra) + f"{'graph':>9}  verdict")
    print(hdr)
    for shape, (fm, fi, tgt) in TARGETS.items():
        b, s_q, mean, h_q, varied = shape
        q, k, bt, sl, total = make(*shape, device)
        md, ns = cuda_backend.get_mla_metadata_gpu(sl, s_q * h_q, 1, props.multi_processor_count)
        per_schedule = {}
        for schedule in ["auto"] + extra:
            fn = lambda: cuda_backend.decode(q, k, bt, sl, 576 ** -0.5, s_q > 1, md, ns, schedule=schedule)  # noqa: E731,B023
            per_schedule[schedule] = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
        ms = per_schedule["auto"]
        graph_ms = float("nan")
        if b == 1:  # launch-overhead-free time of the same call, replayed from a CUDA graph
            fn = lambda: cuda_backend.decode(q, k, bt, sl, 576 ** -0.5, s_q > 1, md, ns)  # noqa: E731
            fn()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                fn()
            graph_ms = triton.testing.do_bench(graph.replay, warmup=25, rep=100, return_mode="median")
        flops = 2 * s_q * total * h_q * (576 + 512)
        nbytes = 2 * (total * 576 + b * s_q * h_q * (576 + 512))
        tbs, tflops = nbytes / ms / 1e9, flops / ms / 1e9
        verdict = "OK" if ms <= tgt else "SLOW"
        name = f"{b},{s_q},{mean},{h_q},{'var' if varied else 'fix'}"
        print(f"{name:<28}{ms:9.4f}{tgt:9.4f}{fm:9.4f}{tbs:7.2f}{tflops:8.1f}"
              + "".join(f"{per_schedule[x]:9.4f}" for x in extra) + f"{graph_ms:9.4f}  {verdict}", flush=True)
        rows.append(dict(b=b, s_q=s_q, mean_seqlen=mean, h_q=h_q, varied=varied, ms=round(ms, 5),
                         target_ms=tgt, flashmla_ms=fm, flashinfer_ms=fi, tbs=round(tbs, 3),
                         tflops=round(tflops, 1), copy_gbs=round(copy_gbs), verdict=verdict,
                         graph_ms=round(graph_ms, 5),
                         **{f"{x}_ms": round(per_schedule[x], 5) for x in extra}))
        del q, k, bt, sl
    stamp = dict(gpu=props.name, torch=torch.__version__, triton=triton.__version__, cuda=torch.version.cuda,
                 date=datetime.date.today().isoformat())
    with open(out_csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(stamp) + list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**stamp, **r})
    print(f"wrote {out_csv}; {sum(r['verdict'] == 'OK' for r in rows)}/{len(rows)} rows within target")


if __name__ == "__main__":
    main()
