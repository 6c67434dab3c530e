#!/usr/bin/env python3
"""A few small decodes for compute-sanitizer (memcheck/racecheck) and for gpu_cuda.sh's smoke
step (a pipeline deadlock shows up as a timeout): zero-length and padded requests, NaN tails,
garbage block-table slots, h_kv > 1, causal s_q > 1, split and direct paths, each schedule
variant of $SANITIZE_SCHEDULES ("schedule@floor", comma-separated)."""
import os
import sys

import torch

sys.path.insert(0, "tests")
from test_cuda import make_inputs, run_cuda  # noqa: E402

device = torch.device("cuda")
CASES = [([0, 65, 130, 1], 2, 16, 1, torch.bfloat16, 132),
         ([200, 0, 64], 1, 9, 3, torch.float16, 5),
         ([129], 4, 32, 2, torch.bfloat16, 132),
         ([300, 0, 64, 129], 2, 128, 1, torch.float16, 16),  # 4 m-blocks, few parts: the seesaw's pair steps
         ([700, 0], 1, 128, 1, torch.bfloat16, 132)]  # b2 padded: half-parts (column-split) metadata; `auto` runs serial+tmaout+tmaq on it
# SANITIZE_LONG=1 (the smoke steps; too slow under racecheck): parts of 16-40 blocks, i.e. many
# refills of every stage, which a pipeline whose barrier phases drift apart needs before it hangs
# (the short cases above finish first: session 12's +mcast passed them and hung on real shapes).
LONG_CASES = [([1000, 2500, 0, 700], 1, 128, 1, torch.bfloat16, 4),
              ([2000, 1500], 2, 128, 1, torch.float16, 8)]
for i, (lens, s_q, h_q, h_kv, dtype, num_sms) in enumerate(CASES + (LONG_CASES if os.environ.get("SANITIZE_LONG") == "1" else [])):
    q, k, bt, sl = make_inputs(lens, s_q, h_q, h_kv, dtype, device, seed=i)
    # "schedule@floor": a main-loop schedule (with flags) and the scheduler floor (default 1).
    for variant in os.environ.get("SANITIZE_SCHEDULES", "serial,pipelined,chained+splitcombine@4,seesaw,seesaw+ahead").split(","):
        schedule, _, floor = variant.partition("@")
        out, lse = run_cuda(q, k, bt, sl, s_q > 1, num_sms, schedule=schedule, min_blocks_per_part=int(floor or 1))
        torch.cuda.synchronize()
        print(f"case {i} {variant}: out finite={bool(torch.isfinite(out).all())}")
