#!/usr/bin/env python3
"""Host time of one eager Triton-backend call, split by function (cProfile, self time).

At b = 1 the eager call can be bound by host time: do_bench clears L2 (a ~90 us memset) before
each call, and a call whose Python + launch work takes longer than that shows the excess in the
eager time (docs/triton-kernel.md). Prints, per small-batch shape, eager / CUDA-graph / host
microseconds for the Triton and CUDA backends through the public API, then the top functions by
self time over 300 eager Triton calls of the first shape.

    python scripts/triton_host_probe.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cuda import bench, graph_time  # noqa: E402
from triton_eager_probe import gpu_us, host_us, profile_calls  # noqa: E402

from flashmla.bench import providers as P  # noqa: E402
from flashmla.bench.shapes import Shape, make_inputs  # noqa: E402

SHAPES = [Shape(b=1, s_q=1, seqlen=4096, h_q=128), Shape(b=1, s_q=1, seqlen=16384, h_q=128),
          Shape(b=8, s_q=1, seqlen=1024, h_q=128), Shape(b=1, s_q=1, seqlen=1024, h_q=128),
          Shape(b=1, s_q=2, seqlen=4096, h_q=128)]
if os.environ.get("PROBE_SHAPES"):  # e.g. "1,1,1024,128;1,2,4096,128"
    from flashmla.bench.shapes import parse_shape
    SHAPES = [parse_shape(spec) for spec in os.environ["PROBE_SHAPES"].split(";")]


def main():
    from flashmla import triton_decode
    device = torch.device("cuda")
    runs = {}
    for shape in SHAPES:
        inputs = make_inputs(shape, device)
        for backend in ("triton", "cuda"):
            run = P.FlashMLAOurs(backend).prepare(inputs).run
            runs[(shape, backend)] = run
            before = dict(triton_decode.LAUNCH_COUNTS)
            eager = bench(run)
            launches = {k: v - before[k] for k, v in triton_decode.LAUNCH_COUNTS.items()}
            print(f"{shape} {backend}: eager {eager * 1e3:.1f} us, graph {graph_time(run) * 1e3:.1f} us, "
                  f"host {host_us(run):.1f} us/call, GPU {gpu_us(run):.1f} us/call (queue kept full)" +
                  (f", launches while timing eager: {launches}" if backend == "triton" else ""), flush=True)
    for shape in SHAPES[:1] + SHAPES[-1:]:
        print(f"--- cProfile of 300 eager Triton calls, {shape}")
        print(profile_calls(runs[(shape, "triton")], "tottime", 25))


if __name__ == "__main__":
    sys.exit(main())
