#!/usr/bin/env python3
"""How a kernel's time per call moves in the first second after the GPU was idle (GPU host).

Under the H100's 700 W cap the SM clock falls within a fraction of a second of sustained
tensor-core work, so a timing's result depends on what ran before it: a one-pass bench times
each provider in whatever power state the previous work left, an interleaved A/B times every
variant in the capped steady state. This script shows the transient itself. For each shape and
variant (rounds in rotated order):

  trace  IDLE_S seconds idle, then CALLS calls, each after an L2 clear (a 256 MB zero, as
         triton.testing.do_bench does) and each timed by its own CUDA event pair;
  hot    right after the trace, do_bench (warmup 25 ms, rep 100 ms, median): the steady state;
  cold   IDLE_S seconds idle, then the same do_bench: what a bench with `--settle` measures.

    PT_VARIANTS=auto,head PT_SHAPES="128,2,8192,128,F;128,2,4096,128,T" PT_ROUNDS=3 \
        python scripts/power_transient.py OUT.csv
Variants are scripts/ab_cuda.py's (its variant_runner): schedules of our kernel such as `auto`,
`build/NAME[/SCHEDULE]` (another build of this repository in /tmp/NAME, scripts/ab_build_patched.sh),
`head` (FlashMLA at its pinned commit, .gpu/flashmla-head). With PT_CLOCKS=1 nvidia-smi samples the SM clock and power
every 50 ms during each trace (flashmla.bench.clock_log; a trace of ~0.7 s holds ~14 samples).
Prints the median time of calls in a few index ranges, so the drift reads as one line per
variant; OUT.csv has every call (ms, and ms since the trace's first call).

    python scripts/power_transient.py --plot OUT.png A.csv [B.csv ...]   (no GPU needed)
draws every trace (time per call against time since the idle ended), one panel per shape, with
the stretch that a do_bench started at the trace's first call would time shaded.
"""
import contextlib
import csv
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab_cuda import check_variants_agree, parse_shape, rotated, variant_runner  # noqa: E402
from bench_cuda import bench, make, write_csv  # noqa: E402

from flashmla.bench.clock_log import ClockLog  # noqa: E402
from flashmla.bench.runner import settle  # noqa: E402

RANGES = ((0, 10), (10, 50), (50, 150), (150, 300), (300, 10 ** 9))


def trace(fn, calls, l2):
    """Per-call times (ms) and start offsets (ms from the first call) of `calls` back-to-back calls."""
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(calls)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(calls)]
    for i in range(calls):
        l2.zero_()
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in zip(starts, ends)], [starts[0].elapsed_time(s) for s in starts]


def plot(png, csv_paths):
    """One panel per shape: each round's per-call times against time since the idle ended."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    traces = {}  # shape -> (variant, round) -> [(t_ms, ms)]
    for path in csv_paths:
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                traces.setdefault(r["shape"], {}).setdefault((r["variant"], int(r["round"])), []).append(
                    (float(r["t_ms"]), float(r["ms"])))
    cols = min(3, len(traces))
    rows = -(-len(traces) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    colours = {}
    for ax, (shape, by_run) in zip(axes.flat, traces.items()):
        for (variant, rnd), points in sorted(by_run.items()):
            colour = colours.setdefault(variant, f"C{len(colours)}")
            ax.plot([t for t, _ in points], [m for _, m in points], lw=0.7, color=colour,
                    label=variant if rnd == 0 else None)
        per_call = statistics.median(statistics.median(m for _, m in pts) for pts in by_run.values())
        start = 5 * per_call + 25  # do_bench: ~5 calls to estimate, 25 ms warm-up, then 100 ms timed
        ax.axvspan(start, start + 100, color="0.85", zorder=0, label="do_bench's timed 100 ms")
        later = sorted(m for pts in by_run.values() for _, m in pts[1:])  # the first call pays set-up
        ax.set_ylim(later[0] * 0.98, later[-1] * 1.02)
        ax.set_title(shape.replace(",fix", " fixed").replace(",var", " varied"), fontsize=9)
        ax.set_xlabel("ms since the idle ended")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("ms per call (L2 cleared before each)")
    for ax in axes.flat[len(traces):]:
        ax.axis("off")
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Time per call from idle into the 700 W cap (H100; b, s_q, mean len, h_q)", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}")


def main():
    if len(sys.argv) > 3 and sys.argv[1] == "--plot":
        return plot(sys.argv[2], sys.argv[3:])
    out_csv = sys.argv[1] if len(sys.argv) > 1 else "power_transient.csv"
    variants = os.environ.get("PT_VARIANTS", "auto,head").split(",")
    shapes = [parse_shape(t) for t in os.environ.get("PT_SHAPES", "128,2,8192,128,F").split(";")]
    rounds = int(os.environ.get("PT_ROUNDS", "3"))
    calls = int(os.environ.get("PT_CALLS", "600"))
    idle_s = float(os.environ.get("PT_IDLE_S", "1.5"))
    clocks = ClockLog.start(out_csv + ".clocks.csv") if os.environ.get("PT_CLOCKS") == "1" else None
    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    l2 = torch.empty(256 * 1024 * 1024, dtype=torch.int8, device=device)
    print(f"GPU {props.name}, torch {torch.__version__}; {rounds} rounds, {calls} calls per "
          f"trace, {idle_s} s idle before each trace and each cold do_bench", flush=True)
    ranges = [r for r in RANGES if r[0] < calls]
    head = "".join(f"{f'[{lo},{min(hi, calls)})':>12}" for lo, hi in ranges)
    rows = []
    for shape in shapes:
        q, k, bt, sl, _ = make(*shape, device)
        fns = {v: variant_runner(v, shape, q, k, bt, sl, props) for v in variants}
        check_variants_agree(fns, variants, shape)
        label = ",".join(str(x) for x in shape[:4]) + (",var" if shape[4] else ",fix")
        print(f"\n{label}: median ms of the calls in each index range after {idle_s} s idle; "
              f"then do_bench cold (after idle) and hot (right after the trace)", flush=True)
        print(f"{'variant':<10}{'round':>6}" + head + f"{'cold':>10}{'hot':>10}" + ("   MHz / W in trace" if clocks else ""))
        summary = {v: {"cold": [], "hot": [], "ranges": [[] for _ in ranges]} for v in variants}
        for r in range(rounds):
            for v in rotated(variants, r):
                fns[v]()  # any lazy set-up out of the trace
                settle(device, idle_s)
                with clocks.window((label, v, r)) if clocks else contextlib.nullcontext():
                    ms, t0 = trace(fns[v], calls, l2)
                hot = bench(fns[v])
                settle(device, idle_s)
                cold = bench(fns[v])
                meds = [statistics.median(ms[lo:hi]) for lo, hi in ranges]
                for i, m in enumerate(meds):
                    summary[v]["ranges"][i].append(m)
                summary[v]["cold"].append(cold)
                summary[v]["hot"].append(hot)
                clock_text = ""
                if clocks:
                    c = clocks.stats((label, v, r))
                    clock_text = f"   {c['sm_mhz']:.0f} / {c['power_w']:.0f} ({c['samples']} samples)"
                print(f"{v:<10}{r:>6}" + "".join(f"{m:>12.4f}" for m in meds) + f"{cold:>10.4f}{hot:>10.4f}" + clock_text,
                      flush=True)
                for i, (m, t) in enumerate(zip(ms, t0)):
                    rows.append(dict(shape=label, variant=v, round=r, call=i, ms=round(m, 5), t_ms=round(t, 3),
                                     cold_ms=round(cold, 5), hot_ms=round(hot, 5)))
        for v in variants:
            s = summary[v]
            print(f"{v:<10}{'med':>6}" + "".join(f"{statistics.median(x):>12.4f}" for x in s["ranges"])
                  + f"{statistics.median(s['cold']):>10.4f}{statistics.median(s['hot']):>10.4f}", flush=True)
        del q, k, bt, sl, fns
    if clocks:
        clocks.stop()
    write_csv(out_csv, rows)
    print(f"wrote {out_csv} ({len(rows)} calls)")


if __name__ == "__main__":
    main()
