#!/usr/bin/env python3
"""Why is the Triton backend's eager call slower than its CUDA-graph replay in the full
benchmark (b1 4K h128: 0.105 vs 0.055 ms) but not in a run with two providers (0.056)?

Times flash_mla_with_kvcache(backend="triton") eager and under a CUDA graph (do_bench, L2
cleared, as flashmla.bench) on a few small-batch shapes: first with only flashmla loaded, then
after every other benchmark provider has been prepared on the same shape (FlashInfer, vLLM's
ops). Prints which launch path the Triton backend took (direct relaunch or Triton's own), the
launch hooks, and the top of a cProfile of 300 eager calls in each state.
"""
import cProfile
import gc
import io
import os
import pstats
import statistics
import sys
import threading
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cuda import bench, graph_time  # noqa: E402

from flashmla import triton_decode  # noqa: E402
from flashmla.bench import providers as P  # noqa: E402
from flashmla.bench.shapes import Shape, make_inputs  # noqa: E402

SHAPES = [Shape(b=1, s_q=1, seqlen=4096, h_q=128), Shape(b=1, s_q=1, seqlen=4096, h_q=16),
          Shape(b=8, s_q=1, seqlen=1024, h_q=128)]


def timed(fn):
    """(eager, CUDA-graph replay) ms, as scripts/bench_cuda.py takes them."""
    return bench(fn), graph_time(fn)


def host_us(fn, n=200):
    """Host time of one call while the GPU is kept busy (so no call waits for the GPU)."""
    fn()
    torch.cuda.synchronize()
    torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU work queued ahead
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    dt = (time.perf_counter() - t0) / n * 1e6
    torch.cuda.synchronize()
    return dt


def gpu_us(fn, n=200):
    """GPU time of one eager call with the launch queue kept full (a sleep kernel ahead of each
    start event), so host time cannot show; median of n. Compare with do_bench's eager time:
    a gap means the eager time waited for the host."""
    times = []
    for _ in range(n):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(2_000_000)  # ~1 ms of GPU work queued ahead
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return statistics.median(times)


def profile_calls(fn, sort, lines, n=300):
    """cProfile of n calls of fn while the GPU is kept busy (so no call waits for it), as text."""
    prof = cProfile.Profile()
    torch.cuda.synchronize()
    torch.cuda._sleep(400_000_000)
    prof.enable()
    for _ in range(n):
        fn()
    prof.disable()
    torch.cuda.synchronize()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats(sort).print_stats(lines)
    return out.getvalue()


def probe(label, inputs_by_shape):
    hooks = triton_decode._launch_hooks()
    print(f"== {label}: hooks {[getattr(h, 'calls', h) for h in hooks]}, compiled kept "
          f"{len(triton_decode._COMPILED)}, threads {threading.active_count()}, gc objects {len(gc.get_objects())}")
    for shape, inputs in inputs_by_shape:
        run = P.FlashMLAOurs("triton").prepare(inputs).run
        eager, graph = timed(run)
        print(f"  {shape}: eager {eager:.4f} ms, graph {graph:.4f} ms, host {host_us(run):.1f} us/call")
    shape, inputs = inputs_by_shape[0]
    run = P.FlashMLAOurs("triton").prepare(inputs).run
    fast = triton_decode.FAST_LAUNCH
    triton_decode.FAST_LAUNCH = False
    print(f"  Triton's own launch path: eager {timed(run)[0]:.4f} ms, host {host_us(run):.1f} us/call")
    triton_decode.FAST_LAUNCH = fast
    x = torch.empty(1 << 20, device="cuda")
    print(f"  one torch op (x.add_(1)): host {host_us(lambda: x.add_(1)):.1f} us/call")
    shape, inputs = inputs_by_shape[0]
    run = P.FlashMLAOurs("triton").prepare(inputs).run
    print(profile_calls(run, "cumulative", 8)[-1500:])


def main():
    device = torch.device("cuda")
    inputs_by_shape = [(s, make_inputs(s, device)) for s in SHAPES]
    probe("flashmla alone", inputs_by_shape)
    for prov in P.get_providers():
        ok, why = prov.availability(device)
        print(f"provider {prov.name}: {ok} {why}")
        if ok and prov.name not in ("flashmla-triton", "torch"):
            for _, inputs in inputs_by_shape:
                prep = prov.prepare(inputs)
                timed(prep.run)
    probe("after the other providers", inputs_by_shape)
    gc.collect()
    gc.freeze()
    probe("after gc.freeze()", inputs_by_shape)


if __name__ == "__main__":
    sys.exit(main())
