#!/usr/bin/env python3
"""Interleaved A/B timing of CUDA schedules, for effects of a few percent.

One pass of bench_cuda.py times each variant once per shape; on the compute-bound rows two
timings of the same launch in that pass differ by up to 5% (clock drift under load), which
hides a 2-3% change. Here every shape is timed in ROUNDS rounds, each round timing every
variant once in a rotated order, and each variant is summarised by its median over rounds and
by how many rounds it beat the first variant in. Method per timing as perf-targets.md
(do_bench warmup=25, rep=100, median; metadata outside the timed call).

    AB_VARIANTS=seesaw,seesaw+l2keep AB_ROUNDS=5 python scripts/ab_cuda.py out.csv
    AB_ROWS=compute (default: rows with >= 128 query rows per kv head) | targets | small | all
    AB_GRAPH=1 adds one CUDA-graph replay time per variant on the rows with b <= 8
    AB_CLOCKS=1 samples the SM clock and board power with nvidia-smi while timing (flashmla.bench.
    clock_log; the samples in OUT.clocks.csv) and reports each variant's median clock and power
    AB_SHAPES="b,s_q,mean,h_q,F|T;..." times these shapes instead of AB_ROWS (no target column)
A variant "schedule:N" computes its metadata for N SMs instead of the GPU's count (more or fewer
scheduler parts; the grid has that many thread blocks), e.g. AB_VARIANTS=auto,auto:264, and
"schedule@K" with the scheduler floor min_blocks_per_part=K (fewer, longer chunks on small
batches), e.g. auto@4 or auto@4:132, and "schedule=split" / "schedule=nosplit" with a column-split
schedule forced on or off (the scheduler's column_split; default: its rule), e.g.
serial+splitcombine=nosplit for `auto` at b = 1 before the column split (docs/kernel-design.md 7.16),
and "schedule%N" with metadata from the Python scheduler charging N blocks per chunk instead of
FIXED_OVERHEAD_BLOCKS (the balance of parts on varied lengths), e.g. auto%3.
A variant "triton" times the Triton backend (its table entry, the same metadata),
"triton/MODULE" the ``decode`` of another module with triton_decode's interface, e.g. an older
copy of flashmla/triton_decode.py saved untracked as flashmla/_ab_baseline.py:
AB_VARIANTS=triton/flashmla._ab_baseline,triton, and "triton@BMxBNxWARPSxSTAGESxDVSPLIT" another
block configuration with the metadata plan, e.g. triton@128x32x8x2x2; "gluon" the Triton backend's
warp-specialised Hopper kernel (flashmla/triton_hopper.py) on every row; "ext/MODULE" the
``decode(q, k, block_table, cache_seqlens, scale, causal, md, ns) -> (out, lse)`` of any importable
module (a same-machine reference built outside the repo, say); "head" DeepSeek FlashMLA at its
pinned commit through the bench's flashmla-head provider (.gpu/flashmla-head, its own metadata made
once outside the timed call); "build/NAME" or "build/NAME/SCHEDULE" our Python glue with the
flashmla._C of another build of this repository in /tmp/NAME (say main's kernels built in
/tmp/base beside a patched working tree; scripts/ab_build_patched.sh makes one from a patch), schedule
`auto` unless named. Variants with a timing probe
(cuda_backend.PROBE_FLAGS, e.g. auto+noload) are timed without the output check: wrong by design.
With only Triton variants
the metadata comes from flashmla.get_mla_metadata (no CUDA build needed; the same tensors).
"""
import contextlib
import datetime
import importlib
import os
import statistics
import sys

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cuda import bench, graph_time, load_shapes, make, write_csv  # noqa: E402

import flashmla  # noqa: E402
from flashmla import cuda_backend, scheduler, triton_configs, triton_decode  # noqa: E402
from flashmla.bench.clock_log import ClockLog  # noqa: E402
from flashmla.triton_configs import KernelConfig  # noqa: E402


def parse_shape(text):
    """'128,1,16384,128,F' -> (b, s_q, mean_seqlen, h_q, varied); a malformed entry names itself."""
    fields = text.strip().split(",")
    if len(fields) != 5 or fields[4] not in ("F", "T") or not all(f.isdigit() for f in fields[:4]):
        raise SystemExit(f"AB_SHAPES entry {text!r} is not b,s_q,mean_seqlen,h_q,F|T")
    b, s_q, mean, h_q = (int(f) for f in fields[:4])
    return b, s_q, mean, h_q, fields[4] == "T"


_HEAD_PROVIDER = []  # one flashmla-head provider (its library loaded once) for every shape


def flashmla_head_runner(shape, q, k, bt, sl):
    """DeepSeek FlashMLA at its pinned commit, as the bench times it (flashmla-head provider)."""
    from flashmla.bench import providers, shapes as bench_shapes
    b, s_q, mean, h_q, varied = shape
    if not _HEAD_PROVIDER:
        _HEAD_PROVIDER.append(providers.FlashMLAHead())
    provider = _HEAD_PROVIDER[0]
    available, why = provider.availability(q.device)
    if not available:
        raise SystemExit(f"variant head: {why}")
    bench_shape = bench_shapes.Shape(b=b, s_q=s_q, seqlen=mean, h_q=h_q, varlen=varied)
    inputs = bench_shapes.BenchInputs(bench_shape, q, k, bt, sl, sl.tolist(), 576 ** -0.5)
    prepared = provider.prepare(inputs)
    return lambda: prepared.outputs(prepared.run())


_OTHER_BUILDS = {}


def other_build_runner(build_dir, schedule, q, k, bt, sl, md, ns):
    """Our decode with the flashmla._C of another build (/tmp/NAME/flashmla/_C*.so) swapped in for the call."""
    if build_dir not in _OTHER_BUILDS:
        import glob
        import importlib.util
        found = glob.glob(os.path.join("/tmp", build_dir, "flashmla", "_C*.so"))
        if not found:
            raise SystemExit(f"variant build/{build_dir}: no flashmla/_C*.so under /tmp/{build_dir}")
        # The module's last name component must stay "_C" (its init function is PyInit__C).
        spec = importlib.util.spec_from_file_location(f"ab_build_{len(_OTHER_BUILDS)}._C", found[0])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _OTHER_BUILDS[build_dir] = module

    def run():
        own = cuda_backend._C
        cuda_backend._C = _OTHER_BUILDS[build_dir]
        try:
            return cuda_backend.decode(q, k, bt, sl, 576 ** -0.5, q.shape[1] > 1, md, ns, schedule=schedule)
        finally:
            cuda_backend._C = own
    return run


def variant_runner(v, shape, q, k, bt, sl, props, no_cuda_build=False):
    """The call that variant ``v`` (see the module docstring) times on these tensors, with its
    metadata made here, outside the timed call."""
    s_q, h_q = shape[1], shape[3]
    schedule, _, sms = v.partition(":")
    num_sms = int(sms or props.multi_processor_count)
    schedule, _, split_text = schedule.partition("=")
    column_split = {"": None, "split": True, "nosplit": False}.get(split_text, "bad")
    if column_split == "bad" or (split_text and no_cuda_build):
        raise SystemExit(f"variant {v!r}: '=split' / '=nosplit' only, with the CUDA build's metadata")
    overhead = None
    if "%" in schedule:
        schedule, _, overhead_text = schedule.partition("%")
        overhead = int(overhead_text)
        if no_cuda_build:
            raise SystemExit(f"variant {v!r}: another chunk overhead needs the CUDA build")
    floor = 1
    if "@" in schedule and not schedule.startswith("triton@"):
        schedule, _, floor_text = schedule.partition("@")
        floor = int(floor_text)
        if no_cuda_build:
            raise SystemExit(f"variant {v!r}: a scheduler floor needs the CUDA build's metadata")
    if no_cuda_build:
        md, ns = flashmla.get_mla_metadata(sl, s_q * h_q, 1, num_sms=num_sms)
    elif overhead is not None:  # the Python scheduler's tensors, on the GPU (same format)
        md, ns = scheduler.compute_tile_scheduler_metadata(sl, s_q * h_q, 1, num_sms, floor,
                                                           column_split=column_split, overhead_blocks=overhead)
    else:
        md, ns = cuda_backend.get_mla_metadata_gpu(sl, s_q * h_q, 1, num_sms, floor, column_split)
    if schedule == "gluon":  # the Triton backend's warp-specialised Hopper kernel
        return (lambda md=md, ns=ns: triton_decode.decode_with_config(
            q, k, bt, sl, 576 ** -0.5, s_q > 1, config=triton_configs.GLUON_CONFIG,
            tile_scheduler_metadata=md, num_splits=ns))
    if schedule.startswith("triton@"):
        bm, bn, warps, stages, dv_split = (int(x) for x in schedule[len("triton@"):].split("x"))
        config = KernelConfig(bm, bn, warps, stages, 1, plan="metadata", dv_split=dv_split)
        return (lambda config=config, md=md, ns=ns: triton_decode.decode_with_config(
            q, k, bt, sl, 576 ** -0.5, s_q > 1, config=config, tile_scheduler_metadata=md, num_splits=ns))
    if schedule == "head":
        return flashmla_head_runner(shape, q, k, bt, sl)
    if schedule.startswith("build/"):
        build_dir, _, build_schedule = schedule[len("build/"):].partition("/")
        return other_build_runner(build_dir, build_schedule or "auto", q, k, bt, sl, md, ns)
    if schedule.startswith(("triton", "ext/")):
        module = importlib.import_module(schedule.partition("/")[2] or "flashmla.triton_decode")
        return (lambda module=module, md=md, ns=ns:
                module.decode(q, k, bt, sl, 576 ** -0.5, s_q > 1, md, ns))
    return (lambda schedule=schedule, md=md, ns=ns:
            cuda_backend.decode(q, k, bt, sl, 576 ** -0.5, s_q > 1, md, ns, schedule=schedule))


def check_variants_agree(fns, variants, shape):
    """A coarse guard (tests/test_cuda.py checks each against the reference): every variant's
    output close to the first's, except timing probes (wrong by design)."""
    ref, _ = fns[variants[0]]()
    for v in variants[1:]:
        out, _ = fns[v]()
        if set(v.partition(":")[0].split("+")) & set(cuda_backend.PROBE_FLAGS):
            print(f"  {v}: a timing probe, its output is wrong by design and is not checked", flush=True)
            continue
        if not (out.float() - ref.float()).abs().max().item() <= 5e-2 * ref.float().abs().max().item():
            sys.exit(f"variant {v} gives a different output on {shape}")


def rotated(variants, r):
    """Round r's order: the variants rotated by r, so that none is always timed first."""
    return variants[r % len(variants):] + variants[:r % len(variants)]


def main():
    out_csv = sys.argv[1] if len(sys.argv) > 1 else "ab_cuda.csv"
    variants = os.environ.get("AB_VARIANTS", "auto,seesaw").split(",")
    rounds = int(os.environ.get("AB_ROUNDS", "5"))
    which = os.environ.get("AB_ROWS", "compute")
    if os.environ.get("AB_SHAPES"):
        shapes = [(parse_shape(text), float("nan"), float("nan"), float("nan"))
                  for text in os.environ["AB_SHAPES"].split(";")]
    else:
        shapes = load_shapes("targets" if which == "compute" else which)
        if which == "compute":
            shapes = [s for s in shapes if s[0][1] * s[0][3] >= 128]
    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    no_cuda_build = all(v.startswith(("triton", "gluon", "ext/", "head")) for v in variants)  # metadata from flashmla then
    print(f"GPU {props.name}, torch {torch.__version__}, triton {triton.__version__}; {rounds} rounds; "
          f"variants {variants}", flush=True)
    head = f"{'shape':<22}" + "".join(f"{v[:20]:>22}" for v in variants) + f"{'target':>9}"
    print(head)
    clocks = ClockLog.start(out_csv + ".clocks.csv") if os.environ.get("AB_CLOCKS") == "1" else None
    rows = []
    for shape, _fm, _fi, target in shapes:
        b, s_q, mean, h_q, varied = shape
        q, k, bt, sl, _ = make(*shape, device)
        fns = {v: variant_runner(v, shape, q, k, bt, sl, props, no_cuda_build) for v in variants}
        check_variants_agree(fns, variants, shape)
        times = {v: [] for v in variants}
        for r in range(rounds):
            order = rotated(variants, r)
            for v in order:
                with clocks.window((shape, v)) if clocks else contextlib.nullcontext():
                    times[v].append(bench(fns[v]))
        med = {v: statistics.median(t) for v, t in times.items()}
        # AB_GRAPH=1: also one CUDA-graph replay time per variant at b <= 8, where an eager call
        # can be bound by host time (the difference is host time, not kernel time)
        graph = {v: graph_time(fns[v]) if os.environ.get("AB_GRAPH") == "1" and b <= 8 else float("nan")
                 for v in variants}
        wins = {v: sum(t < t0 for t, t0 in zip(times[v], times[variants[0]])) for v in variants}
        label = f"{b},{s_q},{mean},{h_q},{'var' if varied else 'fix'}"
        cells = [f"{med[variants[0]]:.4f}"] + [f"{med[v]:.4f} {med[v] / med[variants[0]]:5.3f} {wins[v]}/{rounds}"
                                                for v in variants[1:]]
        print(f"{label:<22}" + "".join(f"{c:>22}" for c in cells) + f"{target:9.4f}", flush=True)
        if graph[variants[0]] == graph[variants[0]]:
            print(f"{'  (graph)':<22}" + "".join(f"{graph[v]:>22.4f}" for v in variants), flush=True)
        # AB_CLOCKS=1: each variant's median SM clock and board power over its timings of this shape
        clock = {v: clocks.stats((shape, v)) for v in variants} if clocks else {}
        if clocks:
            print(f"{'  (MHz, W)':<22}" + "".join(f"{clock[v]['sm_mhz']:>15.0f} {clock[v]['power_w']:>6.0f}"
                                                   for v in variants), flush=True)
        for v in variants:
            rows.append(dict(gpu=props.name, torch=torch.__version__, date=datetime.date.today().isoformat(),
                             b=b, s_q=s_q, mean_seqlen=mean, h_q=h_q, varied=varied, variant=v,
                             median_ms=round(med[v], 5), graph_ms=round(graph[v], 5), ratio_vs_first=round(med[v] / med[variants[0]], 4),
                             rounds_faster_than_first=wins[v], rounds=rounds,
                             all_ms=" ".join(f"{t:.5f}" for t in times[v]), target_ms=target,
                             **({"sm_mhz": round(clock[v]["sm_mhz"], 1), "power_w": round(clock[v]["power_w"], 1),
                                 "clock_samples": clock[v]["samples"]} if clocks else {})))
        del q, k, bt, sl
    if clocks:
        clocks.stop()
    write_csv(out_csv, rows)
    for v in variants[1:]:
        ratios = [r["ratio_vs_first"] for r in rows if r["variant"] == v]
        geo = statistics.geometric_mean(ratios)
        print(f"{v}: time / {variants[0]} geomean {geo:.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}) "
              f"over {len(ratios)} shapes")
    print(f"wrote {out_csv}")


if __name__ == "__main__":
    main()
