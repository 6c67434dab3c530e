"""Timing as shared/perf-targets.md prescribes, so our numbers compare with the anchors.

On a GPU: ``triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")`` of the whole
Python call; do_bench zeroes a 256 MB buffer before every call (L2 cleared) and times each call
with CUDA events. Without Triton, an equivalent loop is used. For small batches the launch
overhead matters, so the same call is also captured in a CUDA graph and its replay is timed.
On the CPU (the CI pipeline check) a wall-clock median of a few calls stands in; those numbers
only prove the pipeline runs.

Python's cyclic garbage collector is paused while a call is timed (after one full collection), as
``timeit`` does: otherwise the host time of a small-batch eager call depends on how many objects
earlier providers left in the process (measured: the Triton backend's b1 4K h128 eager call
0.056 ms alone, 0.114 ms after FlashInfer and vLLM's ops were loaded, 0.056 again after
``gc.freeze()``; scripts/triton_eager_probe.py). vLLM freezes the collector after start-up
for the same reason.
"""
from __future__ import annotations

import contextlib
import gc
import statistics
import time
from typing import Callable, Iterator

import torch

WARMUP_MS = 25
REP_MS = 100


def _triton_do_bench():
    try:
        from triton.testing import do_bench
        return do_bench
    except Exception:  # pragma: no cover - Triton missing or broken
        return None


def method_name(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu wall-clock median (pipeline check only)"
    if _triton_do_bench() is not None:
        return "triton.testing.do_bench median, L2 cleared"
    return "CUDA events median, L2 cleared (Triton missing)"


def _events_bench(fn: Callable[[], object], warmup_ms: float, rep_ms: float) -> float:
    """do_bench's method without Triton: estimate, warm up, then time each call with events,
    zeroing a 256 MB buffer (larger than any Hopper L2) before each call."""
    cache = torch.empty(256 * 1024 * 1024 // 4, dtype=torch.int32, device="cuda")
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        cache.zero_()
        fn()
    end.record()
    torch.cuda.synchronize()
    estimate = max(start.elapsed_time(end) / 5, 1e-3)
    n_warmup, n_repeat = max(1, int(warmup_ms / estimate)), max(1, int(rep_ms / estimate))
    for _ in range(n_warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(n_repeat)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(n_repeat)]
    for s, e in zip(starts, ends):
        cache.zero_()
        s.record()
        fn()
        e.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Collect once, then keep the cyclic garbage collector off until the block ends."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def bench_ms(fn: Callable[[], object], device: torch.device, warmup_ms: float = WARMUP_MS,
             rep_ms: float = REP_MS, cpu_reps: int = 3) -> float:
    """Median milliseconds of one call of ``fn`` (garbage collector paused while timing)."""
    if device.type == "cuda":
        do_bench = _triton_do_bench()
        with gc_paused():
            if do_bench is not None:
                return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))
            return _events_bench(fn, warmup_ms, rep_ms)
    times = []
    for _ in range(max(1, cpu_reps)):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_graph_ms(fn: Callable[[], object], device: torch.device, warmup_ms: float = WARMUP_MS,
                   rep_ms: float = REP_MS) -> float:
    """Median milliseconds of replaying a CUDA graph that holds one call of ``fn``.

    The call is run a few times on a side stream first (allocator and lazy initialisation
    must happen outside capture). Raises if ``fn`` cannot be captured (host syncs, allocations
    the graph cannot hold, ...); the caller records that as the reason."""
    if device.type != "cuda":
        raise RuntimeError("CUDA graphs need a CUDA device")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    torch.cuda.synchronize()
    try:
        return bench_ms(graph.replay, device, warmup_ms, rep_ms)
    finally:
        del graph
