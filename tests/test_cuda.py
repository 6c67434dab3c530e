"""Tests of the sm90a CUDA backend (csrc/, flashmla/cuda_backend.py).

GPU tests (marked ``gpu``; they also need the extension built and an sm_90 device, and say so
when skipped): the GPU scheduler is bit-identical to flashmla.scheduler; the kernel matches the
fp32 reference on the foundation grid (h_q not a multiple of 64, h_kv > 1, s_q > 1 causal,
zero-length requests, NaN in unused cache rows, garbage block-table slots, forced splits) and
on the benchmark shapes; CUDA-graph replay of a padded batch equals eager. Every case draws
fresh random data. CPU tests check what can be checked without a GPU.

Tolerances (issue 4): out within abs 1e-3 or rel 2e-2 elementwise and cosine distance <= 1e-5;
lse relative error <= 1e-4, measured as |lse - ref| / max(|ref|, 1): lse is a logarithm and can
sit arbitrarily close to 0 (a row that sees one key has lse = score * scale ~ 1e-3), where a pure
relative error only measures fp32 rounding of the dot product; below 1 the bound is absolute.
Rows with nothing to attend give out = 0 and lse = +inf exactly.
"""
from __future__ import annotations

import math
import random

import pytest
import torch

from flashmla import cuda_backend, reference, scheduler, testing

PAGE = 64
GARBAGE_IDS = (2**31 - 77, -5, 1234567)


def _skip_reason():
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    ok, why = cuda_backend.is_available(torch.device("cuda"))
    return None if ok else why


def _device():
    reason = _skip_reason()
    if reason:
        pytest.skip(f"CUDA backend unavailable: {reason}")
    return torch.device("cuda", torch.cuda.current_device())


def make_inputs(seqlens, s_q, h_q, h_kv, dtype, device, seed, spare_pages=2):
    """Random paged inputs drawn on ``device``: pages permuted, NaN in every cache row that no
    request uses (tails of last pages and spare pages), garbage block-table slots."""
    gen = torch.Generator(device=device).manual_seed(seed)
    host = torch.Generator().manual_seed(seed)
    pages = [math.ceil(n / PAGE) for n in seqlens]
    num_blocks = sum(pages) + spare_pages
    cols = max(pages + [1]) + 1

    def rand(*shape):
        return (torch.randn(*shape, generator=gen, device=device) / 10).clamp_(-1, 1).to(dtype)

    k_cache = rand(num_blocks, PAGE, h_kv, 576)
    q = rand(len(seqlens), s_q, h_q, 576)
    perm = torch.randperm(num_blocks, generator=host)
    table = torch.empty(len(seqlens), cols, dtype=torch.int32)
    for j in range(cols):
        table[:, j] = GARBAGE_IDS[j % len(GARBAGE_IDS)]
    used = torch.zeros(num_blocks, PAGE, dtype=torch.bool)
    pos = 0
    for i, (n, npg) in enumerate(zip(seqlens, pages)):
        ids = perm[pos:pos + npg]
        pos += npg
        table[i, :npg] = ids.to(torch.int32)
        used[ids] = True
        if n % PAGE:
            used[ids[-1], n % PAGE:] = False
    k_cache[~used.to(device)] = float("nan")
    return q, k_cache, table.to(device), torch.tensor(seqlens, dtype=torch.int32, device=device)


def check_against_reference(out, lse, ref_out, ref_lse, what=""):
    assert out.shape == ref_out.shape and lse.shape == ref_lse.shape, what
    assert not torch.isnan(out).any(), f"NaN in out {what}"
    assert not torch.isnan(lse).any(), f"NaN in lse {what}"
    empty = torch.isinf(ref_lse)
    assert torch.equal(torch.isinf(lse) & (lse > 0), empty), f"rows with nothing to attend differ {what}"
    assert bool((out[empty.transpose(1, 2)] == 0).all()), f"empty rows must have out = 0 {what}"
    o, r = out.double(), ref_out.double()
    bad = ((o - r).abs() > 1e-3) & ((o - r).abs() > 2e-2 * r.abs())
    assert not bad.any(), (f"{int(bad.sum())} elements outside abs 1e-3 / rel 2e-2, max abs err "
                           f"{(o - r).abs().max().item():.3e} {what}")
    if r.norm() > 0:
        cos = torch.nn.functional.cosine_similarity(o.flatten(), r.flatten(), dim=0).item()
        assert 1 - cos <= 1e-5, f"cosine distance {1 - cos:.3e} > 1e-5 {what}"
    finite = ~empty
    if finite.any():
        rel = ((lse[finite].double() - ref_lse[finite].double()).abs() / ref_lse[finite].double().abs().clamp_min(1.0))
        assert rel.max().item() <= 1e-4, f"lse rel error {rel.max().item():.3e} > 1e-4 {what}"


def run_cuda(q, k, bt, sl, causal, num_sms=None, scale=576 ** -0.5, schedule=None, min_blocks_per_part=1,
             column_split=None):
    """The CUDA backend with the GPU scheduler's metadata. An explicit "+colsplit" schedule gets a
    column-split schedule (column_split=True) unless column_split says otherwise, so that its split
    path runs on every shape; otherwise the scheduler's rule decides."""
    b, s_q, h_q, _ = q.shape
    h_kv = k.shape[2]
    if num_sms is None:
        num_sms = torch.cuda.get_device_properties(q.device).multi_processor_count
    if column_split is None and schedule is not None and "colsplit" in schedule.split("+"):
        column_split = True
    md, ns = cuda_backend.get_mla_metadata_gpu(sl, s_q * h_q // h_kv, h_kv, num_sms, min_blocks_per_part,
                                               column_split)
    return cuda_backend.decode(q, k, bt, sl, scale, causal, md, ns, schedule=schedule)


# Kernel variants under evaluation (docs/kernel-design.md section 6): (schedule, scheduler floor).
# Each must match the reference on the whole foundation grid before its timings mean anything.
SEESAW_AUTO = 32768 | 65536 | 1048576  # +tmaout +tmaq +overlapcombine, which "auto" adds to the seesaw
NOMASK = 262144  # +nomask, which "auto" adds with +ahead
EARLYQ = 2097152  # +earlyq, which "auto" adds with +ahead
PVBFIRST = 524288  # +pvbfirst, which "auto" adds with +ahead
AHEAD_AUTO = 512 | NOMASK | EARLYQ | PVBFIRST | 4194304 | 8388608  # what "auto" adds to the seesaw from AUTO_AHEAD_MIN_ROWS_PER_KV on
TMA = 32768 | 65536  # +tmaout +tmaq, which "auto" adds to the serial kernel from AUTO_SERIAL_TMA_MIN_BATCH on

VARIANTS = [("seesaw", 1), ("chained", 1), ("serial+splitcombine", 1), ("auto", 4), ("chained+splitcombine", 8),
            ("seesaw+splitcombine", 4), ("seesaw+l2keep+earlyrefill", 1), ("serial+l2promo128", 1),
            ("serial+wholetile", 1), ("seesaw+wholetile", 1), ("seesaw+ahead", 1), ("seesaw+ahead", 4),
            ("seesaw+tmaout+tmaq", 1), ("seesaw+ahead+tmaout+tmaq", 4), ("seesaw+ahead+tmaout", 1),
            ("seesaw+tmaq", 1), ("serial+colsplit", 1), ("serial+colsplit+splitcombine", 3),
            ("seesaw+ahead+tmaout+tmaq+nomask", 1), ("seesaw+ahead+nomask", 4),
            ("seesaw+ahead+tmaout+tmaq+nomask+pvbfirst", 1),
            ("seesaw+ahead+tmaout+tmaq+nomask+overlapcombine", 1), ("seesaw+overlapcombine", 4),
            ("serial+tmaout+tmaq", 1), ("serial+tmaout", 4), ("serial+l2keep+tmaq", 1),
            ("chained+tmaout+tmaq", 1), ("seesaw+ahead+tmaout+tmaq+nomask+earlyq", 1),
            ("seesaw+ahead+tmaout+tmaq+earlyq", 4), ("seesaw+ahead+tmaout+tmaq+nomask+earlyq+pvbfirst", 4),
            ("seesaw+ahead+tmaout+tmaq+nomask+earlyq+pvbfirst+chainpv", 4),
            ("seesaw+ahead+tmaout+tmaq+nomask+earlyq+pvbfirst+chainpv+sbrightfirst", 1)]


def variant_id(variant):
    schedule, floor = variant
    return schedule + (f"-floor{floor}" if floor > 1 else "")


# --------------------------------------------------------------------------- CPU
def test_auto_schedule_adds_split_combine_only_for_small_batches():
    """"auto" = serial (code 0, resolved in the launcher) plus the column-split combine (8) at
    most AUTO_SPLITCOMBINE_MAX_ROWS query rows; explicit schedules are never changed."""
    limit = cuda_backend.AUTO_SPLITCOMBINE_MAX_ROWS
    assert cuda_backend._schedule_code("auto", 1 * 1 * 16) == 8
    assert cuda_backend._schedule_code("auto", limit) == 8
    assert cuda_backend._schedule_code("auto", limit + 1) == 0
    assert cuda_backend._schedule_code("auto", 128 * 2 * 128) == 0
    assert cuda_backend._schedule_code("auto") == 0
    assert cuda_backend._schedule_code("serial", 16) == 1
    assert cuda_backend._schedule_code("chained+splitcombine", 10 ** 6) == 3 | 8
    assert cuda_backend._schedule_code("seesaw", 16) == 16
    assert cuda_backend._schedule_code("seesaw+splitcombine", 10 ** 6) == 16 | 8
    assert cuda_backend._schedule_code("seesaw+l2keep+earlyrefill", 10 ** 6) == 16 | 32 | 64
    assert cuda_backend._schedule_code("serial+l2keep", 16) == 1 | 32
    assert cuda_backend._schedule_code("seesaw+wholetile", 10 ** 6) == 16 | 256
    assert cuda_backend._schedule_code("seesaw+ahead", 10 ** 6) == 16 | 512
    assert cuda_backend._schedule_code("seesaw+ahead+noload", 10 ** 6) == 16 | 512 | 1024
    assert cuda_backend._schedule_code("auto+nopartial+nocombine", 128 * 2 * 128, 2 * 128) == 16 | AHEAD_AUTO | SEESAW_AUTO | 8192 | 16384
    assert set(cuda_backend.PROBE_FLAGS) <= set(cuda_backend.SCHEDULE_FLAGS)
    assert cuda_backend._schedule_code("seesaw+l2hot", 10 ** 6) == 16 | 2048
    assert cuda_backend._schedule_code("auto+cluster", 128 * 2 * 128, 2 * 128) == 16 | AHEAD_AUTO | 4096 | SEESAW_AUTO
    assert cuda_backend._schedule_code("seesaw+ahead+tmaout+tmaq", 10 ** 6) == 16 | 512 | 32768 | 65536
    assert cuda_backend._schedule_code("serial+wholetile", 16) == 1 | 256
    assert cuda_backend._schedule_code("serial+colsplit", 10 ** 6) == 1 | 131072
    assert cuda_backend._schedule_code("auto+colsplit", 128, 128) == 8 | 131072
    assert cuda_backend._schedule_code("seesaw+ahead+nomask", 10 ** 6) == 16 | 512 | 262144
    # auto adds it for the batches whose metadata fills half the parts (scheduler.column_split), with
    # at most AUTO_COLSPLIT_MAX_ROWS_PER_KV rows per kv head; above, the serial kernel with TMA Q loads
    max_rows = cuda_backend.AUTO_COLSPLIT_MAX_ROWS_PER_KV
    assert cuda_backend._schedule_code("auto", 16, 16, 1) == 8 | 131072            # b1 h16 (no +l2keep: b < 64)
    assert cuda_backend._schedule_code("auto", max_rows, max_rows, 1) == 8 | 131072
    assert cuda_backend._schedule_code("auto", 2 * max_rows + 2, max_rows + 1, 2) == 8 | TMA
    assert cuda_backend._schedule_code("auto", 128, 128, 1) == 8 | TMA             # b1 h128
    assert cuda_backend._schedule_code("auto", 256, 128, 2) == 8 | TMA             # b2 h128
    assert cuda_backend._schedule_code("auto", 16, None, 1) == 8 | 131072          # rows per kv head unknown
    assert cuda_backend._schedule_code("auto", 512, 128, 4) == 8 | TMA             # b4: all parts, split combine
    assert cuda_backend._schedule_code("auto", 256, 16, 16) == 8 | TMA             # b16 h16
    assert cuda_backend._schedule_code("serial", 128, 128, 1) == 1
    for with_tma in ("serial+colsplit+tmaout", "serial+colsplit+tmaq", "auto+colsplit+tmaq"):
        with pytest.raises(ValueError, match="column split"):
            cuda_backend._schedule_code(with_tma, 16, 16, 1)
    for not_serial in ("seesaw+colsplit", "chained+colsplit", "pipelined+colsplit"):
        with pytest.raises(ValueError, match="colsplit"):
            cuda_backend._schedule_code(not_serial, 16)
    with pytest.raises(ValueError, match="seesaw"):  # auto picks the seesaw kernel for this batch
        cuda_backend._schedule_code("auto+colsplit", 128 * 2 * 128, 2 * 128)
    # +overlapcombine needs the seesaw kernel's chunk counts: auto drops it elsewhere
    assert cuda_backend._schedule_code("auto+overlapcombine", 128 * 2 * 128, 2 * 128) == 16 | AHEAD_AUTO | SEESAW_AUTO
    assert cuda_backend._schedule_code("auto+overlapcombine", 16, 16, 1) == cuda_backend._schedule_code("auto", 16, 16, 1)
    for not_seesaw in ("serial+overlapcombine", "chained+overlapcombine"):
        with pytest.raises(ValueError, match="overlapcombine"):
            cuda_backend._schedule_code(not_seesaw, 10 ** 6)
    # +earlyq changes the request boundary of seesaw+ahead+tmaout+tmaq: auto keeps it only there
    assert cuda_backend._schedule_code("auto+earlyq", 128 * 2 * 128, 2 * 128) == 16 | AHEAD_AUTO | SEESAW_AUTO
    assert cuda_backend._schedule_code("auto+earlyq", 128 * 128, 128) == cuda_backend._schedule_code("auto", 128 * 128, 128)
    assert cuda_backend._schedule_code("auto+earlyq", 16, 16, 1) == cuda_backend._schedule_code("auto", 16, 16, 1)
    assert cuda_backend._schedule_code("seesaw+ahead+tmaout+tmaq+earlyq", 10 ** 6) == 16 | 512 | TMA | EARLYQ
    for without in ("serial+tmaout+tmaq+earlyq", "seesaw+tmaout+tmaq+earlyq", "seesaw+ahead+tmaq+earlyq",
                    "seesaw+ahead+earlyq"):
        with pytest.raises(ValueError, match="earlyq"):
            cuda_backend._schedule_code(without, 10 ** 6)


def test_auto_schedule_picks_seesaw_only_for_large_compute_bound_batches():
    """"auto" = seesaw (16) with the TMA request boundary (+tmaout +tmaq) and the overlapped combine at >=
    AUTO_SEESAW_MIN_ROWS_PER_KV query rows per kv head and >= AUTO_SEESAW_MIN_QUERY_ROWS query rows
    in the batch, with +ahead (512) and +nomask from AUTO_AHEAD_MIN_ROWS_PER_KV rows per kv head; serial
    otherwise."""
    per_kv, total = cuda_backend.AUTO_SEESAW_MIN_ROWS_PER_KV, cuda_backend.AUTO_SEESAW_MIN_QUERY_ROWS
    ahead_per_kv = cuda_backend.AUTO_AHEAD_MIN_ROWS_PER_KV
    assert cuda_backend._schedule_code("auto", 128 * 2 * 128, 2 * 128) == 16 | AHEAD_AUTO | SEESAW_AUTO  # b128 s_q2 h128
    assert cuda_backend._schedule_code("auto", 10 ** 6, ahead_per_kv) == 16 | AHEAD_AUTO | SEESAW_AUTO
    assert cuda_backend._schedule_code("auto", 10 ** 6, ahead_per_kv - 1) == 16 | SEESAW_AUTO
    assert cuda_backend._schedule_code("auto", total, per_kv) == 16 | SEESAW_AUTO
    assert cuda_backend._schedule_code("auto", 128 * 1 * 128, 128) == 16 | SEESAW_AUTO         # 128 rows per kv head
    assert cuda_backend._schedule_code("auto", 32 * 1 * 128, 128) == 16 | SEESAW_AUTO          # b32 s_q1 h128
    assert cuda_backend._schedule_code("auto", 8 * 1 * 128, 128) == 0             # b8: serial
    assert cuda_backend._schedule_code("auto", 128 * 64, 64) == 32                # 64 rows: serial (+l2keep)
    assert cuda_backend._schedule_code("auto", total - 1, per_kv) == 0
    assert cuda_backend._schedule_code("auto", 1 * 2 * 128, 2 * 128) == 8         # b1: split combine, serial
    assert cuda_backend._schedule_code("seesaw", 10 ** 6, 10 ** 3) == 16              # explicit: unchanged
    assert cuda_backend._schedule_code("auto", 10 ** 6) == 0                      # rows per kv unknown
    assert cuda_backend._schedule_code("serial", 10 ** 6, 10 ** 3) == 1
    with pytest.raises(ValueError, match="schedule"):
        cuda_backend._schedule_code("auto+fast", 16)


def test_auto_schedule_for_small_and_mid_batches():
    """With the batch size known, "auto" extends the split combine (8) to
    AUTO_SPLITCOMBINE_MAX_ROWS_SMALL_BATCH query rows for at most AUTO_SPLITCOMBINE_MAX_BATCH
    requests and adds +l2keep (32) only from AUTO_L2KEEP_MIN_BATCH requests on."""
    rows, max_batch = cuda_backend.AUTO_SPLITCOMBINE_MAX_ROWS_SMALL_BATCH, cuda_backend.AUTO_SPLITCOMBINE_MAX_BATCH
    l2keep_batch = cuda_backend.AUTO_L2KEEP_MIN_BATCH
    assert cuda_backend._schedule_code("auto", 8 * 128, 128, 8) == 8 | TMA            # b8 h128
    assert cuda_backend._schedule_code("auto", 8 * 64, 64, 8) == 8 | TMA              # b8 h64: no +l2keep
    assert cuda_backend._schedule_code("auto", rows, 32, max_batch) == 8 | TMA        # b32 h32
    assert cuda_backend._schedule_code("auto", rows + 64, 64, 17) == TMA              # too many rows
    assert cuda_backend._schedule_code("auto", 16 * 128, 128, 16) == TMA             # b16 h128: 2048 rows
    assert cuda_backend._schedule_code("auto", 1024, 16, l2keep_batch) == 32 | TMA    # b64 h16: +l2keep
    assert cuda_backend._schedule_code("auto", 1024, 16, l2keep_batch - 1) == TMA     # b63: no +l2keep
    assert cuda_backend._schedule_code("auto", 128 * 64, 64, 128) == 32 | TMA         # b128 h64
    assert cuda_backend._schedule_code("auto", 8 * 64, 64) == 32                      # batch unknown: as before
    assert cuda_backend._schedule_code("serial", 8 * 64, 64, 8) == 1                  # explicit: unchanged


def test_auto_schedule_adds_tma_boundary_to_serial_kernel():
    """"auto" adds +tmaout +tmaq to the serial kernel from AUTO_SERIAL_TMA_MIN_BATCH requests on
    (docs/kernel-design.md 7.25), never to the column split; the seesaw keeps its own set; explicit
    schedules are unchanged."""
    tma_batch = max(cuda_backend.AUTO_SERIAL_TMA_MIN_BATCH, 4)  # b <= 2 with few rows may take the column split
    assert cuda_backend._schedule_code("auto", tma_batch * 16, 16, tma_batch) & TMA == TMA
    assert cuda_backend._schedule_code("auto", 128 * 2 * 32, 64, 128) & TMA == TMA          # b128 s_q2 h32
    assert cuda_backend._schedule_code("auto", 8 * 128, 128, 8) & TMA == TMA                # b8 h128
    assert cuda_backend._schedule_code("auto", 16, 16, 1) & TMA == 0                        # b1 h16: column split
    assert cuda_backend._schedule_code("auto", 128 * 64, 64) & TMA == 0                     # batch unknown
    assert cuda_backend._schedule_code("auto", 128 * 2 * 128, 256, 128) == 16 | AHEAD_AUTO | SEESAW_AUTO
    assert cuda_backend._schedule_code("serial", 128 * 64, 64, 128) == 1


def test_auto_schedule_keeps_k_pages_in_l2_for_one_row_tile():
    """"auto" adds +l2keep (32) when one 64-row tile serves a kv head, never with more tiles and
    never to an explicit schedule."""
    limit = cuda_backend.AUTO_L2KEEP_MAX_ROWS_PER_KV
    assert cuda_backend._schedule_code("auto", 128 * 64, 64) == 32                # b128 h64 s_q1
    assert cuda_backend._schedule_code("auto", 128 * 2 * 16, 2 * 16) == 32        # b128 s_q2 h16
    assert cuda_backend._schedule_code("auto", 16, 16) == 8 | 32                  # b1: + split combine
    assert cuda_backend._schedule_code("auto", 128 * (limit + 1), limit + 1) == 0
    assert cuda_backend._schedule_code("serial", 128 * 64, 64) == 1


def test_unavailable_on_cpu_says_why():
    ok, why = cuda_backend.is_available(torch.device("cpu"))
    assert not ok and why


# --------------------------------------------------------------------------- GPU: scheduler
SCHED_CASES = [
    ([4096] * 128, 64, 1), ([0] * 7, 16, 1), ([1], 128, 1), ([0, 1, 0, 64, 65, 0, 4097], 30, 2),
    ([random.Random(3).randint(0, 20000) for _ in range(300)], 128, 1),
    ([random.Random(7).choice([0, 0, 1, 63, 64, 65, 300, 9000]) for _ in range(1000)], 256, 8),
    ([32768] * 32, 128, 1), ([5000, 3] * 40, 1024, 3),
    # equal lengths (whole requests per part), with padding zeros, and one block longer
    ([0, 4096, 0] + [4096] * 125, 128, 1), ([8192] * 128, 64, 1), ([4096] * 127 + [4160], 64, 1),
    # column-split batches (half the parts in use): b = 1 and 2, one and two kv heads
    ([4096], 128, 1), ([16384, 300], 64, 1), ([70000], 16, 2),
]


@pytest.mark.gpu
@pytest.mark.parametrize("floor", [1, 3, 16], ids=lambda f: f"floor{f}")
@pytest.mark.parametrize("case", range(len(SCHED_CASES)))
@pytest.mark.parametrize("num_sms", [132, 78, 1, 264])
def test_gpu_scheduler_bit_identical(case, num_sms, floor):
    device = _device()
    seqlens, rows, h_kv = SCHED_CASES[case]
    sl = torch.tensor(seqlens, dtype=torch.int32, device=device)
    md, ns = cuda_backend.get_mla_metadata_gpu(sl, rows, h_kv, num_sms, min_blocks_per_part=floor)
    ref_md, ref_ns = scheduler.compute_tile_scheduler_metadata(sl, rows, h_kv, num_sms, min_blocks_per_part=floor)
    assert md.dtype == ref_md.dtype == torch.int32 and ns.dtype == torch.int32
    assert torch.equal(md, ref_md), f"metadata differs:\n{md}\n{ref_md}"
    assert torch.equal(ns, ref_ns), f"num_splits differs:\n{ns}\n{ref_ns}"


@pytest.mark.gpu
@pytest.mark.parametrize("case", [0, 2, 6, 11, 12, 13])
@pytest.mark.parametrize("column_split", [True, False])
def test_gpu_scheduler_column_split_bit_identical(case, column_split):
    """A forced column split (or none) gives the Python scheduler's tensors too, on 132 SMs and on
    one (a single part is never split: it has no second thread block)."""
    device = _device()
    seqlens, rows, h_kv = SCHED_CASES[case]
    sl = torch.tensor(seqlens, dtype=torch.int32, device=device)
    for num_sms in (132, 1):
        md, ns = cuda_backend.get_mla_metadata_gpu(sl, rows, h_kv, num_sms, column_split=column_split)
        ref_md, ref_ns = scheduler.compute_tile_scheduler_metadata(sl, rows, h_kv, num_sms, column_split=column_split)
        assert torch.equal(md, ref_md) and torch.equal(ns, ref_ns), f"column_split={column_split}: metadata differs"
        parts = scheduler.num_sm_parts(num_sms, rows, h_kv)
        assert (md[:, scheduler.COL_COLUMN_SPLIT] == int(column_split and parts >= 2)).all()  # one part: never


# --------------------------------------------------------------------------- GPU: kernel
FOUNDATION_SEQLENS = [0, 1, 63, 64, 65, 127, 200, 300, 5, 129]
FOUNDATION_HEADS = [(h_q, h_kv) for h_q in (1, 3, 9, 16, 63, 64, 126, 128) for h_kv in (1, 2, 3, 8)
                    if h_q % h_kv == 0]


def foundation_case(h_q, h_kv, s_q, causal, dtype, device, seed):
    """One case of the foundation grid: the shuffled lengths plus one random long or short one,
    poisoned inputs and the fp32 reference. Returns (rng, inputs, causal, reference): the rng
    goes on to draw the SM count, so a case is the same for every test that uses its seed."""
    rng = random.Random(seed)
    seqlens = FOUNDATION_SEQLENS[:]
    rng.shuffle(seqlens)
    seqlens.append(rng.choice([140, 4096, 20]))
    q, k, bt, sl = make_inputs(seqlens, s_q, h_q, h_kv, dtype, device, seed)
    causal = causal and s_q > 1
    ref_out, ref_lse = reference.decode(q.float(), k.float(), bt, sl, 576 ** -0.5, causal)
    return rng, (q, k, bt, sl), causal, (ref_out.float(), ref_lse)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("s_q", [1, 2, 4])
@pytest.mark.parametrize("heads", FOUNDATION_HEADS, ids=lambda hk: f"hq{hk[0]}-hkv{hk[1]}")
def test_gpu_foundation_grid(heads, s_q, causal, dtype):
    h_q, h_kv = heads
    device = _device()
    seed = h_q * 1000 + h_kv * 100 + s_q * 10 + causal * 2 + (dtype == torch.float16)
    rng, (q, k, bt, sl), causal, (ref_out, ref_lse) = foundation_case(h_q, h_kv, s_q, causal, dtype, device, seed)
    # Both inner-loop schedules, and a random SM count so both the direct-write and the combine
    # paths run.
    for num_sms, schedule in ((None, "serial"), (None, "pipelined+rendezvous"),
                              (rng.choice([1, 7, 33, 200]), "auto")):
        out, lse = run_cuda(q, k, bt, sl, causal, num_sms, schedule=schedule)
        check_against_reference(out, lse, ref_out, ref_lse, f"num_sms={num_sms} schedule={schedule}")


@pytest.mark.gpu
@pytest.mark.parametrize("schedule", ["auto", "seesaw+tmaout+tmaq", "seesaw+ahead+tmaout+tmaq",
                                      "seesaw+ahead+tmaout+tmaq+nomask", "serial+tmaout+tmaq"])
@pytest.mark.parametrize("layout", ["heads_padded", "batch_padded"])
def test_gpu_softmax_scale_and_strided_q(schedule, layout):
    """A q view that is not contiguous: with padded heads its rows are not evenly strided, so the
    seesaw's +tmaq cannot describe it by a tensor map and loads Q the other way; with a padded
    batch stride the map takes it."""
    device = _device()
    q, k, bt, sl = make_inputs([700, 0, 129], 2, 32, 1, torch.bfloat16, device, seed=11)
    if layout == "heads_padded":
        q_strided = torch.empty(3, 2, 48, 576, dtype=q.dtype, device=device)[:, :, 8:40]
    else:
        q_strided = torch.empty(3, 2 * 32 + 1, 576, dtype=q.dtype, device=device)[:, :64].unflatten(1, (2, 32))
    q_strided.copy_(q)
    assert not q_strided.is_contiguous()
    out, lse = run_cuda(q_strided, k, bt, sl, True, scale=0.1352, schedule=schedule)
    ref_out, ref_lse = reference.decode(q.float(), k.float(), bt, sl, 0.1352, True)
    check_against_reference(out, lse, ref_out.float(), ref_lse)


def benchmark_seqlens(b, mean, s_q, varied):
    """perf-targets.md's lengths: all at the mean, or FlashMLA's normal(mean, mean/2) draw."""
    return testing.flashmla_varied_lengths(b, mean, s_q) if varied else [mean] * b


GPU_BENCH_SHAPES = [(128, s_q, 4096, h_q, varied) for s_q in (1, 2) for h_q in (16, 32, 64, 128)
                    for varied in (False, True)] + [(1, 1, 4096, 16, False), (1, 1, 4096, 128, False),
                                                    (32, 1, 32768, 128, False), (128, 2, 8192, 128, True)]


@pytest.mark.gpu
@pytest.mark.parametrize("shape", GPU_BENCH_SHAPES, ids=lambda s: "b{}-sq{}-L{}-hq{}-{}".format(
    *s[:4], "varied" if s[4] else "fixed"))
def test_gpu_benchmark_shapes(shape):
    b, s_q, mean, h_q, varied = shape
    device = _device()
    seqlens = benchmark_seqlens(b, mean, s_q, varied)
    q, k, bt, sl = make_inputs(seqlens, s_q, h_q, 1, torch.bfloat16, device, seed=sum(shape), spare_pages=1)
    out, lse = run_cuda(q, k, bt, sl, s_q > 1)
    ref_out, ref_lse = reference.decode(q, k, bt, sl, 576 ** -0.5, s_q > 1)  # upcasts per request
    check_against_reference(out, lse, ref_out.float(), ref_lse, str(shape))


@pytest.mark.gpu
@pytest.mark.parametrize("variant", [("auto", 1), ("chained+splitcombine", 8), ("seesaw", 1), ("seesaw+overlapcombine", 1)],
                         ids=variant_id)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_gpu_cuda_graph_padded_batch(dtype, variant):
    """Metadata of the real batch copied into buffers of a padded batch (vLLM pads num_splits with
    its last value, seqlens with 0): graph replay equals eager, padded rows give 0 / +inf."""
    device = _device()
    b_real, b_pad, s_q, h_q = 5, 9, 2, 16
    seqlens = [300, 64, 0, 1000, 65] + [0] * (b_pad - b_real)
    q, k, bt, sl = make_inputs(seqlens, s_q, h_q, 1, dtype, device, seed=5)
    num_sms = torch.cuda.get_device_properties(device).multi_processor_count
    rows = s_q * h_q

    md_buf = torch.empty(scheduler.num_sm_parts(num_sms, rows, 1), 8, dtype=torch.int32, device=device)
    ns_buf = torch.empty(b_pad + 1, dtype=torch.int32, device=device)

    def plan():
        md, ns = cuda_backend.get_mla_metadata_gpu(sl[:b_real], rows, 1, num_sms, min_blocks_per_part=variant[1])
        md_buf.copy_(md)
        ns_buf[:b_real + 1].copy_(ns)
        ns_buf[b_real + 1:].copy_(ns[-1].expand(b_pad - b_real))

    def step():
        plan()
        return cuda_backend.decode(q, k, bt, sl, 576 ** -0.5, True, md_buf, ns_buf, schedule=variant[0])

    eager_out, eager_lse = step()
    torch.cuda.synchronize()
    graph, (g_out, g_lse) = testing.capture_graph(step)
    assert torch.equal(g_out, eager_out) and torch.equal(g_lse, eager_lse)
    ref_out, ref_lse = reference.decode(q.float(), k.float(), bt, sl, 576 ** -0.5, True)
    check_against_reference(g_out, g_lse, ref_out.float(), ref_lse)
    assert bool((g_out[b_real:] == 0).all()) and bool(torch.isinf(g_lse[b_real:]).all())

    # New lengths and values in the same buffers: the replay recomputes metadata on the GPU.
    # Each new length fits the request's pages and stays inside its non-NaN rows.
    sl[:b_real] = torch.tensor([64, 1, 0, 700, 65], dtype=torch.int32, device=device)
    q.copy_((torch.randn_like(q, dtype=torch.float32) / 10).to(dtype))
    graph.replay()
    torch.cuda.synchronize()
    eager_out, eager_lse = step()
    assert torch.equal(g_out, eager_out) and torch.equal(g_lse, eager_lse)
    ref_out, ref_lse = reference.decode(q.float(), k.float(), bt, sl, 576 ** -0.5, True)
    check_against_reference(g_out, g_lse, ref_out.float(), ref_lse, "after update")


@pytest.mark.gpu
@pytest.mark.parametrize("h_q", [16, 128])
def test_gpu_cuda_graph_column_split_follows_the_lengths(h_q):
    """At a small padded batch the GPU scheduler marks a short step split (half the parts) and a long
    one not, so one captured graph must follow the mark on every replay: graph equals eager and the
    reference for both. `auto` runs the column-split kernel at 16 rows per kv head and the serial
    kernel on the same half-parts metadata at 128 (AUTO_COLSPLIT_MAX_ROWS_PER_KV)."""
    device = _device()
    b_real, b_pad, long_seqlen = 1, 2, 60000  # 60000 tokens: too many units per half-part at h16 and h128
    q, k, bt, sl = make_inputs([long_seqlen, 0], 1, h_q, 1, torch.bfloat16, device, seed=8)
    num_sms = torch.cuda.get_device_properties(device).multi_processor_count
    md_buf = torch.empty(scheduler.num_sm_parts(num_sms, h_q, 1), 8, dtype=torch.int32, device=device)
    ns_buf = torch.empty(b_pad + 1, dtype=torch.int32, device=device)
    colsplit_kernel = bool(cuda_backend._schedule_code("auto", b_pad * h_q, h_q, b_pad)
                           & cuda_backend.SCHEDULE_FLAGS["colsplit"])
    assert colsplit_kernel == (h_q <= cuda_backend.AUTO_COLSPLIT_MAX_ROWS_PER_KV)

    def step():
        md, ns = cuda_backend.get_mla_metadata_gpu(sl[:b_real], h_q, 1, num_sms)
        md_buf.copy_(md)
        ns_buf[:b_real + 1].copy_(ns)
        ns_buf[b_real + 1:].copy_(ns[-1].expand(b_pad - b_real))
        return cuda_backend.decode(q, k, bt, sl, 576 ** -0.5, False, md_buf, ns_buf, schedule="auto")

    sl[0] = 3000  # short: marked split
    eager_out, eager_lse = step()
    torch.cuda.synchronize()
    assert int(md_buf[0, scheduler.COL_COLUMN_SPLIT]) == 1
    graph, (g_out, g_lse) = testing.capture_graph(step)
    assert torch.equal(g_out, eager_out) and torch.equal(g_lse, eager_lse)
    for seqlen, mark in ((long_seqlen, 0), (3000, 1)):  # long: not split; then short again
        sl[0] = seqlen
        q.copy_((torch.randn_like(q, dtype=torch.float32) / 10).to(torch.bfloat16))
        graph.replay()
        torch.cuda.synchronize()
        assert int(md_buf[0, scheduler.COL_COLUMN_SPLIT]) == mark
        eager_out, eager_lse = step()
        assert torch.equal(g_out, eager_out) and torch.equal(g_lse, eager_lse), f"seqlen {seqlen}"
        ref_out, ref_lse = reference.decode(q.float(), k.float(), bt, sl, 576 ** -0.5, False)
        check_against_reference(g_out, g_lse, ref_out.float(), ref_lse, f"seqlen {seqlen}")


@pytest.mark.gpu
def test_gpu_public_api_uses_cuda_backend():
    device = _device()
    import flashmla
    q, k, bt, sl = make_inputs([100, 0, 4000], 1, 128, 1, torch.bfloat16, device, seed=9)
    md, ns = flashmla.get_mla_metadata(sl, 128, 1)
    out, lse = flashmla.flash_mla_with_kvcache(q, k, bt, sl, 512, md, ns, causal=True, backend="cuda")
    ref_out, ref_lse = reference.decode(q.float(), k.float(), bt, sl, 576 ** -0.5, False)
    check_against_reference(out, lse, ref_out.float(), ref_lse)


@pytest.mark.gpu
@pytest.mark.parametrize("schedule", ["serial+rendezvous+tmaout+tmaq", "serial+rendezvous+tmaout",
                                      "chained+rendezvous+tmaout+tmaq"])
def test_gpu_rendezvous_with_tma_output(schedule):
    """+rendezvous (which a racecheck build, scripts/gpu_racecheck.sh, always takes) with the TMA
    output of whole requests: both warpgroups meet at the output barrier after a request's last PV,
    so WG1 must not hold a P_FREE rendezvous across it (that deadlocked until session 24). Four SMs
    give one part per row tile, so every request is whole and takes the TMA output."""
    device = _device()
    q, k, bt, sl = make_inputs([300, 0, 64, 129, 700], 2, 128, 1, torch.bfloat16, device, seed=23)
    ref_out, ref_lse = reference.decode(q.float(), k.float(), bt, sl, 576 ** -0.5, True)
    out, lse = run_cuda(q, k, bt, sl, True, num_sms=4, schedule=schedule)
    check_against_reference(out, lse, ref_out.float(), ref_lse, schedule)


@pytest.mark.gpu
def test_gpu_schedules_agree_on_long_sequences():
    """Many blocks per chunk exercise the steady state of both inner loops."""
    device = _device()
    q, k, bt, sl = make_inputs([3000, 4097, 64, 2500], 2, 128, 1, torch.bfloat16, device, seed=21)
    ref_out, ref_lse = reference.decode(q.float(), k.float(), bt, sl, 576 ** -0.5, True)
    for schedule in ("serial", "pipelined", "serial+rendezvous", "pipelined+rendezvous"):
        out, lse = run_cuda(q, k, bt, sl, True, schedule=schedule)
        check_against_reference(out, lse, ref_out.float(), ref_lse, schedule)


@pytest.mark.gpu
def test_gpu_binding_rejects_bad_input():
    device = _device()
    q, k, bt, sl = make_inputs([100], 1, 16, 1, torch.bfloat16, device, seed=1)
    md, ns = cuda_backend.get_mla_metadata_gpu(sl, 16, 1, 132)
    with pytest.raises(TypeError, match="k_cache"):
        cuda_backend.decode(q, k.half(), bt, sl, 0.1, False, md, ns)
    with pytest.raises(ValueError, match="num_splits"):
        cuda_backend.decode(q, k, bt, sl, 0.1, False, md, ns[:1])
    with pytest.raises(TypeError, match="block_table"):
        cuda_backend.decode(q, k, bt.long(), sl, 0.1, False, md, ns)
    with pytest.raises(ValueError, match="schedule"):
        cuda_backend.decode(q, k, bt, sl, 0.1, False, md, ns, schedule="fastest")
    with pytest.raises(ValueError, match="schedule"):
        cuda_backend.decode(q, k, bt, sl, 0.1, False, md, ns, schedule="chained+fast")
    with pytest.raises(ValueError, match="min_blocks_per_part"):
        cuda_backend.get_mla_metadata_gpu(sl, 16, 1, 132, min_blocks_per_part=0)


_BINDING_VALUE_ERROR_CHILD = """
import torch, sys
sys.path.insert(0, "tests")
from test_cuda import make_inputs
from flashmla import cuda_backend
q, k, bt, sl = make_inputs([100], 1, 16, 1, torch.bfloat16, torch.device("cuda"), seed=1)
md, ns = cuda_backend.get_mla_metadata_gpu(sl, 16, 1, 132)
try:
    cuda_backend._C.decode(q, k, bt, sl, 0.1, False, md, ns[:1], 0)
except ValueError as e:
    print("VALUE_ERROR", e)
"""


@pytest.mark.gpu
@pytest.mark.xfail(reason="known bug, docs/kernel-design.md section 5, item 4: on the GPU host the binding segfaults "
                          "when it raises this ValueError itself (cuda_backend.decode checks first, so the "
                          "public path raises correctly)", strict=False)
def test_gpu_binding_value_error_without_python_checks():
    """The binding's own shape check raises ValueError (run in a child: a crash must not take
    the test session with it)."""
    _device()
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-c", _BINDING_VALUE_ERROR_CHILD], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "VALUE_ERROR num_splits must have shape [2]" in proc.stdout, (
        f"exit {proc.returncode}\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}")


# --------------------------------------------------------------------------- GPU: variants
# Last in the file: the default path's tests above run first, so a broken variant cannot hide
# their results (gpu_cuda.sh runs pytest with --maxfail, not -x).
@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("s_q", [1, 2, 4])
@pytest.mark.parametrize("heads", FOUNDATION_HEADS, ids=lambda hk: f"hq{hk[0]}-hkv{hk[1]}")
@pytest.mark.parametrize("variant", VARIANTS, ids=variant_id)
def test_gpu_variant_foundation_grid(variant, heads, s_q, causal):
    """The foundation grid for each variant (dtype alternates with the case to keep the GPU
    test time near 4 minutes; both dtypes run for every variant): default SM count and a random
    one (forces the split/combine path)."""
    schedule, floor = variant
    h_q, h_kv = heads
    device = _device()
    seed = 7 + h_q * 1000 + h_kv * 100 + s_q * 10 + causal * 2
    dtype = (torch.bfloat16, torch.float16)[(h_q + h_kv + s_q + causal) % 2]
    rng, (q, k, bt, sl), causal, (ref_out, ref_lse) = foundation_case(h_q, h_kv, s_q, causal, dtype, device, seed)
    for num_sms in (None, rng.choice([1, 7, 33, 200])):
        out, lse = run_cuda(q, k, bt, sl, causal, num_sms, schedule=schedule, min_blocks_per_part=floor)
        check_against_reference(out, lse, ref_out, ref_lse,
                                f"variant={variant_id(variant)} num_sms={num_sms} dtype={dtype}")


VARIANT_BENCH_SHAPES = [(1, 1, 4096, 16, False), (1, 1, 4096, 128, False), (1, 2, 16384, 128, False),
                        (8, 1, 4096, 128, False), (128, 2, 4096, 128, True), (32, 1, 8192, 128, False)]


@pytest.mark.gpu
@pytest.mark.parametrize("shape", VARIANT_BENCH_SHAPES, ids=lambda s: "b{}-sq{}-L{}-hq{}-{}".format(
    *s[:4], "varied" if s[4] else "fixed"))
def test_gpu_variants_on_benchmark_shapes(shape):
    """Every variant on the small-batch shapes (where the floor and the split combine act) and
    on compute-bound ones (where the chained schedule acts); long chunks exercise steady state."""
    b, s_q, mean, h_q, varied = shape
    device = _device()
    seqlens = benchmark_seqlens(b, mean, s_q, varied)
    q, k, bt, sl = make_inputs(seqlens, s_q, h_q, 1, torch.bfloat16, device, seed=3 + sum(shape), spare_pages=1)
    ref_out, ref_lse = reference.decode(q, k, bt, sl, 576 ** -0.5, s_q > 1)
    for schedule, floor in VARIANTS:
        out, lse = run_cuda(q, k, bt, sl, s_q > 1, schedule=schedule, min_blocks_per_part=floor)
        check_against_reference(out, lse, ref_out.float(), ref_lse, f"{shape} {variant_id((schedule, floor))}")

@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(4, 2, 3000, 128, False), (1, 1, 4096, 16, False)],
                         ids=lambda s: "b{}-sq{}-L{}-hq{}".format(*s[:4]))
def test_gpu_variants_bit_identical_where_predicted(shape):
    """Predictions of docs/kernel-design.md section 6, checked exactly: 'chained' performs the
    same wgmma on the same operands as 'serial' (P read from smem instead of registers holds
    the same bits; a skipped unit rescale is x * 1.0f == x), and the split combine sums the same
    products in the same order as the default combine (its extra terms add +0)."""
    b, s_q, mean, h_q, varied = shape
    device = _device()
    q, k, bt, sl = make_inputs(benchmark_seqlens(b, mean, s_q, varied), s_q, h_q, 1, torch.bfloat16, device,
                               seed=41, spare_pages=1)

    def assert_same_bits(schedule, base, base_name, num_sms, **kwargs):
        out, lse = run_cuda(q, k, bt, sl, s_q > 1, num_sms, schedule=schedule, **kwargs)
        diff = (out.float() - base[0].float()).abs().max().item()
        assert torch.equal(out, base[0]) and torch.equal(lse, base[1]), (
            f"{schedule} differs from {base_name} (num_sms={num_sms}, {kwargs}): max |out diff| {diff:.3e}")

    for num_sms in (None, 33):
        serial = run_cuda(q, k, bt, sl, s_q > 1, num_sms, schedule="serial")
        for schedule in ("chained", "serial+splitcombine", "chained+splitcombine"):
            assert_same_bits(schedule, serial, "serial", num_sms)
        # +colsplit runs the same S and softmax in both thread blocks of a pair, and each output
        # column's PV sums the same products in the same k order (an N = 128 wgmma instead of N = 256);
        # on an unmarked schedule it is the serial kernel. Compared on the same metadata.
        for split in (True, False):
            same_metadata = run_cuda(q, k, bt, sl, s_q > 1, num_sms, schedule="serial", column_split=split)
            assert_same_bits("serial+colsplit", same_metadata, "serial", num_sms, column_split=split)
        # seesaw+ahead reorders when wgmmas are issued, not what they compute: same operands,
        # same accumulation order, so the same bits as seesaw.
        # +nomask drops masking code only where no column would be masked, +pvbfirst only delays
        # when WG0 issues the next S: the same bits too.
        seesaw = run_cuda(q, k, bt, sl, s_q > 1, num_sms, schedule="seesaw")
        # +overlapcombine merges the same partials with the same arithmetic, only earlier.
        # +chainpv queues PV_B,right earlier only where s1 is exactly 1 (no rescale skipped).
        for schedule in ("seesaw+ahead", "seesaw+ahead+nomask", "seesaw+ahead+nomask+pvbfirst",
                         "seesaw+ahead+nomask+chainpv", "seesaw+ahead+nomask+pvbfirst+chainpv",
                         "seesaw+overlapcombine", "seesaw+ahead+nomask+overlapcombine"):
            assert_same_bits(schedule, seesaw, "seesaw", num_sms)
        # +earlyq moves when the next Q tile loads and where the output is staged, not a value.
        tma_boundary = run_cuda(q, k, bt, sl, s_q > 1, num_sms, schedule="seesaw+ahead+tmaout+tmaq+nomask")
        assert_same_bits("seesaw+ahead+tmaout+tmaq+nomask+earlyq", tma_boundary, "seesaw+ahead+tmaout+tmaq+nomask",
                         num_sms)
        # +pvbfirst with that boundary ("auto" at 256 rows per kv head) only delays WG0's next S.
        assert_same_bits("seesaw+ahead+tmaout+tmaq+nomask+earlyq+pvbfirst", tma_boundary,
                         "seesaw+ahead+tmaout+tmaq+nomask", num_sms)
        assert_same_bits("seesaw+ahead+tmaout+tmaq+nomask+earlyq+pvbfirst+chainpv", tma_boundary,
                         "seesaw+ahead+tmaout+tmaq+nomask", num_sms)


def ramped_scores_inputs(dtype, device, seed):
    """Inputs whose scores climb, jump and fall block by block: the last rope dimension of Q is 8 and
    that of K a per-block level (plus up to 4 log2 units of per-token spread), the levels a walk
    with steps of -10, +3, +6, +7.9, +9 and +20 log2 units. So the kernels' lazy running max
    (kLazyMaxLog2 = 8) both lags the true max (P up to 2^8) and has to move (steps above 8)."""
    seqlens = [4096 + 37, 2500]
    q, k, bt, sl = make_inputs(seqlens, 2, 128, 1, dtype, device, seed=seed, spare_pages=1)
    host = torch.Generator().manual_seed(seed)
    steps = torch.tensor([-10.0, 3.0, 6.0, 7.9, 9.0, 20.0])
    per_raw_unit = 8 * 576 ** -0.5 * math.log2(math.e)  # log2 units per unit of K[..., 575]
    table = bt.cpu()
    for i, n in enumerate(seqlens):
        pages = math.ceil(n / PAGE)
        level = torch.cumsum(steps[torch.randint(len(steps), (pages,), generator=host)], 0)
        level -= level.max()  # the largest level is 0, the walk reaches far below it
        spread = 4 * torch.rand(pages, PAGE, generator=host)
        rows = ((level[:, None] + spread) / per_raw_unit).to(dtype)
        rows[pages - 1, n - (pages - 1) * PAGE:] = float("nan")  # unused tail rows stay poisoned
        k[table[i, :pages].long().to(device), :, 0, 575] = rows.to(device)
    q[..., 575] = 8
    return q, k, bt, sl


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_gpu_lazy_running_max_on_climbing_scores(dtype):
    """The online softmax's running max moves only by more than kLazyMaxLog2 (csrc/
    mla_decode_kernel.cuh): on scores that climb below that step, jump above it and fall, every
    kernel path (serial, seesaw, seesaw with +ahead +nomask and the TMA boundary, auto) still
    matches the fp32 reference, with the parts split (33 SMs) and not."""
    device = _device()
    q, k, bt, sl = ramped_scores_inputs(dtype, device, seed=97)
    ref_out, ref_lse = reference.decode(q.float(), k.float(), bt, sl, 576 ** -0.5, True)
    for schedule in ("auto", "serial", "seesaw", "seesaw+ahead+nomask", "seesaw+ahead+tmaout+tmaq+nomask+earlyq",
                     "seesaw+ahead+tmaout+tmaq+nomask+earlyq+pvbfirst",
                     "seesaw+ahead+tmaout+tmaq+nomask+earlyq+pvbfirst+chainpv",
                     "seesaw+ahead+tmaout+tmaq+nomask+earlyq+pvbfirst+chainpv+sbrightfirst"):
        for num_sms in (None, 33):
            out, lse = run_cuda(q, k, bt, sl, True, num_sms, schedule=schedule)
            check_against_reference(out, lse, ref_out.float(), ref_lse, f"{schedule} num_sms={num_sms}")
    # +chainpv takes its early path only where block B keeps the max; here it also has to fall back
    # (steps above 8), and either way the bits are those of the same schedule without it.
    base = "seesaw+ahead+tmaout+tmaq+nomask+earlyq+pvbfirst"
    for num_sms in (None, 33):
        out, lse = run_cuda(q, k, bt, sl, True, num_sms, schedule=base)
        chain_out, chain_lse = run_cuda(q, k, bt, sl, True, num_sms, schedule=base + "+chainpv")
        assert torch.equal(out, chain_out) and torch.equal(lse, chain_lse), f"+chainpv changed the bits (num_sms={num_sms})"


@pytest.mark.gpu
@pytest.mark.parametrize("s_q, scale", [(66, 576 ** -0.5), (67, 576 ** -0.5), (80, 576 ** -0.5), (2, -0.07)],
                         ids=["sq66", "sq67", "sq80", "negative-scale"])
def test_gpu_nomask_falls_back_where_masking_is_needed(s_q, scale):
    """+nomask's unmasked steady state is exact only with s_q <= 66 (a causal mask then reaches at
    most 65 keys back, inside a request's last two blocks) and a positive scale; beyond either the
    kernel keeps the masking code. Long causal s_q and a negative scale against the reference, and
    bit for bit against the same schedule without the flag."""
    device = _device()
    seqlens = [1000, 64 * 9 + s_q - 1, 700 + s_q]  # masks ending inside, at and past a block edge
    q, k, bt, sl = make_inputs(seqlens, s_q, 16, 1, torch.bfloat16, device, seed=5 + s_q, spare_pages=1)
    ref_out, ref_lse = reference.decode(q.float(), k.float(), bt, sl, scale, True)
    base_out, base_lse = run_cuda(q, k, bt, sl, True, 7, scale=scale, schedule="seesaw+ahead")
    out, lse = run_cuda(q, k, bt, sl, True, 7, scale=scale, schedule="seesaw+ahead+nomask")
    check_against_reference(out, lse, ref_out.float(), ref_lse, f"s_q={s_q} scale={scale}")
    assert torch.equal(out, base_out) and torch.equal(lse, base_lse), f"s_q={s_q}: +nomask changed the output"
