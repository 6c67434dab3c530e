#!/usr/bin/env python3
"""Experiment: how much slack should the scheduler's whole-request rule allow?

For equal-length batches the scheduler (flashmla/scheduler.py) gives every part k whole
requests when k * w <= P + slack units (w = blocks + OVERHEAD, P = ceil(T / parts)), so that no
request is split and no fp32 partials are written and merged. The first version used slack =
OVERHEAD (never worse than the balanced schedule's own bound). A split request costs more than
the bound says (its partials are written, read back and merged), so a larger slack may pay.
Run 9 (H100) chose 12: benchmarks/results/cuda_h100_run9_aligned_2026-11-24/.
This times the CUDA backend (schedule "auto") on the fixed-length rows of perf-targets.md with
the Python scheduler's metadata at several slacks, side by side in one process, each row's
first variant timed again at the end (the noise floor), and writes a CSV to argv[1].

    python scripts/bench_whole_requests.py out.csv
"""
import datetime
import os
import sys

import torch
import triton

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cuda import bench, load_shapes, make, write_csv  # noqa: E402

from flashmla import cuda_backend, scheduler  # noqa: E402

SLACKS = [-1, scheduler.FIXED_OVERHEAD_BLOCKS, 12, 20, 40]  # 12 = WHOLE_REQUEST_SLACK_BLOCKS  # -1: the rule off (balanced cuts only)


def main():
    out_csv = sys.argv[1] if len(sys.argv) > 1 else "whole_requests.csv"
    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    shapes = [s for s in load_shapes("all") if not s[0][4] and s[0][0] >= 32]
    print(f"GPU {props.name}, torch {torch.__version__}, triton {triton.__version__}; slacks {SLACKS}", flush=True)
    print(f"{'shape':<22}" + "".join(f"{'slack ' + str(s):>12}" for s in SLACKS) + f"{'again':>10}{'target':>9}")
    rows = []
    for shape, _fm, _fi, target in shapes:
        b, s_q, mean, h_q, varied = shape
        q, k, bt, sl, _ = make(*shape, device)
        times, seen = {}, {}
        for slack in SLACKS + [SLACKS[0]]:
            md, ns = scheduler.compute_tile_scheduler_metadata(sl, s_q * h_q, 1, props.multi_processor_count,
                                                               whole_request_slack=slack)
            key = (md.cpu().numpy().tobytes(), ns.cpu().numpy().tobytes())
            max_chunks = int((ns[1:] - ns[:-1]).max())
            fn = lambda: cuda_backend.decode(q, k, bt, sl, 576 ** -0.5, s_q > 1, md, ns)  # noqa: E731
            ms = bench(fn)
            label = "again" if slack in times else slack
            times[label] = ms
            seen.setdefault(key, slack)
            rows.append(dict(shape=f"{b},{s_q},{mean},{h_q}", slack=label, same_metadata_as_slack=seen[key],
                             max_chunks=max_chunks, ms=round(ms, 5), target_ms=target, gpu=props.name,
                             torch=torch.__version__, date=datetime.date.today().isoformat()))
        line = f"{b},{s_q},{mean},{h_q}".ljust(22) + "".join(f"{times[s]:12.4f}" for s in SLACKS)
        print(line + f"{times['again']:10.4f}{target:9.4f}", flush=True)
    write_csv(out_csv, rows)
    print(f"wrote {out_csv}")


if __name__ == "__main__":
    main()
