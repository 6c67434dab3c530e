"""The Triton backend: its entry point, launch path and portable split-KV (flash-decoding) kernel.

Same API and semantics as the other backends (docs/internals.md). On Hopper the backend runs the
warp-specialised Gluon kernel of ``triton_hopper.py`` (``kernel_config``); this module launches
it and keeps the portable ``tl.dot`` kernel that every other GPU (and the CPU interpreter) runs.
The design of both is in docs/triton-kernel.md. The portable kernel, in short:

* All ``s_q * h_q / h_kv`` query rows that read one kv head are folded into row tiles of
  ``BLOCK_M`` rows, so every cache block is read once per kv head and row tile (vLLM's Triton
  MLA kernel reads it once per 16 heads instead).
* The 576-wide dot is two dots, 512 (latent) + 64 (rope), since Triton ranges are powers of
  two; the 512-wide latent tile loaded for QK^T is reused as V for PV.
* Work is split across programs in one of two ways (``KernelConfig.plan``):
  - ``"metadata"``: the tile-scheduler metadata of ``get_mla_metadata`` (docs/internals.md):
    one program per (row tile, SM part, kv head) walks its part's slice of the batch, so
    varied lengths stay balanced;
  - ``"own"``: a shape-only plan (``plan_splits``) cutting every request into chunks of
    ``pages_per_split`` pages, one program per (row tile, chunk, request x kv head).
  A request done in one chunk is written directly; the others leave fp32 partials that a
  combine kernel merges by lse. Neither plan needs a host sync (CUDA-graph safe).
* Masks use ``tl.where`` and masked loads (``other=0``) on both the scores and the loaded
  cache rows, so NaN in unused cache rows never reaches the output (0 * NaN = NaN).
* Rows with nothing to attend (zero-length requests, fully masked causal rows) give out = 0
  and lse = +inf.

The kernels also run in the Triton interpreter on CPU tensors, which is how CI covers them;
TRITON_INTERPRET=1 must be set before triton is first imported (see ``is_available``).
"""
from __future__ import annotations

import functools
import itertools
import os
import warnings
from typing import NamedTuple, Optional

import torch

from . import triton_configs, triton_hopper
from .triton_configs import KernelConfig

try:  # Triton is optional: without it this backend reports itself unavailable.
    import triton
    import triton.language as tl
    _IMPORT_ERROR = ""
    _jit = triton.jit
except ImportError as exc:  # pragma: no cover - depends on the environment
    triton = None
    tl = None
    _IMPORT_ERROR = f"triton is not installed ({exc})"

    def _jit(fn=None, **_):
        return fn if fn is not None else (lambda f: f)

PAGE_SIZE = 64
HEAD_DIM_QK = 576
HEAD_DIM_V = 512
HEAD_DIM_ROPE = HEAD_DIM_QK - HEAD_DIM_V
LOG2E = 1.4426950408889634
METADATA_WIDTH = 8
# Planner constants, in units of "one program reads one 64-token page".
PROGRAM_OVERHEAD_PAGES = 2  # Q load, pipeline fill and epilogue of one program
COMBINE_LAUNCH_PAGES = 1  # the combine kernel's launch and tail
MAX_SPLITS = 64
COMBINE_BLOCK_ROWS = 8  # combine rows per program when whole 512-wide rows are merged
COMBINE_SMALL_BLOCK_ROWS = 4  # ... and when the value columns are split across programs
COMBINE_MIN_BLOCK_DV = 64
COMBINE_TILE_ELEMENTS = 8192  # fp32 partial values a combine program loads per step (4 warps)
LAST_SPLIT_KERNEL = None  # the last launched main kernel (its .metadata, .n_regs, .n_spills: tuning)
# Direct relaunch of compiled kernels (why: at b = 1 an eager call is bound by host time, and
# Triton's per-launch argument binding and specialisation is much of it; see
# docs/triton-kernel.md). FLASHMLA_TRITON_FAST_LAUNCH=0 turns it off.
FAST_LAUNCH = os.environ.get("FLASHMLA_TRITON_FAST_LAUNCH", "1").strip() != "0"
_COMPILED: dict = {}  # (launch-plan key, kernel name) -> the CompiledKernel of its first launch
LAUNCH_COUNTS = {"direct": 0, "triton": 0}  # launches by path (probes: is the direct path taken?)
_MAX_COMPILED = 4096
TRITON_ALIGNMENT = 16  # bytes: Triton specialises pointer arguments on this alignment


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def _imported_for_interpreter() -> bool:
    """triton.language's library functions (tl.max, tl.sum, ...) and this module's kernels are
    wrapped when imported; the interpreter can run them only if TRITON_INTERPRET was set then."""
    return type(tl.max).__name__ == "InterpretedFunction" and \
        type(_mla_decode_split_kernel).__name__ == "InterpretedFunction"


def _interpreter_numpy_problem() -> str:
    """Triton < 3.7.1's interpreter calls int() on 1-element arrays (every runtime loop bound),
    which numpy >= 2.4 rejects with a TypeError."""
    import numpy

    def version(text):
        return tuple(int(part) for part in text.split("+")[0].split(".")[:3] if part.isdigit())
    if version(triton.__version__) < (3, 7, 1) and version(numpy.__version__) >= (2, 4):
        return (f"the Triton {triton.__version__} interpreter fails with numpy {numpy.__version__}: "
                "use numpy<2.4 or triton>=3.7.1")
    return ""


def is_available(device: torch.device) -> tuple[bool, str]:
    """(usable on ``device``, reason when not)."""
    device = torch.device(device)
    if triton is None:
        return False, _IMPORT_ERROR
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "torch sees no CUDA device"
        if _imported_for_interpreter():
            return False, "triton was imported with TRITON_INTERPRET=1: only CPU tensors can run"
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            return False, f"needs compute capability 8.0 or newer (bf16 tensor cores); device has {major}.{minor}"
        return True, ""
    if device.type == "cpu":
        if not _interpreting():
            return False, ("CPU tensors run only under the Triton interpreter: set TRITON_INTERPRET=1 "
                           "before the first import of triton")
        broken = _interpreter_numpy_problem()
        if broken:
            return False, broken
        if not _imported_for_interpreter():
            return False, ("TRITON_INTERPRET=1 was set after triton was imported, so the kernels were built "
                           "for the GPU; set it before the first import of triton")
        return True, "Triton interpreter (TRITON_INTERPRET=1): slow, meant for tests"
    return False, f"device type {device.type!r} is not supported by the Triton backend"


# --------------------------------------------------------------------------- kernels
@_jit
def _attend_range(q_ptr, q_row, row_ok, k_head, bt_row, stride_k_block, stride_k_tok,
                  tok_begin, tok_end, key_limit, scale_log2, dv_lo,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PAGE: tl.constexpr,
                  D_V: tl.constexpr, D_ROPE: tl.constexpr, DOT_FP32: tl.constexpr,
                  Q_IN_LOOP: tl.constexpr, DV_SPLIT: tl.constexpr):
    """Online-softmax attention of BLOCK_M query rows over keys [tok_begin, tok_end) of one
    request and kv head. Returns (unnormalised acc, running max m in log2 units, sum l).
    With DV_SPLIT = 2 the program accumulates only output columns [dv_lo, dv_lo + D_V / 2)
    (its twin program the other half), which halves the fp32 accumulator at the price of
    computing the scores twice (see _attend_range_dv_half)."""
    if DV_SPLIT == 2:
        acc, m_i, l_i = _attend_range_dv_half(q_ptr, q_row, row_ok, k_head, bt_row, stride_k_block, stride_k_tok,
                                              tok_begin, tok_end, key_limit, scale_log2, dv_lo,
                                              BLOCK_M, BLOCK_N, PAGE, D_V, D_ROPE, DOT_FP32)
    else:
        acc, m_i, l_i = _attend_range_full(q_ptr, q_row, row_ok, k_head, bt_row, stride_k_block, stride_k_tok,
                                           tok_begin, tok_end, key_limit, scale_log2,
                                           BLOCK_M, BLOCK_N, PAGE, D_V, D_ROPE, DOT_FP32, Q_IN_LOOP)
    return acc, m_i, l_i


@_jit
def _online_softmax_step(s, allowed, v, acc, m_i, l_i):
    """One flash-attention step on base-2 scores ``s``: mask, rescale, accumulate ``P @ v``.
    ``v`` is the value tile as loaded (fp32 where the dots run in fp32 under the interpreter,
    whose fp32 -> bf16 cast truncates instead of rounding, so P then stays fp32 too)."""
    s = tl.where(allowed, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    # A row with nothing allowed so far keeps m = -inf; subtract 0 instead (exp2(-inf) = 0).
    m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_sub)
    p = tl.exp2(s - m_sub[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
    return acc, m_new, l_i


@_jit
def _attend_range_full(q_ptr, q_row, row_ok, k_head, bt_row, stride_k_block, stride_k_tok,
                       tok_begin, tok_end, key_limit, scale_log2,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PAGE: tl.constexpr,
                       D_V: tl.constexpr, D_ROPE: tl.constexpr, DOT_FP32: tl.constexpr,
                       Q_IN_LOOP: tl.constexpr):
    """_attend_range over all D_V value columns (one [BLOCK_M, 512] accumulator)."""
    dv = tl.arange(0, D_V)
    dr = tl.arange(0, D_ROPE)
    if not Q_IN_LOOP:
        q_nope = tl.load(q_ptr + q_row[:, None] + dv[None, :], mask=row_ok[:, None], other=0.0)
        q_rope = tl.load(q_ptr + q_row[:, None] + D_V + dr[None, :], mask=row_ok[:, None], other=0.0)
        if DOT_FP32:  # exact upcast; see _dots_in_fp32
            q_nope = q_nope.to(tl.float32)
            q_rope = q_rope.to(tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D_V], tl.float32)
    offs_n = tl.arange(0, BLOCK_N)
    for start in range(tok_begin, tok_end, BLOCK_N):
        if Q_IN_LOOP:  # re-read from L1/L2 each step: lets the compiler stage Q like K
            q_nope = tl.load(q_ptr + q_row[:, None] + dv[None, :], mask=row_ok[:, None], other=0.0)
            q_rope = tl.load(q_ptr + q_row[:, None] + D_V + dr[None, :], mask=row_ok[:, None], other=0.0)
            if DOT_FP32:
                q_nope = q_nope.to(tl.float32)
                q_rope = q_rope.to(tl.float32)
        # BLOCK_N divides the page and ranges start on a page: one step lies in one page, and
        # only pages below ceil(seqlen / 64) are ever looked up in the block table.
        page = tl.load(bt_row + start // PAGE).to(tl.int64)
        key = start + offs_n
        key_ok = key < tok_end
        k_row = page * stride_k_block + (start % PAGE + offs_n) * stride_k_tok
        # Rows past the end are not loaded (other=0): they may hold NaN, and 0 * NaN = NaN in PV.
        k_nope = tl.load(k_head + k_row[:, None] + dv[None, :], mask=key_ok[:, None], other=0.0)
        k_rope = tl.load(k_head + k_row[:, None] + D_V + dr[None, :], mask=key_ok[:, None], other=0.0)
        if DOT_FP32:
            k_nope = k_nope.to(tl.float32)
            k_rope = k_rope.to(tl.float32)
        s = tl.dot(q_nope, tl.trans(k_nope))
        s = tl.dot(q_rope, tl.trans(k_rope), s)
        allowed = key_ok[None, :] & (key[None, :] < key_limit[:, None])
        acc, m_i, l_i = _online_softmax_step(s * scale_log2, allowed, k_nope, acc, m_i, l_i)
    return acc, m_i, l_i


@_jit
def _attend_range_dv_half(q_ptr, q_row, row_ok, k_head, bt_row, stride_k_block, stride_k_tok,
                          tok_begin, tok_end, key_limit, scale_log2, dv_lo,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PAGE: tl.constexpr,
                          D_V: tl.constexpr, D_ROPE: tl.constexpr, DOT_FP32: tl.constexpr):
    """_attend_range for one half of the value columns. The 512 latent columns are loaded as
    two 256-wide pieces, this program's own half first, so the scores use all 576 columns
    while PV reuses only the own piece as V: no element is loaded twice, and the accumulator
    is [BLOCK_M, 256] instead of [BLOCK_M, 512] (half the registers per row)."""
    D_HALF: tl.constexpr = D_V // 2
    dh = tl.arange(0, D_HALF)
    dr = tl.arange(0, D_ROPE)
    dv_other = D_HALF - dv_lo  # 256 for the first half, 0 for the second
    q_own = tl.load(q_ptr + q_row[:, None] + dv_lo + dh[None, :], mask=row_ok[:, None], other=0.0)
    q_other = tl.load(q_ptr + q_row[:, None] + dv_other + dh[None, :], mask=row_ok[:, None], other=0.0)
    q_rope = tl.load(q_ptr + q_row[:, None] + D_V + dr[None, :], mask=row_ok[:, None], other=0.0)
    if DOT_FP32:
        q_own = q_own.to(tl.float32)
        q_other = q_other.to(tl.float32)
        q_rope = q_rope.to(tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D_HALF], tl.float32)
    offs_n = tl.arange(0, BLOCK_N)
    for start in range(tok_begin, tok_end, BLOCK_N):
        page = tl.load(bt_row + start // PAGE).to(tl.int64)
        key = start + offs_n
        key_ok = key < tok_end
        k_row = page * stride_k_block + (start % PAGE + offs_n) * stride_k_tok
        k_own = tl.load(k_head + k_row[:, None] + dv_lo + dh[None, :], mask=key_ok[:, None], other=0.0)
        k_other = tl.load(k_head + k_row[:, None] + dv_other + dh[None, :], mask=key_ok[:, None], other=0.0)
        k_rope = tl.load(k_head + k_row[:, None] + D_V + dr[None, :], mask=key_ok[:, None], other=0.0)
        if DOT_FP32:
            k_own = k_own.to(tl.float32)
            k_other = k_other.to(tl.float32)
            k_rope = k_rope.to(tl.float32)
        s = tl.dot(q_own, tl.trans(k_own))
        s = tl.dot(q_other, tl.trans(k_other), s)
        s = tl.dot(q_rope, tl.trans(k_rope), s)
        allowed = key_ok[None, :] & (key[None, :] < key_limit[:, None])
        acc, m_i, l_i = _online_softmax_step(s * scale_log2, allowed, k_own, acc, m_i, l_i)
    return acc, m_i, l_i


@_jit
def _store_rows(acc, m_i, l_i, write_final, out_ptr, lse_ptr, out_part_ptr, lse_part_ptr,
                out_row, lse_offset, part_row, row_ok, dv_lo, D_V: tl.constexpr, DV_SPLIT: tl.constexpr):
    """Normalise and store: to out/lse (the request's only chunk) or to its partial slot.
    The program owns output columns [dv_lo, dv_lo + D_V / DV_SPLIT); with DV_SPLIT = 2 both
    twins compute the same lse and only the first half stores it."""
    dv = dv_lo + tl.arange(0, D_V // DV_SPLIT)
    lse_ok = row_ok & (dv_lo == 0)
    has_keys = l_i > 0.0
    l_safe = tl.where(has_keys, l_i, 1.0)
    o = acc / l_safe[:, None]
    lse = (m_i + tl.log2(l_safe)) / 1.4426950408889634  # natural log
    if write_final:
        tl.store(out_ptr + out_row[:, None] + dv[None, :], o.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])
        tl.store(lse_ptr + lse_offset, tl.where(has_keys, lse, float("inf")), mask=lse_ok)
    else:
        tl.store(out_part_ptr + part_row[:, None] * D_V + dv[None, :], o, mask=row_ok[:, None])
        tl.store(lse_part_ptr + part_row, tl.where(has_keys, lse, float("-inf")), mask=lse_ok)


@_jit(do_not_specialize=["stride_bt_b", "stride_lse_b", "stride_lse_h", "s_q", "group", "rows", "h_kv",
                         "pages_per_split", "num_splits", "causal"])
def _mla_decode_split_kernel(
    q_ptr, k_ptr, block_table_ptr, seqlens_ptr,
    out_ptr, lse_ptr, out_part_ptr, lse_part_ptr,
    stride_q_b, stride_q_s, stride_q_h,
    stride_k_block, stride_k_tok, stride_k_head,
    stride_bt_b,
    stride_o_b, stride_o_s, stride_o_h,
    stride_lse_b, stride_lse_h,
    s_q, group, rows, h_kv, pages_per_split, num_splits,
    scale_log2, causal,
    HAS_PARTIALS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    PAGE: tl.constexpr, D_V: tl.constexpr, D_ROPE: tl.constexpr,
    DOT_FP32: tl.constexpr, Q_IN_LOOP: tl.constexpr, DV_SPLIT: tl.constexpr,
):
    """Own plan. One program: BLOCK_M query rows of one kv head of one request, over one chunk."""
    # Twins that split the value columns (DV_SPLIT = 2) are adjacent: they share each cache block in L2.
    m_tile = tl.program_id(0) // DV_SPLIT
    dv_lo = (tl.program_id(0) % DV_SPLIT) * (D_V // DV_SPLIT)
    split = tl.program_id(1)
    batch_head = tl.program_id(2)
    batch = batch_head // h_kv
    kv_head = batch_head % h_kv

    seqlen = tl.load(seqlens_ptr + batch)
    num_pages = (seqlen + PAGE - 1) // PAGE
    num_chunks = (num_pages + pages_per_split - 1) // pages_per_split
    # Chunk 0 always runs: for a request with nothing to attend it writes out = 0, lse = +inf.
    if split > 0 and split >= num_chunks:
        return

    # Query rows of this tile: row r is query token r // group of q head kv_head * group + r % group.
    row = m_tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = row < rows
    token = row // group
    head = kv_head * group + row % group
    q_row = batch.to(tl.int64) * stride_q_b + token * stride_q_s + head * stride_q_h
    # Causal is bottom-right aligned: token t sees keys [0, seqlen - (s_q - 1 - t)).
    key_limit = seqlen - causal * (s_q - 1 - token)
    tok_begin = split * pages_per_split * PAGE
    tok_end = tl.minimum(tok_begin + pages_per_split * PAGE, seqlen)
    # Keys no row of the tile may see are not loaded at all.
    last_token = (tl.minimum(m_tile * BLOCK_M + BLOCK_M, rows) - 1) // group
    tok_end = tl.minimum(tok_end, seqlen - causal * (s_q - 1 - last_token))

    acc, m_i, l_i = _attend_range(
        q_ptr, q_row, row_ok, k_ptr + kv_head * stride_k_head,
        block_table_ptr + batch.to(tl.int64) * stride_bt_b, stride_k_block, stride_k_tok,
        tok_begin, tok_end, key_limit, scale_log2, dv_lo,
        BLOCK_M, BLOCK_N, PAGE, D_V, D_ROPE, DOT_FP32, Q_IN_LOOP, DV_SPLIT)

    if HAS_PARTIALS:
        write_final = num_chunks <= 1
    else:
        write_final = num_chunks >= 0  # always: there is no partial buffer
    out_row = batch.to(tl.int64) * stride_o_b + token * stride_o_s + head * stride_o_h
    lse_offset = batch.to(tl.int64) * stride_lse_b + head * stride_lse_h + token
    part_row = ((batch.to(tl.int64) * num_splits + split) * h_kv + kv_head) * rows + row
    _store_rows(acc, m_i, l_i, write_final, out_ptr, lse_ptr, out_part_ptr, lse_part_ptr,
                out_row, lse_offset, part_row, row_ok, dv_lo, D_V, DV_SPLIT)


@_jit(do_not_specialize=["stride_bt_b", "stride_lse_b", "stride_lse_h", "s_q", "group", "rows", "h_kv",
                         "causal"])
def _mla_decode_parts_kernel(
    q_ptr, k_ptr, block_table_ptr, seqlens_ptr, metadata_ptr, num_splits_ptr,
    out_ptr, lse_ptr, out_part_ptr, lse_part_ptr,
    stride_q_b, stride_q_s, stride_q_h,
    stride_k_block, stride_k_tok, stride_k_head,
    stride_bt_b,
    stride_o_b, stride_o_s, stride_o_h,
    stride_lse_b, stride_lse_h,
    s_q, group, rows, h_kv,
    scale_log2, causal,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    PAGE: tl.constexpr, D_V: tl.constexpr, D_ROPE: tl.constexpr,
    DOT_FP32: tl.constexpr, Q_IN_LOOP: tl.constexpr, DV_SPLIT: tl.constexpr, MD_WIDTH: tl.constexpr,
):
    """Metadata plan. One program: BLOCK_M query rows of one kv head over one SM part's slice of
    the batch (docs/internals.md: requests begin_req..end_req, blocks cut at the part's ends)."""
    m_tile = tl.program_id(0) // DV_SPLIT
    dv_lo = (tl.program_id(0) % DV_SPLIT) * (D_V // DV_SPLIT)
    part = tl.program_id(1)
    kv_head = tl.program_id(2)
    md = metadata_ptr + part * MD_WIDTH
    begin_req = tl.load(md)
    if begin_req < 0:  # an empty part
        return
    begin_block = tl.load(md + 1)
    end_req = tl.load(md + 2)
    end_block = tl.load(md + 3)
    begin_chunk = tl.load(md + 4)

    row = m_tile * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = row < rows
    token = row // group
    head = kv_head * group + row % group
    last_token = (tl.minimum(m_tile * BLOCK_M + BLOCK_M, rows) - 1) // group
    # disable_licm: hoisting loop invariants out of this loop keeps them live across the whole
    # pipelined inner loop; the table's 128-row entry then spilled 176 words instead of 47
    # (compiled for sm_90a with Triton 3.6; docs/triton-kernel.md).
    for req in tl.range(begin_req, end_req + 1, disable_licm=True):
        seqlen = tl.load(seqlens_ptr + req)
        num_pages = (seqlen + PAGE - 1) // PAGE
        block_lo = tl.where(req == begin_req, begin_block, 0)
        block_hi = tl.where(req == end_req, end_block, num_pages)
        if block_lo < block_hi:  # a zero-length request has no range (the combine writes it)
            chunk = tl.where(req == begin_req, begin_chunk, 0)
            split_base = tl.load(num_splits_ptr + req)
            num_chunks = tl.load(num_splits_ptr + req + 1) - split_base
            req64 = tl.full([], 0, tl.int64) + req  # (a Python int in the interpreter)
            q_row = req64 * stride_q_b + token * stride_q_s + head * stride_q_h
            key_limit = seqlen - causal * (s_q - 1 - token)
            tok_begin = block_lo * PAGE
            tok_end = tl.minimum(block_hi * PAGE, seqlen)
            tok_end = tl.minimum(tok_end, seqlen - causal * (s_q - 1 - last_token))
            acc, m_i, l_i = _attend_range(
                q_ptr, q_row, row_ok, k_ptr + kv_head * stride_k_head,
                block_table_ptr + req64 * stride_bt_b, stride_k_block, stride_k_tok,
                tok_begin, tok_end, key_limit, scale_log2, dv_lo,
                BLOCK_M, BLOCK_N, PAGE, D_V, D_ROPE, DOT_FP32, Q_IN_LOOP, DV_SPLIT)
            out_row = req64 * stride_o_b + token * stride_o_s + head * stride_o_h
            lse_offset = req64 * stride_lse_b + head * stride_lse_h + token
            part_row = ((split_base + chunk).to(tl.int64) * h_kv + kv_head) * rows + row
            _store_rows(acc, m_i, l_i, num_chunks == 1, out_ptr, lse_ptr, out_part_ptr, lse_part_ptr,
                        out_row, lse_offset, part_row, row_ok, dv_lo, D_V, DV_SPLIT)


@_jit
def _combine_step_rows(chunk, slot0, num_chunks, h_kv, kv_head, rows, row, row_ok):
    """Partial rows [chunks, rows] of one combine step (slot ``slot0 + chunk``), and which exist."""
    part_row = ((slot0 + chunk[:, None]).to(tl.int64) * h_kv + kv_head) * rows + row[None, :]
    return part_row, (chunk[:, None] < num_chunks) & row_ok[None, :]


@_jit(do_not_specialize=["stride_lse_b", "stride_lse_h", "group", "rows", "h_kv", "pages_per_split",
                         "num_splits"])
def _mla_decode_combine_kernel(
    seqlens_ptr, num_splits_ptr, out_ptr, lse_ptr, out_part_ptr, lse_part_ptr,
    stride_o_b, stride_o_s, stride_o_h,
    stride_lse_b, stride_lse_h,
    group, rows, h_kv, pages_per_split, num_splits,
    USE_METADATA: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_C: tl.constexpr, PAGE: tl.constexpr,
    D_V: tl.constexpr,
):
    """Merge the chunk partials of BLOCK_R rows x BLOCK_DV value columns of one (request, kv head)
    by their lse. Requests with one chunk were written by the main kernel; with none (metadata
    plan) this writes out = 0, lse = +inf.

    Two passes over the chunks, BLOCK_C chunks at a time: the largest lse first, then the
    weighted sum. Loading BLOCK_C chunks per step keeps many loads in flight; a loop of one chunk
    per step was bound by load latency when one request has many chunks (b = 1: 33-65 chunks of
    a 4K-16K request, ~1 us per chunk). Small batches also split the value columns across
    programs (BLOCK_DV < 512) so the grid fills the GPU (``_combine_tiles``)."""
    r_tile = tl.program_id(0)
    dv_tile = tl.program_id(1)
    batch_head = tl.program_id(2)
    batch = batch_head // h_kv
    kv_head = batch_head % h_kv
    if USE_METADATA:
        slot0 = tl.load(num_splits_ptr + batch)
        num_chunks = tl.load(num_splits_ptr + batch + 1) - slot0
        done = num_chunks == 1
    else:
        seqlen = tl.load(seqlens_ptr + batch)
        num_chunks = ((seqlen + PAGE - 1) // PAGE + pages_per_split - 1) // pages_per_split
        slot0 = batch * num_splits
        done = num_chunks <= 1  # the split kernel's chunk 0 wrote it, empty or not
    if done:
        return
    row = r_tile * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = row < rows
    dv = dv_tile * BLOCK_DV + tl.arange(0, BLOCK_DV)
    offs_c = tl.arange(0, BLOCK_C)
    # pass 1: the largest chunk lse of each row
    m_i = tl.full([BLOCK_R], float("-inf"), tl.float32)
    for c0 in range(0, num_chunks, BLOCK_C):
        part_row, ok = _combine_step_rows(c0 + offs_c, slot0, num_chunks, h_kv, kv_head, rows, row, row_ok)
        lse_c = tl.load(lse_part_ptr + part_row, mask=ok, other=float("-inf"))
        m_i = tl.maximum(m_i, tl.max(lse_c, 0))
    # A row no chunk attended keeps m = -inf: subtract 0 instead (exp(-inf) = 0, no inf - inf).
    m_sub = tl.where(m_i == float("-inf"), 0.0, m_i)
    # pass 2: out = sum_c exp(lse_c - m) o_c / sum_c exp(lse_c - m)
    denom = tl.zeros([BLOCK_R], tl.float32)
    acc = tl.zeros([BLOCK_R, BLOCK_DV], tl.float32)
    for c0 in range(0, num_chunks, BLOCK_C):
        part_row, ok = _combine_step_rows(c0 + offs_c, slot0, num_chunks, h_kv, kv_head, rows, row, row_ok)
        lse_c = tl.load(lse_part_ptr + part_row, mask=ok, other=float("-inf"))
        o_c = tl.load(out_part_ptr + part_row[:, :, None] * D_V + dv[None, None, :], mask=ok[:, :, None],
                      other=0.0)
        weight = tl.exp(lse_c - m_sub[None, :])
        denom += tl.sum(weight, 0)
        acc += tl.sum(weight[:, :, None] * o_c, 0)
    has_keys = denom > 0.0
    d_safe = tl.where(has_keys, denom, 1.0)
    o = acc / d_safe[:, None]
    token = row // group
    head = kv_head * group + row % group
    out_row = batch.to(tl.int64) * stride_o_b + token * stride_o_s + head * stride_o_h
    tl.store(out_ptr + out_row[:, None] + dv[None, :], o.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])
    lse = tl.where(has_keys, m_i + tl.log(d_safe), float("inf"))
    tl.store(lse_ptr + batch.to(tl.int64) * stride_lse_b + head * stride_lse_h + token, lse,
             mask=row_ok & (dv_tile == 0))


def _combine_tiles(programs_per_column_block: int, num_sms: int) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_DV, BLOCK_C) of the combine. ``programs_per_column_block`` = batch x kv
    heads x 4-row tiles. Large grids keep whole 512-wide rows (8 rows per program, as few
    programs as possible: most requests there have one or two chunks); small ones split the value
    columns until the grid has about one program per SM. BLOCK_C fills a fixed register budget of
    COMBINE_TILE_ELEMENTS fp32 values per program."""
    block_dv = HEAD_DIM_V
    if programs_per_column_block < 2 * num_sms:
        block_dv = COMBINE_MIN_BLOCK_DV
        while block_dv < HEAD_DIM_V and programs_per_column_block * (HEAD_DIM_V // block_dv) > num_sms:
            block_dv *= 2
    block_r = COMBINE_BLOCK_ROWS if block_dv == HEAD_DIM_V else COMBINE_SMALL_BLOCK_ROWS
    return block_r, block_dv, max(1, COMBINE_TILE_ELEMENTS // (block_r * block_dv))


def _dots_in_fp32(dtype: torch.dtype) -> bool:
    """The Triton interpreter (3.6 to 3.9 at least) runs tl.dot as numpy.matmul on the raw
    storage, and stores bf16 as uint16, so a bf16 dot returns garbage. Under the interpreter the
    kernel upcasts the dot operands to fp32 first (exact: bf16 values are fp32 values)."""
    return _interpreting() and dtype == torch.bfloat16


# --------------------------------------------------------------------------- planning
def device_family(device: torch.device) -> str:
    if device.type != "cuda":
        return "interpreter"
    return _cuda_family(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=64)
def _cuda_family(device_index: int) -> str:
    return triton_configs.family_of(torch.cuda.get_device_capability(device_index))


@functools.lru_cache(maxsize=64)
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


# "auto": the Gluon Hopper kernel where it runs (triton_configs.GLUON_FAMILIES), else the portable
# kernel; "portable": always the portable kernel (e.g. to compare the two on a Hopper GPU).
KERNEL_CHOICE = os.environ.get("FLASHMLA_TRITON_KERNEL", "auto").strip().lower()


def kernel_config(device: torch.device, rows: int, portable: bool = False) -> KernelConfig:
    """The kernel and block sizes used for ``rows`` query rows per kv head on ``device``
    (``portable``: the portable kernel's table entry even where the Gluon kernel would run)."""
    if device.type != "cuda":
        return triton_configs.INTERPRETER_CONFIG
    if KERNEL_CHOICE not in ("auto", "portable"):
        raise ValueError(f"FLASHMLA_TRITON_KERNEL must be 'auto' or 'portable'; got {KERNEL_CHOICE!r}")
    family = device_family(device)
    if not portable and KERNEL_CHOICE != "portable" and family in triton_configs.GLUON_FAMILIES \
            and _gluon_runs(device.index if device.index is not None else torch.cuda.current_device()):
        return triton_configs.GLUON_CONFIG
    return triton_configs.config_for(family, rows)


@functools.lru_cache(maxsize=64)
def _gluon_runs(device_index: int) -> bool:
    return triton_hopper.is_available(torch.device("cuda", device_index))[0]


@functools.lru_cache(maxsize=4096)
def plan_splits(batch: int, h_kv: int, row_tiles: int, max_pages: int, num_sms: int,
                config: KernelConfig, rows: int) -> tuple[int, int]:
    """Choose ``(num_splits, pages_per_split)`` for the own plan from shapes alone (no host sync).

    A cost model in units of "one program reads one page": the main kernel runs in waves of
    ``num_sms * ctas_per_sm`` programs, each reading ``pages_per_split`` pages plus a fixed
    overhead; more splits add fp32 partial traffic (written and read once) and a combine launch.
    ``max_pages`` is the block table's width, the longest a request can be.
    """
    max_pages = max(1, max_pages)
    slots = max(1, num_sms * config.ctas_per_sm)
    base = max(1, batch * h_kv * row_tiles)
    page_bytes = PAGE_SIZE * HEAD_DIM_QK * 2
    best = None
    for splits in range(1, min(max_pages, MAX_SPLITS) + 1):
        pages_per_split = -(-max_pages // splits)
        splits_used = -(-max_pages // pages_per_split)
        if best is not None and splits_used == best[1]:
            continue
        waves = -(-base * splits_used // slots)
        cost = waves * (pages_per_split + PROGRAM_OVERHEAD_PAGES)
        if splits_used > 1:
            partial_bytes = batch * h_kv * rows * splits_used * (HEAD_DIM_V + 1) * 4 * 2
            cost += partial_bytes / (slots * page_bytes) + COMBINE_LAUNCH_PAGES
        if best is None or cost < best[0]:
            best = (cost, splits_used, pages_per_split)
    return best[1], best[2]


def _cuda_ok(device: torch.device) -> bool:
    return _cuda_family_ok(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=64)
def _cuda_family_ok(device_index: int) -> bool:
    return is_available(torch.device("cuda", device_index))[0]


# --------------------------------------------------------------------------- entry point
def decode(q, k_cache, block_table, cache_seqlens, softmax_scale: float, causal: bool,
           tile_scheduler_metadata: Optional[torch.Tensor] = None, num_splits: Optional[torch.Tensor] = None):
    """Paged MLA decode (see docs/internals.md). Returns ``(out, lse)``.

    With the table's ``plan == "metadata"`` and metadata given, work follows the tile-scheduler
    metadata; otherwise this kernel's own shape-only split plan (``plan_splits``).
    """
    return decode_with_config(q, k_cache, block_table, cache_seqlens, softmax_scale, causal,
                              tile_scheduler_metadata=tile_scheduler_metadata, num_splits=num_splits)


def _check_inputs(q_shape, q_strides, k_shape, k_strides, k_dtype, dtype, bt_dtype, seqlens_dtype):
    """Checks of the kernels' own assumptions (the public API validates more). They depend on
    shapes, strides and dtypes only, so they run once per call signature, in ``_launch_plan``
    (which is not cached when it raises)."""
    b, s_q, h_q, d = q_shape
    h_kv = k_shape[2]
    if d != HEAD_DIM_QK or k_shape[-1] != HEAD_DIM_QK:
        raise ValueError(f"q and k_cache must have head dim {HEAD_DIM_QK}; got {d} and {k_shape[-1]}")
    if k_shape[1] != PAGE_SIZE:
        raise ValueError(f"k_cache must have page size {PAGE_SIZE}; got {k_shape[1]}")
    if h_q % h_kv:
        raise ValueError(f"h_q ({h_q}) must be a multiple of h_kv ({h_kv})")
    if q_strides[-1] != 1 or k_strides[-1] != 1:
        raise ValueError("q and k_cache must be contiguous in their last dimension")
    if k_dtype != dtype:  # (the kept kernels are specialised on q's dtype for both)
        raise TypeError(f"k_cache must have q's dtype {dtype}; got {k_dtype}")
    if bt_dtype != torch.int32 or seqlens_dtype != torch.int32:
        raise TypeError(f"block_table and cache_seqlens must be int32; got {bt_dtype} and {seqlens_dtype}")


_PLAN_TOKENS = itertools.count()


class _LaunchPlan(NamedTuple):
    """Everything about a call that follows from shapes, strides, dtypes and the config: worked
    out once per distinct call signature (``_launch_plan``), so a repeated eager call only
    allocates its outputs and launches (small batches are bound by this host time)."""
    use_metadata: bool
    use_gluon: bool  # the main kernel is the Gluon Hopper kernel (triton_hopper.py)
    out_shape: tuple
    lse_shape: tuple
    part_numel: Optional[tuple]  # (out_part, lse_part) fp32 elements, None when nothing is split
    main_grid: tuple
    main_ints: tuple  # the main kernel's integer arguments after the tensors
    main_const: dict
    combine_grid: Optional[tuple]
    combine_ints: tuple
    combine_const: dict
    token: int  # unique per plan object: the key of its kept compiled kernels (cheap to hash)


@functools.lru_cache(maxsize=1024)
def _launch_plan(device, dtype, q_shape, q_strides, k_dtype, k_shape, k_strides, bt_dtype, bt_shape,
                 seqlens_dtype, causal, config, pages_per_split, metadata_shape, num_splits_shape,
                 combine_tiles) -> _LaunchPlan:
    _check_inputs(q_shape, q_strides, k_shape, k_strides, k_dtype, dtype, bt_dtype, seqlens_dtype)
    b, s_q, h_q, _ = q_shape
    h_kv = k_shape[2]
    group = h_q // h_kv
    rows = s_q * group
    if config is None:
        config = kernel_config(device, rows)
    use_metadata = pages_per_split is None and config.plan == "metadata" and metadata_shape is not None
    if config.kernel == "gluon":
        problem = _gluon_problem(device, k_shape, k_strides, use_metadata)
        if problem:
            warnings.warn(f"Triton backend: the Gluon Hopper kernel cannot run this call ({problem}); "
                          f"using the portable kernel", stacklevel=4)
            config = triton_configs.config_for(device_family(device), rows)
    if config.kernel not in ("tl", "gluon"):
        raise ValueError(f"config.kernel must be 'tl' or 'gluon'; got {config.kernel!r}")
    if PAGE_SIZE % config.block_n:
        raise ValueError(f"BLOCK_N ({config.block_n}) must divide the page size {PAGE_SIZE}")
    if config.dv_split not in (1, 2):
        raise ValueError(f"dv_split must be 1 or 2; got {config.dv_split}")
    num_sms = _num_sms(device.index if device.index is not None else torch.cuda.current_device()) \
        if device.type == "cuda" else 4
    # (the interpreter runs only on the CPU; see _dots_in_fp32)
    dot_fp32 = device.type == "cpu" and _dots_in_fp32(dtype)
    bt_stride0 = bt_shape[1]  # block_table is made contiguous before the call
    row_tiles = -(-rows // config.block_m)
    # programs per (request, kv head, chunk) along the grid's first axis: row tiles x value halves
    tile_programs = row_tiles * config.dv_split
    max_pages = bt_shape[1]
    out_shape = (b, s_q, h_q, HEAD_DIM_V)
    lse_shape = (b, h_q, s_q)
    out_strides = (s_q * h_q * HEAD_DIM_V, h_q * HEAD_DIM_V, HEAD_DIM_V)  # torch.empty: contiguous
    lse_strides = (h_q * s_q, s_q)
    common_ints = (*q_strides[:3], *k_strides[:3], bt_stride0, *out_strides, *lse_strides)
    main_const = dict(DOT_FP32=dot_fp32, Q_IN_LOOP=config.q_in_loop, DV_SPLIT=config.dv_split,
                      BLOCK_M=config.block_m, BLOCK_N=config.block_n,
                      PAGE=PAGE_SIZE, D_V=HEAD_DIM_V, D_ROPE=HEAD_DIM_ROPE,
                      num_warps=config.num_warps, num_stages=config.num_stages)
    if use_metadata:
        if len(metadata_shape) != 2 or metadata_shape[1] != METADATA_WIDTH or num_splits_shape[0] < b + 1:
            raise ValueError(f"tile_scheduler_metadata must be [num_sm_parts, {METADATA_WIDTH}] and num_splits "
                             f"[b + 1]; got {metadata_shape} and {num_splits_shape}")
        num_parts = metadata_shape[0]
        part_rows = (b + num_parts) * h_kv * rows
        main_grid = (tile_programs, num_parts, h_kv)
        if config.kernel == "gluon":  # (its own arguments and launch options; no constexprs)
            main_ints = triton_hopper.launch_ints(q_strides, bt_stride0, out_strides, lse_strides, s_q, group, rows,
                                                  h_kv)
            main_const = dict(triton_hopper.LAUNCH_OPTIONS)
        else:
            main_ints = (*common_ints, s_q, group, rows, h_kv)
            main_const["MD_WIDTH"] = METADATA_WIDTH
        n_splits, pages_per_split = 0, 1  # unused by the metadata combine
    else:
        if pages_per_split is None:
            n_splits, pages_per_split = plan_splits(b, h_kv, tile_programs, max_pages, num_sms, config, rows)
        else:
            if pages_per_split < 1:
                raise ValueError(f"pages_per_split must be >= 1; got {pages_per_split}")
            n_splits = max(1, -(-max_pages // pages_per_split))
        # with one split the partial buffers are never written (lse is passed in their place)
        part_rows = b * n_splits * h_kv * rows if n_splits > 1 else 0
        main_grid = (tile_programs, n_splits, b * h_kv)
        main_ints = (*common_ints, s_q, group, rows, h_kv, pages_per_split, n_splits)
        main_const["HAS_PARTIALS"] = n_splits > 1
    combine = use_metadata or n_splits > 1
    if combine_tiles is None:
        combine_tiles = _combine_tiles(b * h_kv * -(-rows // COMBINE_SMALL_BLOCK_ROWS), num_sms)
    block_r, block_dv, block_c = combine_tiles
    if any(x < 1 or x & (x - 1) for x in combine_tiles) or HEAD_DIM_V % block_dv:
        raise ValueError(f"combine_tiles (rows, value columns, chunks per step) must be powers of two with "
                         f"the columns dividing {HEAD_DIM_V}; got {combine_tiles}")
    return _LaunchPlan(
        use_metadata=use_metadata, use_gluon=config.kernel == "gluon", out_shape=out_shape, lse_shape=lse_shape,
        part_numel=(part_rows * HEAD_DIM_V, part_rows) if part_rows else None,
        main_grid=main_grid, main_ints=main_ints, main_const=main_const,
        combine_grid=(-(-rows // block_r), HEAD_DIM_V // block_dv, b * h_kv) if combine else None,
        combine_ints=(*out_strides, *lse_strides, group, rows, h_kv, pages_per_split, n_splits),
        combine_const=dict(USE_METADATA=use_metadata, BLOCK_R=block_r, BLOCK_DV=block_dv, BLOCK_C=block_c,
                           PAGE=PAGE_SIZE, D_V=HEAD_DIM_V, num_warps=4),
        token=next(_PLAN_TOKENS))


def _gluon_problem(device, k_shape, k_strides, use_metadata) -> str:
    """Why the Gluon Hopper kernel cannot take a call, or "" when it can."""
    if not use_metadata:
        return "it follows the scheduler metadata, and none was given (or an own split plan was forced)"
    ok, reason = triton_hopper.is_available(device)
    if not ok:
        return reason
    return triton_hopper.cache_layout_problem(k_shape, k_strides)


def _launch_hooks():
    """Triton's launch enter/exit hooks, None for each that has nothing to call. Triton 3.6 keeps
    them as (usually empty) ``HookChain`` objects, never None; passing an empty chain would make
    every launch build launch metadata and call back into Python for nothing."""
    runtime = getattr(getattr(triton, "knobs", None), "runtime", None)
    enter = getattr(runtime, "launch_enter_hook", None)
    exit_ = getattr(runtime, "launch_exit_hook", None)
    if enter is not None and getattr(enter, "calls", True) == []:
        enter = None
    if exit_ is not None and getattr(exit_, "calls", True) == []:
        exit_ = None
    return enter, exit_


def _current_stream(device: torch.device) -> int:
    # (the raw handle, as Triton's own launcher reads it: building a torch.cuda.Stream object
    # cost several microseconds per launch)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch._C._cuda_getCurrentRawStream(index)


# The launcher call below is the one Triton 3.6's JITFunction.run makes; other Triton versions take
# Triton's own launch path until their call convention has been checked.
FAST_LAUNCH_TRITON_VERSIONS = ("3.6.",)


def _relaunchable(kernel) -> bool:
    version = getattr(triton, "__version__", "")
    return FAST_LAUNCH and not _interpreting() and version.startswith(FAST_LAUNCH_TRITON_VERSIONS) and all(
        hasattr(kernel, a) for a in ("run", "function", "packed_metadata", "launch_metadata"))


def _aligned(tensors) -> bool:
    """Every data pointer 16-byte aligned (as Triton specialised the kept kernels)."""
    bits = 0
    for t in tensors:
        bits |= t.data_ptr()
    return bits % TRITON_ALIGNMENT == 0


def _direct_launcher(kernel):
    """The C launch function behind ``kernel.run`` when calling it directly is equivalent (Triton
    3.6's CudaLauncher.__call__ only allocates global/profile scratch, which these kernels do
    not use); None otherwise (then ``kernel.run`` is called)."""
    launcher = getattr(kernel, "run", None)
    if all(hasattr(launcher, a) for a in ("launch", "launch_cooperative_grid", "launch_pdl")) and \
            getattr(launcher, "global_scratch_size", 1) == 0 and getattr(launcher, "profile_scratch_size", 1) == 0:
        return launcher
    return None


def _unwrapped_launch(launch):
    """Triton 3.6 wraps the C launch function of a kernel with tensor-descriptor parameters in a
    Python closure that rebuilds every descriptor's CUtensorMap and re-packs all arguments at
    each launch. Returns (the C function, {argument index: descriptor metadata}) from that
    closure, or (launch, {}) when it is not one."""
    cells = dict(zip(getattr(launch, "__code__", None) and launch.__code__.co_freevars or (),
                     (c.cell_contents for c in (getattr(launch, "__closure__", None) or ()))))
    if not {"launcher", "tensordesc_indices", "tensordesc_meta"} <= set(cells):
        return launch, {}
    meta = cells["tensordesc_meta"] or [None] * len(cells["tensordesc_indices"])
    return cells["launcher"], dict(zip(sorted(cells["tensordesc_indices"]), meta))


def _expanded_descriptor(desc, meta) -> tuple:
    """The C launcher's arguments for one tensor descriptor (CUtensorMap, shape, strides), built
    once per descriptor object (the Gluon kernel's descriptors are kept per cache tensor)."""
    expanded = getattr(desc, "_flashmla_launch_args", None)
    if expanded is None:
        from triton.backends.nvidia.driver import make_tensordesc_arg
        expanded = tuple(make_tensordesc_arg(desc, meta))
        desc._flashmla_launch_args = expanded
    return expanded


def _launch(jit_fn, key, grid, aligned, args, consts, device):
    """``jit_fn[grid](*args, **consts)``; the first launch for ``key`` (a launch plan) keeps the
    compiled kernel, and later launches with the same plan call its launcher directly, skipping
    Triton's argument binding and specialisation. The plan fixes every integer argument and the
    constexprs, so the specialisation can only differ in pointer alignment: a kernel is kept, and
    reused, only when ``aligned`` (every pointer argument 16-byte aligned, ``_aligned``: torch
    allocations are; a view with an offset may not be, and takes the ordinary path)."""
    kept = _COMPILED.get(key) if FAST_LAUNCH and aligned else None
    if kept is None:
        LAUNCH_COUNTS["triton"] += 1
        kernel = jit_fn[grid](*args, **consts)
        if aligned and _relaunchable(kernel):
            if len(_COMPILED) >= _MAX_COMPILED:
                _COMPILED.clear()
            # the signature's remaining parameters are the constexprs (fixed by the plan), by name
            const_values = tuple(consts[name] for name in jit_fn.arg_names[len(args):])
            launcher = _direct_launcher(kernel)
            # what Triton's wrapper passes the C launch function after the stream: the kernel,
            # its launch flags, no global/profile scratch, the packed metadata, no launch
            # metadata and no hooks
            launch_head = None if launcher is None else (
                kernel.function, launcher.launch_cooperative_grid, launcher.launch_pdl, None, None,
                kernel.packed_metadata, None, None, None)
            c_launch, descriptors = _unwrapped_launch(launcher.launch) if launcher is not None else (None, {})
            if len(descriptors) > 1 or any(i >= len(args) for i in descriptors):
                c_launch, descriptors = launcher.launch, {}  # (only one descriptor argument is spliced)
            _COMPILED[key] = (kernel, const_values, tuple(grid) + (1,) * (3 - len(grid)), launcher, launch_head,
                              c_launch, next(iter(descriptors.items()), None))
        return kernel
    LAUNCH_COUNTS["direct"] += 1
    compiled, const_values, grid, launcher, launch_head, c_launch, descriptor = kept
    stream = _current_stream(device)
    enter, exit_ = _launch_hooks()
    if launcher is not None and enter is None and exit_ is None:
        if descriptor is not None:  # splice in the kept CUtensorMap, shape and strides
            index, meta = descriptor
            args = args[:index] + _expanded_descriptor(args[index], meta) + args[index + 1:]
        c_launch(grid[0], grid[1], grid[2], stream, *launch_head, *args, *const_values)
    else:
        values = args + const_values
        metadata = compiled.launch_metadata(grid, stream, *values) if enter is not None or exit_ is not None else None
        compiled.run(grid[0], grid[1], grid[2], stream, compiled.function, compiled.packed_metadata,
                     metadata, enter, exit_, *values)
    return compiled


def decode_with_config(q, k_cache, block_table, cache_seqlens, softmax_scale: float, causal: bool,
                       config: Optional[KernelConfig] = None, pages_per_split: Optional[int] = None,
                       tile_scheduler_metadata: Optional[torch.Tensor] = None,
                       num_splits: Optional[torch.Tensor] = None,
                       combine_tiles: Optional[tuple[int, int, int]] = None):
    """``decode`` with the table entry and/or the own plan's chunk length (pages) overridden.
    ``pages_per_split`` forces the own plan; otherwise ``config.plan`` chooses (the metadata
    plan needs both metadata tensors). ``combine_tiles`` = (rows, value columns, chunks per
    step) of a combine program overrides ``_combine_tiles`` (tests).

    Small batches launched eagerly are bound by the host time of this function (a do_bench
    iteration hides only ~50 us of it behind its L2 clearing), so everything that follows from
    shapes, strides and dtypes is worked out once per call signature (``_launch_plan``), and a
    repeated call builds one key, allocates three buffers and makes two launches."""
    global LAST_SPLIT_KERNEL
    device = q.device
    ok, reason = (True, "") if device.type == "cuda" and _cuda_ok(device) else is_available(device)
    if not ok:
        raise RuntimeError(f"Triton backend unavailable on {device}: {reason}")
    block_table = block_table.contiguous()
    cache_seqlens = cache_seqlens.contiguous()
    with_metadata = tile_scheduler_metadata is not None and num_splits is not None
    plan = _launch_plan(device, q.dtype, q.shape, q.stride(), k_cache.dtype, k_cache.shape, k_cache.stride(),
                        block_table.dtype, block_table.shape, cache_seqlens.dtype, bool(causal), config,
                        pages_per_split, tile_scheduler_metadata.shape if with_metadata else None,
                        num_splits.shape if with_metadata else None,
                        None if combine_tiles is None else tuple(combine_tiles))
    out = torch.empty(plan.out_shape, dtype=q.dtype, device=device)
    lse = torch.empty(plan.lse_shape, dtype=torch.float32, device=device)
    if q.shape[0] == 0:
        return out, lse
    scale_log2 = float(softmax_scale) * LOG2E
    causal_flag = 1 if causal else 0
    if plan.part_numel is not None:  # one buffer: the fp32 partial outputs, then their lse
        out_part = torch.empty(plan.part_numel[0] + plan.part_numel[1], dtype=torch.float32, device=device)
        lse_part = out_part[plan.part_numel[0]:]  # 16-byte aligned: the outputs are rows of 512
    else:  # never written; any fp32 buffer will do as the pointer argument
        out_part = lse_part = lse
    inputs = (q, k_cache, block_table, cache_seqlens)
    main_kernel, main_name = _mla_decode_split_kernel, "split"
    if plan.use_metadata:
        inputs += (tile_scheduler_metadata.contiguous(), num_splits.contiguous())
        num_splits = inputs[-1]
        main_kernel, main_name = _mla_decode_parts_kernel, "parts"
    aligned = _aligned(inputs)
    if plan.use_gluon and k_cache.data_ptr() % TRITON_ALIGNMENT:
        # TMA needs a 16-byte aligned base (a view with an odd offset; plans do not see pointers)
        warnings.warn("Triton backend: k_cache's address is not 16-byte aligned, which the Gluon Hopper "
                      "kernel's TMA needs; using the portable kernel", stacklevel=2)
        return decode_with_config(q, k_cache, block_table, cache_seqlens, softmax_scale, causal,
                                  config=kernel_config(device, q.shape[1] * q.shape[2] // k_cache.shape[2],
                                                       portable=True),
                                  tile_scheduler_metadata=tile_scheduler_metadata, num_splits=num_splits,
                                  combine_tiles=combine_tiles)
    if plan.use_gluon:  # the Hopper kernel reads the cache through a TMA descriptor
        main_kernel, main_name = triton_hopper._mla_decode_hopper_kernel, "gluon"
        inputs = (q, triton_hopper.kv_descriptor(k_cache)) + inputs[2:]
    LAST_SPLIT_KERNEL = _launch(
        main_kernel, (plan.token, main_name), plan.main_grid, aligned,
        (*inputs, out, lse, out_part, lse_part, *plan.main_ints, scale_log2, causal_flag), plan.main_const, device)
    if plan.combine_grid is not None:
        splits = num_splits if plan.use_metadata else cache_seqlens
        _launch(_mla_decode_combine_kernel, (plan.token, "combine"), plan.combine_grid, aligned,
                (cache_seqlens, splits, out, lse, out_part, lse_part, *plan.combine_ints), plan.combine_const, device)
    return out, lse
