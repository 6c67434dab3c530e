"""Block sizes of the Triton MLA decode kernel, per GPU family and per query-row count.

Chosen by measurement (sm90, see benchmarks/results/triton_*) or, where no such GPU was at hand,
by the shared-memory budget of the family; the table is read at launch time, never autotuned
at import, so a first call costs one compile and nothing else.

Key terms (see docs/triton-kernel.md):
  rows       = s_q * h_q / h_kv, the query rows that read one kv head; they are folded into
               tiles of BLOCK_M rows, so each cache block is loaded once per kv head per tile.
  BLOCK_M    = query rows per program (16, 32 or 64). A tile of 64 rows is the Hopper wgmma
               shape; smaller tiles waste less work when h_q is small.
  BLOCK_N    = cache tokens per loop step (a divisor of the 64-token page).
  num_warps, num_stages: Triton launch parameters (warps per program, software-pipeline depth).
  ctas_per_sm: programs the family keeps resident per SM with this entry; the split planner
               uses it to size the grid (it is an estimate, not a launch parameter).

Shared memory per program is about (BLOCK_M + num_stages * BLOCK_N) * 576 * 2 bytes
(the Q tile plus the pipelined cache tiles); each entry stays inside its family's limit
(sm90: 227 KB, sm80: 163 KB, sm86/sm89: 99 KB).
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    ctas_per_sm: int

    def smem_bytes(self, element_size: int = 2) -> int:
        return (self.block_m + self.num_stages * self.block_n) * 576 * element_size


# Row buckets: a config applies to rows <= the bucket key; the last bucket covers the rest (rows
# beyond 64 are handled as several tiles of at most 64 rows: the compute-bound regime).
ROW_BUCKETS = (16, 32, 64, 128)

CONFIGS: dict[str, dict[int, KernelConfig]] = {
    # Hopper (H100/H200/H20/H800). Measured on an H100 (benchmarks/results/triton_h100_tuning.csv).
    "sm90": {
        16: KernelConfig(block_m=16, block_n=64, num_warps=4, num_stages=2, ctas_per_sm=2),
        32: KernelConfig(block_m=32, block_n=64, num_warps=4, num_stages=2, ctas_per_sm=2),
        64: KernelConfig(block_m=64, block_n=32, num_warps=8, num_stages=2, ctas_per_sm=1),
        128: KernelConfig(block_m=64, block_n=32, num_warps=8, num_stages=2, ctas_per_sm=1),
    },
    # Ampere datacenter (A100/A800/A30: 163 KB shared memory). Not measured: sized to fit.
    "sm80": {
        16: KernelConfig(block_m=16, block_n=32, num_warps=4, num_stages=3, ctas_per_sm=2),
        32: KernelConfig(block_m=32, block_n=32, num_warps=4, num_stages=3, ctas_per_sm=2),
        64: KernelConfig(block_m=64, block_n=32, num_warps=8, num_stages=2, ctas_per_sm=1),
        128: KernelConfig(block_m=64, block_n=32, num_warps=8, num_stages=2, ctas_per_sm=1),
    },
    # Consumer Ampere/Ada and L40S/L4 (99 KB shared memory per program). Not measured: sized to fit.
    "sm86": {
        16: KernelConfig(block_m=16, block_n=32, num_warps=4, num_stages=2, ctas_per_sm=1),
        32: KernelConfig(block_m=32, block_n=16, num_warps=4, num_stages=3, ctas_per_sm=1),
        64: KernelConfig(block_m=32, block_n=16, num_warps=4, num_stages=2, ctas_per_sm=1),
        128: KernelConfig(block_m=32, block_n=16, num_warps=4, num_stages=2, ctas_per_sm=1),
    },
}
# Families not listed (Blackwell, future parts) use the smallest-footprint table.
DEFAULT_FAMILY = "sm86"
# The Triton interpreter (CPU): small tiles keep the numpy work per program low.
INTERPRETER_CONFIG = KernelConfig(block_m=16, block_n=16, num_warps=4, num_stages=1, ctas_per_sm=1)


def family_of(capability: tuple[int, int]) -> str:
    """Map a CUDA compute capability to a key of CONFIGS."""
    major, minor = capability
    if major == 9:
        return "sm90"
    if major == 8 and minor == 0:
        return "sm80"
    if major == 8:
        return "sm86"  # sm86 (A10, 3090), sm87, sm89 (4090, L40S, L4): 99 KB shared memory
    return DEFAULT_FAMILY


def config_for(family: str, rows: int) -> KernelConfig:
    """The table entry for ``rows`` query rows per kv head on a GPU family."""
    table = CONFIGS.get(family, CONFIGS[DEFAULT_FAMILY])
    for bucket in ROW_BUCKETS:
        if rows <= bucket:
            return table[bucket]
    return table[ROW_BUCKETS[-1]]


# --------------------------------------------------------------------------- tuning (GPU host)
# `python -m flashmla.triton_configs --tune --out DIR` times every candidate below on the
# benchmark shapes with the method of perf-targets.md and writes CSVs; its pick per bucket is
# what goes into CONFIGS by hand (no tuning ever happens at import or at a call).
# ctas_per_sm of a candidate is a placeholder: the tuner replaces it with the occupancy that the
# compiled kernel's shared memory and registers allow.
CANDIDATES: dict[int, list[KernelConfig]] = {
    16: [KernelConfig(16, 64, 4, 2, 1), KernelConfig(16, 32, 4, 2, 1), KernelConfig(16, 32, 4, 3, 1),
         KernelConfig(16, 64, 8, 2, 1)],
    32: [KernelConfig(32, 64, 4, 2, 1), KernelConfig(32, 32, 4, 3, 1), KernelConfig(32, 64, 8, 2, 1),
         KernelConfig(64, 32, 8, 2, 1)],
    64: [KernelConfig(64, 32, 8, 2, 1), KernelConfig(64, 32, 4, 2, 1), KernelConfig(64, 32, 8, 3, 1),
         KernelConfig(64, 64, 8, 2, 1)],
    128: [KernelConfig(64, 32, 8, 2, 1), KernelConfig(64, 32, 4, 2, 1), KernelConfig(64, 32, 8, 3, 1),
          KernelConfig(64, 64, 8, 2, 1)],
}
SM_SHARED_BYTES = {"sm90": 228 * 1024, "sm80": 164 * 1024, "sm86": 100 * 1024}
SM_REGISTERS = 65536


def bucket_of(rows: int) -> int:
    for bucket in ROW_BUCKETS:
        if rows <= bucket:
            return bucket
    return ROW_BUCKETS[-1]


def occupancy(shared_bytes: int, n_regs: int, num_warps: int, family: str) -> int:
    """Programs per SM that a compiled kernel's resources allow."""
    by_smem = SM_SHARED_BYTES.get(family, 100 * 1024) // max(1, shared_bytes + 1024)
    by_regs = SM_REGISTERS // max(1, n_regs * 32 * num_warps)
    return max(1, min(by_smem, by_regs, 64 // num_warps))


def _table_shapes():
    """(b, s_q, mean seqlen, h_q, varied, best_ms, vllm_ms) of perf-targets.md (via targets.csv)."""
    import csv
    from pathlib import Path
    path = Path(__file__).with_name("bench") / "targets.csv"
    rows = []
    if path.exists():
        with open(path) as f:
            lines = [line for line in f if not line.startswith("#")]
        for r in csv.DictReader(lines):
            rows.append((r["gpu"], int(r["b"]), int(r["s_q"]), int(r["mean_seqlen"]), int(r["h_q"]),
                         bool(int(r["varlen"])), float(r["best_ms"]), float(r["vllm_triton_ms"])))
    return rows


def _bench_inputs(b, s_q, mean, h_q, varied, device, seed=0):
    """perf-targets.md's data: randn/10 clamped, permuted pages, NaN in unused rows, garbage ids."""
    import math
    import random
    import torch
    if varied:
        rng = random.Random(0)
        seqlens = [max(int(rng.normalvariate(mean, mean / 2)), s_q) for _ in range(b)]
    else:
        seqlens = [mean] * b
    pages = [math.ceil(x / 64) for x in seqlens]
    width = -(-max(seqlens) // 256) * 4  # FlashMLA pads the table to 256 tokens
    gen = torch.Generator(device=device).manual_seed(seed)
    num_blocks = sum(pages) + 1
    k = torch.randn(num_blocks, 64, 1, 576, device=device, generator=gen).div_(10).clamp_(-1, 1).to(torch.bfloat16)
    q = torch.randn(b, s_q, h_q, 576, device=device, generator=gen).div_(10).clamp_(-1, 1).to(torch.bfloat16)
    perm = torch.randperm(num_blocks, device=device, generator=gen).to(torch.int32)
    table = torch.full((b, width), 2147480000, dtype=torch.int32, device=device)
    pos = 0
    for i, n in enumerate(pages):
        table[i, :n] = perm[pos:pos + n]
        pos += n
    k[perm[-1].long()] = float("nan")
    for i, (n, x) in enumerate(zip(pages, seqlens)):
        if x % 64:
            k[table[i, n - 1].long(), x % 64:] = float("nan")
    return q, k, table, torch.tensor(seqlens, dtype=torch.int32, device=device)


def _precompile_one(job):
    """Compile one (config, HAS_PARTIALS, dtype) variant into Triton's disk cache (in a child
    process). Jobs and results are plain tuples so they pickle whatever the parent's __main__."""
    import torch
    from flashmla import triton_configs, triton_decode
    block_m, block_n, num_warps, num_stages, partials, dtype_name, device = job
    config = triton_configs.KernelConfig(block_m, block_n, num_warps, num_stages, 1)
    dtype = getattr(torch, dtype_name)
    try:
        q, k, table, lens = _bench_inputs(2, 2, 200, 8, False, device)
        q, k = q.to(dtype), k.to(dtype)
        triton_decode.decode_with_config(q, k, table, lens, 0.1, True, config=config,
                                         pages_per_split=1 if partials else table.shape[1])
        if device != "cpu":
            torch.cuda.synchronize()
        info = triton_decode.LAST_SPLIT_KERNEL
        if device == "cpu":  # the interpreter compiles nothing
            return job, (0, 0, 0), ""
        return job, (int(info.metadata.shared), int(info.n_regs), int(info.n_spills)), ""
    except Exception as exc:  # reported, and the candidate is dropped
        return job, None, f"{type(exc).__name__}: {str(exc)[:300]}"


def precompile(jobs, workers: int = 12):
    import multiprocessing as mp
    ctx = mp.get_context("spawn")
    with ctx.Pool(min(workers, max(1, len(jobs)))) as pool:
        return pool.map(_precompile_one, jobs)


def _timer(device):
    if device.type == "cuda":
        import triton

        def bench(fn, warmup, rep):
            return triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median")
        return bench

    def wall(fn, warmup, rep):  # smoke runs on CPU: one call, wall clock
        import time
        t = time.perf_counter()
        fn()
        return (time.perf_counter() - t) * 1e3
    return wall


def tune(out_dir, quick: bool = False, workers: int = 12, smoke: bool = False):
    """Time the candidates, pick one per bucket, then time the public API with the picks."""
    import csv
    import dataclasses as dc
    import os
    import time
    import torch
    import flashmla
    from flashmla import reference, triton_decode
    from flashmla import triton_configs as live  # the module the backend reads (not __main__)

    os.makedirs(out_dir, exist_ok=True)
    if smoke:  # CPU check of this function itself under TRITON_INTERPRET=1: tiny shapes
        device, family, gpu, name = torch.device("cpu"), "sm90", "H100", "cpu (interpreter)"
        shapes = [(2, 1, 100, 16, False, 1.0, 1.0), (2, 2, 130, 64, True, 1.0, 1.0)]
    else:
        device = torch.device("cuda")
        props = torch.cuda.get_device_properties(device)
        family, name = family_of((props.major, props.minor)), props.name
        gpu = "H200" if "H200" in props.name else ("H100" if "H100" in props.name else props.name)
        shapes = [r[1:] for r in _table_shapes() if r[0] == gpu] or [
            r[1:] for r in _table_shapes() if r[0] == "H100"]
    if quick:
        shapes = [s for s in shapes if s[2] == 4096 or s[0] != 128]
    # Candidates are timed on the 4096-long rows and the small/long ones (the 8192 rows behave
    # like their 4096 twins with twice the pages); the final timing covers every row.
    tune_shapes = [s for s in shapes if s[2] != 8192] or shapes
    bench = _timer(device)
    t0 = time.time()
    print(f"[tune] {name} {family}, {len(shapes)} shapes", flush=True)

    # 1. compile every candidate (and the table's entries, fp16 too for the tests) in parallel
    table = CONFIGS.get(family, CONFIGS[DEFAULT_FAMILY])
    def job(c, p, d):
        return (c.block_m, c.block_n, c.num_warps, c.num_stages, p, d, device.type)
    jobs = sorted({job(c, p, "bfloat16") for cands in CANDIDATES.values() for c in cands for p in (False, True)}
                  | {job(c, p, d) for c in table.values() for p in (False, True) for d in ("bfloat16", "float16")})
    if smoke:
        jobs = jobs[:2]
    resources = {}
    with open(os.path.join(out_dir, "triton_compile.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["block_m", "block_n", "num_warps", "num_stages", "partials", "dtype", "shared_bytes",
                    "n_regs", "n_spills", "error"])
        for (bm, bn, nw, ns, partials, dname, _), res, err in precompile(jobs, workers):
            w.writerow([bm, bn, nw, ns, int(partials), dname, *(res if res else ("", "", "")), err])
            if res and dname == "bfloat16":
                key = (bm, bn, nw, ns)
                prev = resources.get(key)
                resources[key] = res if prev is None else tuple(max(a, b) for a, b in zip(prev, res))
            if err:
                print(f"[tune] compile failed {(bm, bn, nw, ns)} partials={partials} {dname}: {err}", flush=True)
    print(f"[tune] compiled {len(jobs)} variants in {time.time() - t0:.0f}s", flush=True)
    if quick is None:
        return

    def with_occupancy(cfg):
        key = (cfg.block_m, cfg.block_n, cfg.num_warps, cfg.num_stages)
        if smoke:
            return cfg
        if key not in resources:
            return None
        shared, regs, _ = resources[key]
        return dc.replace(cfg, ctas_per_sm=occupancy(shared, regs, cfg.num_warps, family))

    # 2. time every candidate of each shape's bucket; check each against the reference on a few requests
    tuning_rows = []
    best_by_shape = {}
    for shape in tune_shapes:
        b, s_q, mean, h_q, varied, best_ms, vllm_ms = shape
        q, k, bt, lens = _bench_inputs(b, s_q, mean, h_q, varied, device)
        n_check = min(2, b)
        ref_out, ref_lse = reference.decode(q[:n_check], k, bt[:n_check], lens[:n_check], 576 ** -0.5, s_q > 1)
        bucket = bucket_of(s_q * h_q)
        for cand in CANDIDATES[bucket]:
            cfg = with_occupancy(cand)
            if cfg is None:
                continue
            fn = lambda: triton_decode.decode_with_config(q, k, bt, lens, 576 ** -0.5, s_q > 1, config=cfg)
            try:
                out, lse = fn()
                err = ((out[:n_check].float() - ref_out.float()).norm() / ref_out.float().norm()).item()
                lse_err = ((lse[:n_check] - ref_lse).norm() / ref_lse.norm()).item()
                ms = bench(fn, 10, 30) if err <= 1e-2 and lse_err <= 1e-3 else float("nan")
            except Exception as exc:
                print(f"[tune] {shape[:5]} {cfg}: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
                err, lse_err, ms = float("nan"), float("nan"), float("nan")
            row = dict(b=b, s_q=s_q, mean_seqlen=mean, h_q=h_q, varlen=int(varied), bucket=bucket,
                       block_m=cfg.block_m, block_n=cfg.block_n, num_warps=cfg.num_warps,
                       num_stages=cfg.num_stages, ctas_per_sm=cfg.ctas_per_sm, ms=ms, out_rel_err=err,
                       lse_rel_err=lse_err)
            tuning_rows.append(row)
            if ms == ms and (shape not in best_by_shape or ms < best_by_shape[shape][0]):
                best_by_shape[shape] = (ms, cfg)
        del q, k
        torch.cuda.empty_cache()
        print(f"[tune] {b},{s_q},{mean},{h_q},{int(varied)}: best {best_by_shape.get(shape)}", flush=True)
    with open(os.path.join(out_dir, "triton_tuning.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(tuning_rows[0]))
        w.writeheader()
        w.writerows(tuning_rows)

    # 3. per bucket, the candidate with the smallest geometric-mean slowdown over its shapes
    import math
    picks = {}
    for bucket in ROW_BUCKETS:
        scores = {}
        for r in tuning_rows:
            if r["bucket"] != bucket:
                continue
            shape = next(s for s in tune_shapes if s[:5] == (r["b"], r["s_q"], r["mean_seqlen"], r["h_q"],
                                                        bool(r["varlen"])))
            key = KernelConfig(r["block_m"], r["block_n"], r["num_warps"], r["num_stages"], r["ctas_per_sm"])
            ratio = r["ms"] / best_by_shape[shape][0] if r["ms"] == r["ms"] else 10.0
            scores.setdefault(key, []).append(math.log(ratio))
        if scores:
            picks[bucket] = min(scores, key=lambda c: sum(scores[c]) / len(scores[c]))
            print(f"[tune] bucket {bucket}: pick {picks[bucket]}", flush=True)

    # 4. the public API with the picks, timed exactly as perf-targets.md says
    live.CONFIGS[family] = {**table, **picks}
    results = []
    for shape in shapes:
        b, s_q, mean, h_q, varied, best_ms, vllm_ms = shape
        q, k, bt, lens = _bench_inputs(b, s_q, mean, h_q, varied, device, seed=1)
        md, ns = flashmla.get_mla_metadata(lens, s_q * h_q, 1)
        fn = lambda: flashmla.flash_mla_with_kvcache(q, k, bt, lens, 512, md, ns, causal=s_q > 1,
                                                     backend="triton")
        ms = bench(fn, 25, 100)
        graph_ms = float("nan")
        if b == 1 and device.type == "cuda":
            try:
                fn()
                torch.cuda.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    fn()
                graph_ms = bench(graph.replay, 25, 100)
            except Exception as exc:
                print(f"[tune] graph capture failed: {exc}", flush=True)
        total = int(lens.sum())
        flops = 2 * s_q * total * h_q * (576 + 512)
        nbytes = 2 * (total * 576 + b * s_q * h_q * (576 + 512))
        cfg = live.config_for(family, s_q * h_q) if device.type == "cuda" else live.INTERPRETER_CONFIG
        results.append(dict(gpu=gpu, b=b, s_q=s_q, mean_seqlen=mean, h_q=h_q, varlen=int(varied),
                            triton_ms=round(ms, 4), graph_ms=round(graph_ms, 4), best_ms=best_ms,
                            bar_ms=round(best_ms / 0.6, 4), vllm_triton_ms=vllm_ms,
                            meets_bar=int(ms <= best_ms / 0.6), beats_vllm=int(ms <= vllm_ms),
                            tflops=round(flops / ms / 1e9, 1), gbps=round(nbytes / ms / 1e6, 1),
                            block_m=cfg.block_m, block_n=cfg.block_n, num_warps=cfg.num_warps,
                            num_stages=cfg.num_stages, ctas_per_sm=cfg.ctas_per_sm))
        del q, k
        torch.cuda.empty_cache()
    with open(os.path.join(out_dir, "triton_results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(results[0]))
        w.writeheader()
        w.writerows(results)
    print("b,s_q,L,h_q,var | triton_ms graph_ms | bar(best/0.6) vllm | ok_bar ok_vllm | TFLOPS GB/s | cfg")
    for r in results:
        print(f"{r['b']},{r['s_q']},{r['mean_seqlen']},{r['h_q']},{r['varlen']} | {r['triton_ms']:.4f} "
              f"{r['graph_ms']:.4f} | {r['bar_ms']:.4f} {r['vllm_triton_ms']:.4f} | {r['meets_bar']} "
              f"{r['beats_vllm']} | {r['tflops']} {r['gbps']} | {r['block_m']}/{r['block_n']}/"
              f"{r['num_warps']}/{r['num_stages']}/{r['ctas_per_sm']}", flush=True)
    print(f"[tune] done in {time.time() - t0:.0f}s", flush=True)


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description="Compile and tune the Triton MLA decode kernel's table")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the CSVs")
    parser.add_argument("--precompile-only", action="store_true", help="compile the variants and stop")
    parser.add_argument("--quick", action="store_true", help="only the 4096-long rows and small batches")
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--smoke", action="store_true", help="CPU self-check under TRITON_INTERPRET=1")
    args = parser.parse_args(argv)
    tune(args.out, quick=None if args.precompile_only else args.quick, workers=args.workers, smoke=args.smoke)


if __name__ == "__main__":
    main()
