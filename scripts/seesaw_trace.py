#!/usr/bin/env python3
"""Timeline of the seesaw kernel's two-block steps, from an instrumented build.

Build and run on a Hopper host (docs/kernel-design.md section 7):
    FLASHMLA_BUILD_CUDA=1 FLASHMLA_NVCC_EXTRA=-DFLASHMLA_SEESAW_TRACE \
        python setup.py build_ext --inplace --build-temp build/trace
    TRACE_SCHEDULE=seesaw python scripts/seesaw_trace.py [b s_q mean_seqlen h_q]
    TRACE_LIFE=1 ...: instead, one thread block's life from entry to exit (small batches)
    TRACE_VARIED=1 ...: FlashMLA's varied lengths (testing.flashmla_varied_lengths) around the mean
    TRACE_SAVE=path.pt ...: also save the raw clock64 trace [blocks, 2, steps, events] (int64) with
        the shape, so per-sample orderings can be checked (the medians below are per event)
    rm flashmla/_C*.so   # so that the next normal build relinks the uninstrumented kernel

Prints, per warpgroup, the median clock (SM cycles) of each event relative to the start of the
step, over every thread block and the steady-state steps, and the median step period; then what
a boundary between two requests of a part costs, segment by segment (events 13-18).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout
from flashmla import cuda_backend, testing  # noqa: E402

EVENTS = {  # event index -> meaning, per warpgroup (csrc/mla_decode_seesaw.cuh, SEESAW_TRACE)
    0: ("step start", "step start"),
    1: ("first K box of A landed", "first K box of B landed"),
    2: ("S_A retired", "S_B retired"),
    9: ("softmax arithmetic done", "softmax arithmetic done"),
    11: ("P_A and stats stored (before the proxy fence)", "P_B and stats stored (before the proxy fence)"),
    12: ("last K box of A landed, S_A issued", "last K box of B landed, S_B issued"),
    10: ("proxy fence done", "proxy fence done"),
    5: ("m1,s1,P_B received", "m0,s0,P_A received"),
    3: ("softmax done, m0/s0/P_A out", "softmax done, m1/s1/P_B out"),
    4: ("P_A V_A,left issued", "P_A V_A,right issued"),
    6: ("P_A V_A,left retired", "P_A V_A,right retired"),
    7: ("P_B V_B,left issued", "P_B V_B,right issued"),
    8: ("P_B V_B,left retired", "P_B V_B,right retired"),
}


def main():
    b, s_q, mean, h_q = (int(x) for x in sys.argv[1:5]) if len(sys.argv) >= 5 else (128, 2, 8192, 128)
    schedule = os.environ.get("TRACE_SCHEDULE", "seesaw")
    device = torch.device("cuda")
    varied = os.environ.get("TRACE_VARIED") == "1"
    seqlens = testing.flashmla_varied_lengths(b, mean, s_q) if varied else [mean] * b
    inputs = testing.make_decode_inputs(seqlens, s_q, h_q, 1, torch.bfloat16, device)
    q, k, bt, sl = inputs.q, inputs.k_cache, inputs.block_table, inputs.cache_seqlens
    md, ns = cuda_backend.get_mla_metadata_gpu(sl, s_q * h_q, 1, torch.cuda.get_device_properties(0).multi_processor_count)
    for _ in range(3):
        cuda_backend.decode(q, k, bt, sl, 576 ** -0.5, s_q > 1, md, ns, schedule=schedule)
    torch.cuda.synchronize()
    trace = cuda_backend._C.seesaw_trace()
    if trace.numel() == 0:
        sys.exit("seesaw_trace: flashmla._C is not an instrumented build (-DFLASHMLA_SEESAW_TRACE)")
    num_blocks = md.shape[0] * ((s_q * h_q + 63) // 64)
    seqlen = f"{mean} (varied)" if varied else str(mean)  # as the reports print it
    if os.environ.get("TRACE_SAVE"):
        torch.save({"trace": trace[:num_blocks].cpu(), "shape": (b, s_q, mean, h_q), "varied": varied,
                    "schedule": schedule, "seqlens": seqlens}, os.environ["TRACE_SAVE"])
    if os.environ.get("TRACE_LIFE") == "1":  # small batches: one thread block's life, entry to exit
        lifetime(trace[:num_blocks].double(), b, s_q, seqlen, h_q, schedule)
        return
    steps = trace.shape[2]
    t = trace[:num_blocks, :, 2:steps - 1].double()  # skip the pipeline fill and the clamped last slot
    start = t[:, 0:1, :, 0:1]  # WG0's step start
    rel = t - start
    period = (t[:, 0, 1:, 0] - t[:, 0, :-1, 0]).flatten().median().item()
    print(f"shape b={b} s_q={s_q} seqlen={seqlen} h_q={h_q}, schedule {schedule}: {num_blocks} thread blocks, "
          f"steps 2..{steps - 2}")
    print(f"median step period (two 64-token blocks): {period:.0f} cycles")
    # Each event's median offset is taken on its own, so the lists below are not one consistent
    # timeline (events of the two warpgroups can even appear inverted). The segment durations
    # after them are medians of per-sample differences between consecutive events of a warpgroup.
    for wg in range(2):
        print(f"warpgroup {wg}: median offset of each event from WG0's step start")
        order = sorted(EVENTS, key=lambda e: rel[:, wg, :, e].median().item())
        for e in order:
            print(f"  {rel[:, wg, :, e].median().item():8.0f}  {EVENTS[e][wg]}")
        print(f"warpgroup {wg}: median duration of each segment (per-sample differences)")
        for a, b in zip(order, order[1:]):
            seg = (t[:, wg, :, b] - t[:, wg, :, a]).flatten().median().item()
            print(f"  {seg:8.0f}  {EVENTS[a][wg]} -> {EVENTS[b][wg]}")
    request_boundaries(trace[:num_blocks].double(), period)


# Request-boundary events (slot = request index within the part): 13 top of the iteration, 14 Q
# tile loaded, 15 first S retired (+ahead only), 16 main loop done, 17 row sums exchanged, 18
# output stores issued.
BOUNDARY = [  # (from request, event) -> (to request, event), label; request 0 = the earlier one
    ((0, 16), (0, 17), "main loop done -> row sums exchanged (both warpgroups)"),
    ((0, 17), (0, 18), "-> output stores issued"),
    ((0, 18), (1, 13), "-> next request's iteration starts"),
    ((1, 13), (1, 14), "-> its Q tile loaded"),
    ((1, 14), (1, 15), "-> its first S retired (+ahead)"),
    ((0, 16), (1, 15), "whole boundary: main loop done -> next request's first S retired"),
]


def request_boundaries(t, period):
    """Median duration of each segment of a request boundary, per warpgroup, over every thread
    block and every pair of consecutive requests recorded (slots 0..n-2; the clamped last slot
    is left out)."""
    pairs = t.shape[2] - 2  # request r and r + 1 for r in 0 .. pairs - 1
    print(f"request boundaries (median over thread blocks and request pairs; step period {period:.0f} cycles)")
    for wg in range(2):
        print(f"warpgroup {wg}:")
        for (ra, ea), (rb, eb), label in BOUNDARY:
            a = t[:, wg, ra:ra + pairs, ea]
            b = t[:, wg, rb:rb + pairs, eb]
            ok = (a > 0) & (b > a)  # both events recorded, in order (unused slots hold 0)
            if ok.sum() == 0:
                print(f"  {'-':>8}  {label} (not recorded)")
                continue
            print(f"  {(b - a)[ok].median().item():8.0f}  {label}  ({int(ok.sum())} samples)")


LIFE = [  # events of slot 0 (the first request or step), in the order a thread block with one request passes them
    (21, "metadata read, barriers initialised"), (13, "request's iteration starts"), (14, "Q tile loaded"),
    (16, "main loop done"), (17, "row sums exchanged"), (18, "output stores issued"),
    (22, "exit (its TMA stores done)"),
]


def lifetime(t, b, s_q, seqlen, h_q, schedule):
    """TRACE_LIFE=1: where a thread block's life goes (clock64 cycles, median over the thread
    blocks that had work), and how far apart the thread blocks start and end on the global timer.
    Meant for small batches, where each thread block has one short request."""
    entry_ns, exit_ns = t[:, 0, 0, 20], t[:, 0, 0, 23]
    worked = exit_ns > entry_ns  # empty parts return before their exit event
    if worked.sum() == 0:
        sys.exit("no thread block recorded an exit: not a trace build with events 19-23?")
    w = t[worked]
    first = entry_ns.min()
    print(f"shape b={b} s_q={s_q} seqlen={seqlen} h_q={h_q}, schedule {schedule}: {int(worked.sum())} of "
          f"{t.shape[0]} thread blocks had work")
    print(f"global timer: entries span {(entry_ns.max() - first).item() / 1e3:.2f} us, working blocks "
          f"exit {(exit_ns[worked].min() - first).item() / 1e3:.2f} .. {(exit_ns[worked].max() - first).item() / 1e3:.2f} us "
          f"after the first entry")
    for wg in range(2):
        print(f"warpgroup {wg}: median cycles from entry, and segment by segment")
        entry = w[:, wg, 0, 19]
        prev = entry
        for event, label in LIFE:
            at = w[:, wg, 0, event]
            print(f"  {(at - entry).median().item():8.0f}  {(at - prev).median().item():8.0f}  {label}")
            prev = at
        steps = [(w[:, wg, 0, e] - entry).median().item() for e in (0, 1, 12, 2, 4, 6, 7, 8)]
        if min(steps) < 0:  # a request of one block has no pair step; the slots hold older values
            print("  first pair step: not recorded (no request with two blocks or more)")
            continue
        print("  first pair step (from entry): start, first box, last box/S issued, S retired, PV1 issued, "
              "PV1 retired, PV2 issued, PV2 retired: " + " ".join(f"{x:.0f}" for x in steps))


if __name__ == "__main__":
    main()
