#!/usr/bin/env python3
"""Times the CUDA backend's default path and every candidate variant side by side, on
perf-targets.md's shapes plus a few small-batch shapes, the way perf-targets.md measured them.

do_bench(warmup=25, rep=100, median) of the whole decode call (metadata computed once outside),
data randn/10 clamped, pages permuted, FlashMLA's FLOP/byte formulas. For b <= 8 the CUDA-graph
replay time is taken too. A variant is (schedule, min_blocks_per_part) (docs/kernel-design.md
section 6); every variant's output is checked against the default's (allclose) before it is
timed. The default is timed first and again last on every shape (`default_repeat_ms`): their
difference is the noise floor of that row's comparison.

Writes one long-format CSV to argv[1]: one line per (shape, variant) with the GPU, versions and
date, ms, graph_ms, TB/s, TFLOPS, speedup against the default, the target and the reference
providers' times. A floor variant whose metadata equals the default's on a shape is not timed
(same kernel launch; `same_metadata_as_default` = True, ms left empty).

    python scripts/bench_cuda.py out.csv
    BENCH_VARIANTS="auto@1,chained@1" python scripts/bench_cuda.py out.csv   # a subset
    BENCH_ROWS=small python scripts/bench_cuda.py out.csv                   # small-batch rows only
"""
import csv
import datetime
import math
import os
import sys

import torch
import triton
import triton.testing

from flashmla import cuda_backend

# (b, s_q, mean, h_q, varied): (FlashMLA ms, FlashInfer fa3 ms, target ms), H100, perf-targets.md.
TARGET_TABLE = """1,1,4096,16,F,0.0278,0.0236,0.0262
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
# Shapes without a target (small batches, and b32 s_q2 32K h128 where auto turns to seesaw):
# FlashMLA (as built in vLLM 0.26.0) and FlashInfer fa3 eager
# times from benchmarks/results/bench_h100_2026-11-23/bench.md (same method, another machine start).
EXTRA_TABLE = """32,2,32768,128,F,1.0508,1.0940
1,1,1024,128,F,0.0366,0.0180
1,1,16384,128,F,0.0599,0.0377
1,2,4096,128,F,0.0369,0.0279
8,1,1024,128,F,0.0357,0.0253
8,1,4096,128,F,0.0556,0.0366
8,1,16384,128,F,0.1023,0.0848
8,1,65536,128,F,0.2881,0.2716"""

# (schedule, min_blocks_per_part). The first is the default path (bit for bit what
# flash_mla_with_kvcache runs today); the rest are the candidates of kernel-design.md section 6.
DEFAULT_VARIANT = ("auto", 1)
VARIANTS = [
    DEFAULT_VARIANT,
    ("seesaw", 1),
    ("serial", 1),
    ("chained", 1),
    ("serial+splitcombine", 1),
    ("chained+splitcombine", 1),
    ("auto", 2), ("auto", 4), ("auto", 8), ("auto", 16),
    ("serial+splitcombine", 4), ("serial+splitcombine", 8),
    ("chained+splitcombine", 8),
]


def parse_variants(text):
    out = []
    for item in text.split(","):
        schedule, _, floor = item.strip().partition("@")
        out.append((schedule, int(floor or 1)))
    if out[0] != DEFAULT_VARIANT:
        out.insert(0, DEFAULT_VARIANT)
    return out


def load_shapes(which):
    shapes = []
    if which in ("all", "targets"):
        for line in TARGET_TABLE.splitlines():
            b, s_q, mean, h_q, varied, fm, fi, tgt = line.split(",")
            shapes.append(((int(b), int(s_q), int(mean), int(h_q), varied == "T"), float(fm), float(fi), float(tgt)))
    for line in EXTRA_TABLE.splitlines():
        b, s_q, mean, h_q, varied, fm, fi = line.split(",")
        shape = (int(b), int(s_q), int(mean), int(h_q), varied == "T")
        if which in ("all", "extra") or (which == "small" and shape[0] <= 8):
            shapes.append((shape, float(fm), float(fi), float("nan")))
    if which == "small":
        shapes = [s for s in load_shapes("targets") if s[0][0] <= 8] + shapes
    return shapes


def seqlens_for(b, mean, s_q, varied):
    if not varied:
        return [mean] * b
    import random
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


def bench(fn):
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def graph_time(fn):
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return bench(graph.replay)


def write_csv(path, rows):
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def name_of(variant):
    schedule, floor = variant
    return schedule + (f"@{floor}" if floor > 1 else "")


def main():
    out_csv = sys.argv[1] if len(sys.argv) > 1 else "cuda_bench.csv"
    variants = parse_variants(os.environ["BENCH_VARIANTS"]) if os.environ.get("BENCH_VARIANTS") else VARIANTS
    shapes = load_shapes(os.environ.get("BENCH_ROWS", "all"))
    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    num_sms = props.multi_processor_count
    # Copy-bandwidth ceiling measured in the same run.
    x = torch.empty(2 * 1024**3 // 2, dtype=torch.bfloat16, device=device)
    y = torch.empty_like(x)
    copy_ms = bench(lambda: y.copy_(x))
    copy_gbs = 2 * x.numel() * 2 / copy_ms / 1e6
    del x, y
    print(f"GPU {props.name}, {num_sms} SMs, torch {torch.__version__}, triton {triton.__version__}, "
          f"copy {copy_gbs:.0f} GB/s; variants: {', '.join(name_of(v) for v in variants)}", flush=True)
    stamp = dict(gpu=props.name, torch=torch.__version__, triton=triton.__version__, cuda=torch.version.cuda,
                 date=datetime.date.today().isoformat(), copy_gbs=round(copy_gbs))
    rows = []
    print(f"{'shape':<22}" + "".join(f"{name_of(v)[:14]:>15}" for v in variants) + f"{'default again':>15}{'target':>9}")
    for shape, fm, fi, tgt in shapes:
        b, s_q, mean, h_q, varied = shape
        q, k, bt, sl, total = make(*shape, device)
        flops = 2 * s_q * total * h_q * (576 + 512)
        nbytes = 2 * (total * 576 + b * s_q * h_q * (576 + 512))
        metadata = {}
        results = {}
        base_md, base_ns = cuda_backend.get_mla_metadata_gpu(sl, s_q * h_q, 1, num_sms)
        base_out, _ = cuda_backend.decode(q, k, bt, sl, 576 ** -0.5, s_q > 1, base_md, base_ns,
                                          schedule=DEFAULT_VARIANT[0])
        for variant in variants:
            schedule, floor = variant
            if floor not in metadata:
                metadata[floor] = cuda_backend.get_mla_metadata_gpu(sl, s_q * h_q, 1, num_sms, min_blocks_per_part=floor)
            md, ns = metadata[floor]
            same_md = bool(torch.equal(md, base_md) and torch.equal(ns, base_ns))
            rec = dict(variant=name_of(variant), schedule=schedule, min_blocks_per_part=floor,
                       same_metadata_as_default=same_md, num_chunks=int(ns[-1]), ms="", graph_ms="", tbs="",
                       tflops="", speedup_vs_default="", max_abs_diff_vs_default="")
            results[variant] = rec
            if floor != 1 and same_md:
                continue  # the same launch as (schedule, 1): nothing new to time
            fn = lambda: cuda_backend.decode(q, k, bt, sl, 576 ** -0.5, s_q > 1, md, ns, schedule=schedule)  # noqa: E731,B023
            out, _ = fn()
            diff = (out.float() - base_out.float()).abs().max().item()
            rec["max_abs_diff_vs_default"] = f"{diff:.3e}"
            # A coarse guard (tests/test_cuda.py checks every variant against the fp32 reference):
            # bf16 rounding differences are ~1e-2 of the largest output; a broken variant is not.
            if not diff <= 5e-2 * base_out.float().abs().max().item():
                rec["ms"] = "WRONG"
                continue
            ms = bench(fn)
            rec.update(ms=round(ms, 5), tbs=round(nbytes / ms / 1e9, 3), tflops=round(flops / ms / 1e9, 1))
            if b <= 8:
                rec["graph_ms"] = round(graph_time(fn), 5)
        default_again = bench(lambda: cuda_backend.decode(q, k, bt, sl, 576 ** -0.5, s_q > 1, base_md, base_ns))
        base_ms = results[DEFAULT_VARIANT]["ms"]
        for variant, rec in results.items():
            if isinstance(rec["ms"], float):
                rec["speedup_vs_default"] = round(base_ms / rec["ms"], 4)
            rows.append(dict(**stamp, b=b, s_q=s_q, mean_seqlen=mean, h_q=h_q, varied=varied, **rec,
                             default_repeat_ms=round(default_again, 5), target_ms=tgt, flashmla_ms=fm,
                             flashinfer_ms=fi, met_target=(isinstance(rec["ms"], float) and rec["ms"] <= tgt)))
        cells = []
        for variant in variants:
            rec = results[variant]
            cell = "  =default" if rec["ms"] == "" else (f"{rec['ms']:.4f}" if isinstance(rec["ms"], float) else rec["ms"])
            if rec["graph_ms"] != "":
                cell += f"/g{rec['graph_ms']:.4f}"
            cells.append(cell)
        label = f"{b},{s_q},{mean},{h_q},{'var' if varied else 'fix'}"
        print(f"{label:<22}" + "".join(f"{c:>15}" for c in cells) + f"{default_again:15.4f}{tgt:9.4f}", flush=True)
        del q, k, bt, sl, metadata, base_out
        write_csv(out_csv, rows)  # after every shape, so a run cut short still leaves its rows
    print(f"\nwrote {out_csv} ({len(rows)} lines)")
    for variant in variants:
        mine = [r for r in rows if r["variant"] == name_of(variant) and isinstance(r["ms"], float)]
        met = sum(r["met_target"] for r in mine if not math.isnan(r["target_ms"]))
        with_target = sum(not math.isnan(r["target_ms"]) for r in mine)
        speed = [r["speedup_vs_default"] for r in mine]
        geo = math.exp(sum(math.log(s) for s in speed) / len(speed)) if speed else float("nan")
        print(f"{name_of(variant):<26} timed on {len(mine):2d} shapes; targets met {met}/{with_target}; "
              f"speed vs default: geomean {geo:.3f}, min {min(speed, default=float('nan')):.3f}, "
              f"max {max(speed, default=float('nan')):.3f}")
    print("(a floor variant is timed only where its metadata differs from the default's)")
    wrong = [r for r in rows if r["ms"] == "WRONG"]
    if wrong:
        print(f"WRONG outputs: {[(r['variant'], r['b'], r['s_q'], r['mean_seqlen'], r['h_q']) for r in wrong]}")
        sys.exit(1)


if __name__ == "__main__":
    main()
