"""The sm90a CUDA backend: a thin Python face over the compiled extension ``flashmla._C``.

The kernels live in ``csrc/`` (see docs/kernel-design.md); the extension's binding validates the
tensors again and raises ``ValueError``/``TypeError``/``RuntimeError`` naming the argument, so
this module only decides whether the backend can run and forwards the call.
"""
from __future__ import annotations

import functools
import os

import torch

from . import scheduler

# Inner-loop schedule of the main kernel (docs/kernel-design.md): "serial" issues each block's
# PV before the next QK^T (frees a K stage soonest: memory-bound shapes), "pipelined" overlaps
# the softmax of block j+1 with PV(j) (kept as an experiment: it measured slower on every
# benchmark row, see docs/kernel-design.md), "chained" is serial with QK^T(j+1) queued right
# behind PV(j) and unit rescales skipped (same numerics as serial; a candidate for the
# compute-bound rows, section 6; measured 6% slower on the H100, kept as an experiment),
# "seesaw" is the second main kernel (csrc/mla_decode_seesaw.cuh, docs/kernel-design.md section
# 7): both warpgroups compute S for their own block, so one's softmax overlaps the other's
# GEMMs. "auto" = serial, with the column-split combine for small batches and, for at most two
# requests, the output-column split the GPU scheduler marks (below; docs/kernel-design.md 7.16).
# $FLASHMLA_CUDA_SCHEDULE sets the default.
SCHEDULES = {"auto": 0, "serial": 1, "pipelined": 2, "chained": 3, "seesaw": 16}
# Optional "+flag" suffixes: "rendezvous" (both warpgroups bar.sync at the P handoff instead of
# bar.arrive; an experiment), "splitcombine" (the combine kernel merges each row with 4 warps
# of 128 columns: more loads in flight at small batch), "l2keep" (K pages loaded with L2
# evict_normal instead of evict_first), "earlyrefill" (seesaw: WG0 refills stage 0's V left
# before its second PV; measured slower, an experiment), "l2promo128" (the K tensor map asks L2
# for 128-byte instead of 256-byte promotion; an experiment), "wholetile" (S waits for all 9 TMA
# boxes of a page before it starts, instead of taking each box as it lands; an A/B switch), "ahead"
# (seesaw: each warpgroup queues the next pair's S right behind its last PV, FlashMLA's order of
# operations within our v1 math; docs/kernel-design.md 7.10), "cluster" (seesaw: the m-block thread
# blocks that read the same pages launched in clusters of two; an experiment, 7.12), "tmaout" /
# "tmaq" (one kv head: a whole request's output written and the Q tile loaded with TMA at each
# request boundary; seesaw 7.13, serial family 7.25, not with "colsplit"), "colsplit"
# (serial only: where the metadata is marked column-split, scheduler.py, two thread blocks share
# each part and row tile, each doing PV and the output for 256 of the 512 columns; for small
# batches, where half the SMs would idle; 7.16), "nomask" (seesaw+ahead: the
# steady-state pair step without masking code where that is exact, s_q <= 66 or no causal mask and
# a positive scale; the same bits; 7.20), "pvbfirst" (seesaw+ahead: WG0 issues the next pair's S
# only after WG1 has issued its second PV; the same bits; neutral in 7.20, 0.5-0.9% faster after
# the lazy running max, at the A/B's resolution, so "auto" adds it with "+ahead" since session 29;
# 7.30), "overlapcombine" (seesaw only: the combine merges each split request as soon as its chunks are stored, overlapping
# the main kernel's last thread blocks; "auto" drops it where the seesaw kernel does not run; 7.22),
# "earlyq" (seesaw+ahead+tmaout+tmaq: the next request's Q tile loads during a request's last step
# and the output is staged in the last block's K stage, whose refill waits for the output store;
# the same bits; "auto" drops it where that kernel does not run; 7.28), "chainpv" (seesaw+ahead+nomask:
# where block B keeps the running max in every row, WG1 queues PV_B,right right behind PV_A,right
# instead of after its retirement; the same bits; 7.32), "sbrightfirst" (with "chainpv": the next
# S_B starts on stage 1's right boxes, which that order refills first; another summation order of
# S; 7.32).
SCHEDULE_FLAGS = {"rendezvous": 4, "splitcombine": 8, "l2keep": 32, "earlyrefill": 64, "l2promo128": 128,
                  "wholetile": 256, "ahead": 512, "noload": 1024, "l2hot": 2048, "cluster": 4096,
                  "nopartial": 8192, "nocombine": 16384, "tmaout": 32768, "tmaq": 65536, "colsplit": 131072,
                  "nomask": 262144, "pvbfirst": 524288,
                  "overlapcombine": 1048576, "earlyq": 2097152, "chainpv": 4194304,
                  "sbrightfirst": 8388608}
# Timing probes of the seesaw kernel, for scripts/ab_cuda.py only: their OUTPUT IS WRONG by design.
# "+noload" issues no K refill (the time the kernel would take if loads cost nothing), "+l2hot"
# reloads one page per thread block over and over (loads that always hit L2); docs/kernel-design.md 7.12.
# "+nopartial" skips the seesaw's fp32 partial stores of split requests, "+nocombine" does not launch
# the combine kernel (what a split request's ends cost; 7.19).
PROBE_FLAGS = ("noload", "l2hot", "nopartial", "nocombine")
# "auto" adds +l2keep when a kv head has at most this many query rows (one 64-row tile, so each
# page is read by one thread block). On the H100 (run 9, docs/kernel-design.md 5.3) it made the
# fixed-length b=128 rows with 16-64 rows per kv head 2.5-3.5% faster (varied lengths -1..+2%),
# and rows with two or four tiles 3-20% slower.
AUTO_L2KEEP_MAX_ROWS_PER_KV = 64
# ... and only from this batch size on (when the caller says the batch). Smaller batches split every
# request over many parts, and their fp32 partials, written by the main kernel and read back by the
# combine, are what the L2 should keep: on the H100 (session 21, docs/kernel-design.md 7.24) +l2keep
# made b8-b32 4-6% slower, b64 h16 level and b128 2.5-3.5% faster.
AUTO_L2KEEP_MIN_BATCH = 64
# "auto" adds +splitcombine when the batch has at most this many query rows (b * s_q * h_q). On
# the H100 (docs/kernel-design.md section 6.7) it cut b=1 from 30 to 22 us (h16, 4K) and from 67 to
# 42 us (h128, 16K), was neutral at 256-1024 rows, and 3-12% slower at b=128, where many
# warps each merge a row that has only one or two chunks.
AUTO_SPLITCOMBINE_MAX_ROWS = 256
# ... and up to this many query rows when the batch has at most AUTO_SPLITCOMBINE_MAX_BATCH requests
# (each then split over 4-16 parts): on the H100 (session 21, docs/kernel-design.md 7.24) 3-18%
# faster at b4-b16 with 512-1024 query rows, level at b32 with 1024, 1% slower at b64 h16 and 9% at
# b16 h128 (2048 rows).
AUTO_SPLITCOMBINE_MAX_ROWS_SMALL_BATCH = 1024
AUTO_SPLITCOMBINE_MAX_BATCH = 32
# "auto" launches the seesaw kernel when a kv head has at least this many query rows (s_q * h_q /
# h_kv; two or more 64-row tiles re-read each page, so the tensor cores, not HBM, set the pace) and
# the batch is large. On the H100 (docs/kernel-design.md section 7) seesaw was 4-9% faster than
# serial on every b=128 row with 256 rows per kv head (s_q 2, h_q 128) and 9% slower at b=1 s_q 2
# h_q 128 (256 rows, one request). With 128 rows per kv head, three runs on 2026-11-24 (run 9,
# docs/kernel-design.md 7.6) had it 2-5% faster on the fixed-length rows (b32 s_q1 32K h128 among
# them) and 1-2% slower on the varied-length 4K rows.
AUTO_SEESAW_MIN_ROWS_PER_KV = 128
AUTO_SEESAW_MIN_QUERY_ROWS = 4096
# ... and adds "+ahead" (the next pair's S queued behind the PVs) from this many rows per kv head
# on. Three side-by-side runs on the H100 (session 9, docs/kernel-design.md 7.10): 3-5% faster at
# b128 s_q2 8K h128 (fixed and varied), level at 4K fixed, 1-2% slower at 4K varied; 2-9% slower
# on every row with 128 rows per kv head, which keep the plain seesaw. With "+ahead" comes "+nomask"
# (its steady-state pair step without masking code where that is exact; the same bits): 2-3%
# faster on the four rows with 256 rows per kv head in three runs (session 19, docs/kernel-design.md 7.20).
# And "+earlyq" (the next request's Q tile loaded during a request's last step; the same bits):
# 0.994 geomean over six b128 s_q2 h128 shapes from 2K to 16K, 1.2-1.4% faster at 2K, 4K varied
# and 16K, level at 4K and 8K fixed (session 27, docs/kernel-design.md 7.28).
# And "+pvbfirst" (WG0 queues the next pair's S only once WG1 has issued PV_B,right, which frees
# the next B page; the same bits): 0.995 and 0.992 geomean of "auto" without it on the four 256-row
# rows in two 10-round A/Bs on the H100 (sessions 28-29, docs/kernel-design.md 7.29-7.30); ~1% is
# that A/B's noise (rows it cannot change moved 0.986-0.991), so the gain is small but all eight
# ratios were below 1. And "+chainpv+sbrightfirst" (WG1's two PVs queued back to back where the lazy
# max did not move, and the next S_B on the boxes that chaining frees first): 0.980-0.990 of "auto"
# without them on the four 256-row rows (5-6 of 6 rounds), 2.6-3.5% faster call by call at full
# clock and at the 700 W cap (session 31, docs/kernel-design.md 7.32).
AUTO_AHEAD_MIN_ROWS_PER_KV = 256
# "auto" adds "+tmaout+tmaq" to the serial kernel (not the column split) from this batch size on:
# a whole request's output staged in the Q tile and written by TMA stores instead of 64 scattered
# 4-byte stores per thread, and every chunk's Q tile loaded by TMA. On the H100 (session 22,
# docs/kernel-design.md 7.25) 1-2.6% faster on the b128 memory-bound rows and 3-10% at b4-b32.
AUTO_SERIAL_TMA_MIN_BATCH = 1
# "auto" adds "+colsplit" (for the batches of scheduler.may_split_columns) only up to this many query
# rows per kv head. Above that, the serial kernel as `auto` runs it elsewhere (+tmaout+tmaq, 7.25) on
# the same half-parts metadata, one thread block per part, beats the column split: on the H100
# (session 23, docs/kernel-design.md 7.26) 2-5% at b1-b2 with 64-128 heads and 10% at b1 s_q1 16K
# h32, while at b1 4K h16 the column split stays 4% ahead (1% at 4K h32).
AUTO_COLSPLIT_MAX_ROWS_PER_KV = 16

try:  # built by setup.py only where nvcc, a CUDA torch and sm90 are available
    from . import _C  # type: ignore[attr-defined]
    _IMPORT_ERROR = ""
except ImportError as exc:  # pragma: no cover - depends on the build
    _C = None
    _IMPORT_ERROR = str(exc)


@functools.lru_cache(maxsize=None)
def _device_status(index: int) -> tuple[bool, str]:
    major, minor = torch.cuda.get_device_capability(index)
    if (major, minor) != (9, 0):
        name = torch.cuda.get_device_name(index)
        return False, f"the kernel is built for sm_90a (Hopper); {name} is sm_{major}{minor}"
    return True, ""


def is_available(device: torch.device) -> tuple[bool, str]:
    """(True, "") when the extension is built and ``device`` is a Hopper GPU, else (False, why)."""
    device = torch.device(device)
    if _C is None:
        return False, f"flashmla._C is not built ({_IMPORT_ERROR}); build it with `pip install -e . --no-build-isolation` on a machine with nvcc and a CUDA torch"
    if device.type != "cuda":
        return False, f"the CUDA backend needs a CUDA device, got {device}"
    if not torch.cuda.is_available():
        return False, "torch.cuda.is_available() is False"
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _device_status(index)


def _schedule_code(schedule: str | None, query_rows: int | None = None, rows_per_kv: int | None = None,
                   batch: int | None = None) -> int:
    """"auto", "serial", "pipelined", "chained" or "seesaw", optionally followed by "+rendezvous" and/or
    "+splitcombine" (see SCHEDULES / SCHEDULE_FLAGS), e.g. "chained+splitcombine". With
    ``query_rows`` (b * s_q * h_q), "auto" adds "+splitcombine" for small batches, and with
    ``rows_per_kv`` (s_q * h_q / h_kv) too it picks the seesaw kernel for large compute-bound ones
    and "+l2keep" where one row tile serves a kv head, and with ``batch`` too it adds "+colsplit"
    (the serial kernel that follows the metadata's column-split mark) for the small batches whose
    schedule may be column-split (scheduler.may_split_columns) with at most AUTO_COLSPLIT_MAX_ROWS_PER_KV
    query rows per kv head, adds "+splitcombine" up to
    AUTO_SPLITCOMBINE_MAX_ROWS_SMALL_BATCH query rows for at most AUTO_SPLITCOMBINE_MAX_BATCH
    requests, keeps "+l2keep" to batches of at least AUTO_L2KEEP_MIN_BATCH, and adds "+tmaout+tmaq" to
    the serial kernel from AUTO_SERIAL_TMA_MIN_BATCH requests on."""
    name = schedule if schedule is not None else os.environ.get("FLASHMLA_CUDA_SCHEDULE", "auto")
    base, *flags = str(name).split("+")
    if base not in SCHEDULES or any(f not in SCHEDULE_FLAGS for f in flags) or len(set(flags)) != len(flags):
        raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, optionally with "
                         f"{' / '.join('+' + f for f in SCHEDULE_FLAGS)}, got {name!r}")
    code = SCHEDULES[base] | sum(SCHEDULE_FLAGS[f] for f in flags)
    if base == "auto" and query_rows is not None and (
            query_rows <= AUTO_SPLITCOMBINE_MAX_ROWS
            or (batch is not None and batch <= AUTO_SPLITCOMBINE_MAX_BATCH
                and query_rows <= AUTO_SPLITCOMBINE_MAX_ROWS_SMALL_BATCH)):
        code |= SCHEDULE_FLAGS["splitcombine"]
    if (base == "auto" and query_rows is not None and rows_per_kv is not None
            and rows_per_kv >= AUTO_SEESAW_MIN_ROWS_PER_KV and query_rows >= AUTO_SEESAW_MIN_QUERY_ROWS):
        code |= SCHEDULES["seesaw"]
        if rows_per_kv >= AUTO_AHEAD_MIN_ROWS_PER_KV:
            code |= (SCHEDULE_FLAGS["ahead"] | SCHEDULE_FLAGS["nomask"] | SCHEDULE_FLAGS["earlyq"]
                     | SCHEDULE_FLAGS["pvbfirst"] | SCHEDULE_FLAGS["chainpv"] | SCHEDULE_FLAGS["sbrightfirst"])
        code |= SCHEDULE_FLAGS["tmaout"] | SCHEDULE_FLAGS["tmaq"] | SCHEDULE_FLAGS["overlapcombine"]
    if (base == "auto" and rows_per_kv is not None and rows_per_kv <= AUTO_L2KEEP_MAX_ROWS_PER_KV
            and (batch is None or batch >= AUTO_L2KEEP_MIN_BATCH)):
        code |= SCHEDULE_FLAGS["l2keep"]
    if (base == "auto" and query_rows is not None and batch is not None and not code & SCHEDULES["seesaw"]
            and scheduler.may_split_columns(batch, query_rows)
            and (rows_per_kv is None or rows_per_kv <= AUTO_COLSPLIT_MAX_ROWS_PER_KV)):
        code |= SCHEDULE_FLAGS["colsplit"]
    if (base == "auto" and batch is not None and batch >= AUTO_SERIAL_TMA_MIN_BATCH
            and not code & (SCHEDULES["seesaw"] | SCHEDULE_FLAGS["colsplit"])):
        code |= SCHEDULE_FLAGS["tmaout"] | SCHEDULE_FLAGS["tmaq"]
    if code & SCHEDULE_FLAGS["overlapcombine"] and not code & SCHEDULES["seesaw"]:
        if base != "auto":
            raise ValueError(f"schedule {name!r}: +overlapcombine needs the seesaw kernel (its thread blocks "
                             f"count the stored chunks)")
        code &= ~SCHEDULE_FLAGS["overlapcombine"]  # auto: only where it picked the seesaw kernel
    early_q_needs = SCHEDULES["seesaw"] | SCHEDULE_FLAGS["ahead"] | SCHEDULE_FLAGS["tmaout"] | SCHEDULE_FLAGS["tmaq"]
    if code & SCHEDULE_FLAGS["earlyq"] and code & early_q_needs != early_q_needs:
        if base != "auto":
            raise ValueError(f"schedule {name!r}: +earlyq needs the seesaw kernel with +ahead+tmaout+tmaq "
                             f"(it changes their request boundary)")
        code &= ~SCHEDULE_FLAGS["earlyq"]  # auto: only where it picked seesaw+ahead
    if code & SCHEDULE_FLAGS["colsplit"] and (code & SCHEDULES["seesaw"] or code & 3 > 1):
        raise ValueError(f"schedule {name!r}: +colsplit is a variant of the serial kernel, and this batch "
                         f"runs the {'seesaw' if code & SCHEDULES['seesaw'] else 'pipelined/chained'} kernel")
    if code & SCHEDULE_FLAGS["colsplit"] and code & (SCHEDULE_FLAGS["tmaout"] | SCHEDULE_FLAGS["tmaq"]):
        raise ValueError(f"schedule {name!r}: +tmaout / +tmaq do not apply to the column split (+colsplit), "
                         f"whose thread blocks each own half the output columns")
    return code


def decode(q, k_cache, block_table, cache_seqlens, softmax_scale: float, causal: bool,
           tile_scheduler_metadata, num_splits, schedule: str | None = None):
    """Paged MLA decode on the sm90a kernel; returns ``(out [b,s_q,h_q,512], lse [b,h_q,s_q])``.

    Needs the tile-scheduler metadata of ``get_mla_metadata`` (docs/internals.md).
    ``schedule``: "auto" (default: serial, plus the split combine for at most
    AUTO_SPLITCOMBINE_MAX_ROWS query rows, or AUTO_SPLITCOMBINE_MAX_ROWS_SMALL_BATCH with at most
    AUTO_SPLITCOMBINE_MAX_BATCH requests, "+l2keep" for one row tile per kv head from
    AUTO_L2KEEP_MIN_BATCH requests on, "+tmaout+tmaq" from AUTO_SERIAL_TMA_MIN_BATCH requests on,
    and "+colsplit" for the batches of scheduler.may_split_columns with at most
    AUTO_COLSPLIT_MAX_ROWS_PER_KV query rows per kv head; or the seesaw kernel for large batches with at least
    AUTO_SEESAW_MIN_ROWS_PER_KV query rows per kv head, with "+tmaout+tmaq" (output and Q tile by
    TMA at each request boundary; for one kv head), "+overlapcombine" (the combine overlapping the
    main kernel's tail) and, from AUTO_AHEAD_MIN_ROWS_PER_KV on,
    "+ahead+nomask+earlyq+pvbfirst+chainpv+sbrightfirst"),
    "serial", "pipelined", "chained" or "seesaw", with optional flags; see SCHEDULES and
    SCHEDULE_FLAGS.
    """
    if _C is None:
        raise RuntimeError(is_available(q.device)[1])
    if tile_scheduler_metadata is None or num_splits is None:
        raise ValueError("the CUDA backend needs tile_scheduler_metadata and num_splits from get_mla_metadata")
    # Shapes of the schedule are checked here as well as in the binding (docs/kernel-design.md).
    if tile_scheduler_metadata.dim() != 2 or tile_scheduler_metadata.shape[1] != 8:
        raise ValueError(f"tile_scheduler_metadata must have shape [num_sm_parts, 8], got "
                         f"{list(tile_scheduler_metadata.shape)}")
    if num_splits.dim() != 1 or num_splits.shape[0] != q.shape[0] + 1:
        raise ValueError(f"num_splits must have shape [{q.shape[0] + 1}] (batch + 1), got {list(num_splits.shape)}")
    out, lse = _C.decode(q, k_cache, block_table, cache_seqlens, float(softmax_scale), bool(causal),
                         tile_scheduler_metadata, num_splits,
                         _schedule_code(schedule, q.shape[0] * q.shape[1] * q.shape[2],
                                        q.shape[1] * q.shape[2] // max(k_cache.shape[2], 1), q.shape[0]))
    return out, lse


def get_mla_metadata_gpu(cache_seqlens: torch.Tensor, num_q_tokens_per_head_k: int, num_heads_k: int,
                         num_sms: int, min_blocks_per_part: int = 1,
                         column_split: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The tile scheduler as one GPU kernel: same tensors as ``flashmla.scheduler`` (with the same
    ``min_blocks_per_part`` floor, 1 = none, and ``column_split``, None = by the rule), no host sync."""
    if _C is None:
        raise RuntimeError(is_available(cache_seqlens.device)[1])
    if not isinstance(min_blocks_per_part, int) or not 1 <= min_blocks_per_part <= 1 << 20:
        raise ValueError(f"min_blocks_per_part must be an int in [1, 2**20], got {min_blocks_per_part!r}")
    batch = cache_seqlens.shape[0] if cache_seqlens.dim() == 1 else 1  # (the binding checks the shape)
    mode = scheduler.column_split_mode(column_split, batch, batch * int(num_q_tokens_per_head_k) * int(num_heads_k))
    metadata, num_splits = _C.get_mla_metadata(cache_seqlens, int(num_q_tokens_per_head_k), int(num_heads_k),
                                               int(num_sms), min_blocks_per_part, mode)
    return metadata, num_splits
