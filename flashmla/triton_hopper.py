"""The Triton backend's Hopper kernel: warp-specialised MLA decode written in Gluon.

Why a second kernel: plain Triton 3.6 cannot express the schedule the compute-bound rows need.
A chained ``tl.dot`` loop puts all warps of a program on the M dimension, so with a 64-row tile
and 8 warps both warpgroups compute the same 64 x 64 scores, and a 64 x 512 fp32 accumulator
does not fit one warpgroup (docs/triton-kernel.md, "What limits the compute-bound rows").
Gluon, the layout-explicit language that ships inside Triton (``triton.experimental.gluon``),
lets one program split the work by warpgroup, as the CUDA kernel in csrc/ does:

* a loader warp issues the TMA loads of each 64-token page (nine 64 x 64 boxes, 128-byte
  swizzle: exactly the wgmma operand layout) into two pipeline stages;
* warpgroup 0 (the default partition) computes S = Q K^T over all 576 dims, the online softmax
  and O[:, :256] += P V[:, :256], and hands P and the row rescale factors to
* warpgroup 1, which computes O[:, 256:] += P V[:, 256:] on the same page.

Every page crosses HBM once for both GEMMs (V is the first 512 columns of the K tile), and the
scores are computed once per 64 query rows. Work follows the tile-scheduler metadata
(docs/internals.md); partials and the combine are the portable kernel's (triton_decode.py).

Hopper only (sm_90), compiled by Triton's own compiler: no nvcc, no CUDA build.
"""
from __future__ import annotations

import torch

try:
    import triton
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (
        fence_async_shared, mbarrier, tma, warpgroup_mma, warpgroup_mma_wait)
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    _IMPORT_ERROR = ""
except ImportError as exc:  # pragma: no cover - depends on the Triton version
    gluon = gl = None
    _IMPORT_ERROR = f"Gluon (triton.experimental.gluon) is not importable: {exc}"

_constexpr = gl.constexpr if gl is not None else (lambda value: value)
# (constexpr: the kernels read these globals; host code reads .value through _int)
PAGE = _constexpr(64)
BLOCK_M = _constexpr(64)  # query rows per program: the wgmma M of one warpgroup
D_QK = _constexpr(576)
D_V = _constexpr(512)
BOX = _constexpr(64)  # dims per TMA box: 64 bf16 = 128 bytes, the widest swizzle
NUM_BOXES = _constexpr(9)  # per page: 8 latent (also V) + 1 rope
V_BOXES_PER_WG = _constexpr(4)  # each warpgroup owns 256 value columns
STAGES = _constexpr(2)  # pages in flight (2 x 72 KiB + the 72 KiB Q tile fill shared memory)
MD_WIDTH = _constexpr(8)
NUM_WARPS = 4  # the default partition (warpgroup 0)
# Registers per thread: the kernel's budget (maxnreg x 12 warps x 32 must fit 64K registers);
# warpgroup 1 and the loader get theirs by setmaxnreg, warpgroup 0 what is left.
MAXNREG = 168
WG1_REGS = _constexpr(224)
LOADER_REGS = _constexpr(24)


def _int(value) -> int:
    return int(getattr(value, "value", value))


def _gluon_jit(fn):
    return gluon.jit(fn) if gluon is not None else fn


# Gluon is experimental and its API moves between Triton releases: the kernel runs only on the
# versions it was compiled and tested with; other versions get the portable kernel.
TESTED_TRITON_VERSIONS = ("3.6.",)


def is_available(device: torch.device) -> tuple[bool, str]:
    """(usable on ``device``, reason when not)."""
    if gluon is None:
        return False, _IMPORT_ERROR
    if not triton.__version__.startswith(TESTED_TRITON_VERSIONS):
        return False, (f"the Gluon kernel is tested with Triton {', '.join(v + 'x' for v in TESTED_TRITON_VERSIONS)}; "
                       f"Triton {triton.__version__} runs the portable kernel")
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False, "the Gluon Hopper kernel runs only on a CUDA GPU"
    major, minor = torch.cuda.get_device_capability(device)
    if major != 9:
        return False, f"the Gluon kernel is written for Hopper (sm_90); device is sm_{major}{minor}"
    return True, ""


# --------------------------------------------------------------------------- shared helpers
@_gluon_jit
def _part_bounds(metadata_ptr, part):
    """This part's slice of the batch: (begin_req, begin_block, end_req, end_block, begin_chunk)."""
    md = metadata_ptr + part * MD_WIDTH
    return gl.load(md), gl.load(md + 1), gl.load(md + 2), gl.load(md + 3), gl.load(md + 4)


@_gluon_jit
def _request_blocks(req, seqlens_ptr, begin_req, begin_block, end_req, end_block,
                    s_q, causal, last_token):
    """Cache blocks [lo, hi) of request ``req`` in this part, trimmed to the keys the tile's last
    query row may see (bottom-right causal), and the request's length. All three partitions
    derive the same ranges, so their loops stay in step."""
    seqlen = gl.load(seqlens_ptr + req)
    num_pages = (seqlen + PAGE - 1) // PAGE
    lo = gl.where(req == begin_req, begin_block, 0)
    hi = gl.where(req == end_req, end_block, num_pages)
    visible = seqlen - causal * (s_q - 1 - last_token)
    hi_seen = gl.minimum(hi, gl.maximum((visible + PAGE - 1) // PAGE, 0))
    return lo, hi, gl.maximum(hi_seen, lo), seqlen


@_gluon_jit
def _chunk_slot(num_splits_ptr, req, begin_req, begin_chunk):
    """(partial slot of this part's chunk of ``req``, the request's number of chunks)."""
    split_base = gl.load(num_splits_ptr + req)
    num_chunks = gl.load(num_splits_ptr + req + 1) - split_base
    return split_base + gl.where(req == begin_req, begin_chunk, 0), num_chunks


@_gluon_jit
def _pv_quarter_boxes(p, kv_smem, base, alpha, o0, o1, o2, o3):
    """O = O * alpha + P V over one warpgroup's 256 value columns (four 64-column boxes of the
    stage from ``base``), waited for. Every accumulator is rescaled before the first wgmma: a
    rescale between two in-flight wgmmas makes ptxas wait for the first (C7517)."""
    o0 = o0 * alpha[:, None]
    o1 = o1 * alpha[:, None]
    o2 = o2 * alpha[:, None]
    o3 = o3 * alpha[:, None]
    o0 = warpgroup_mma(p, kv_smem.index(base + 0), o0, is_async=True)
    o1 = warpgroup_mma(p, kv_smem.index(base + 1), o1, is_async=True)
    o2 = warpgroup_mma(p, kv_smem.index(base + 2), o2, is_async=True)
    o3 = warpgroup_mma(p, kv_smem.index(base + 3), o3, is_async=True)
    return warpgroup_mma_wait(0, deps=(o0, o1, o2, o3))


# --------------------------------------------------------------------------- partitions
@_gluon_jit
def _loader(kv_desc, block_table_ptr, seqlens_ptr, metadata_ptr, kv_smem, kv_ready, kv_empty,
            stride_bt_b, kv_col, s_q, causal, last_token):
    """One warp: TMA loads of every page of the part, STAGES ahead of the consumers."""
    part = gl.program_id(1)
    begin_req, begin_block, end_req, end_block, begin_chunk = _part_bounds(metadata_ptr, part)
    it = 0
    if begin_req >= 0:
        for req in range(begin_req, end_req + 1):
            lo, hi, hi_seen, seqlen = _request_blocks(req, seqlens_ptr, begin_req, begin_block, end_req,
                                                      end_block, s_q, causal, last_token)
            bt_row = block_table_ptr + req.to(gl.int64) * stride_bt_b
            for blk in range(lo, hi_seen):
                stage = it % STAGES
                mbarrier.wait(kv_empty.index(stage), ((it // STAGES) & 1) ^ 1)
                page = gl.load(bt_row + blk)
                ready = kv_ready.index(stage)
                mbarrier.expect(ready, NUM_BOXES * PAGE * BOX * kv_desc.dtype.primitive_bitwidth // 8)
                for box in gl.static_range(NUM_BOXES):
                    tma.async_copy_global_to_shared(kv_desc, [page * PAGE, kv_col + box * BOX], ready,
                                                    kv_smem.index(stage * NUM_BOXES + box))
                it += 1


@_gluon_jit
def _value_half(seqlens_ptr, metadata_ptr, num_splits_ptr, out_ptr, out_part_ptr,
                kv_smem, kv_ready, kv_empty, p_smem, alpha_smem, l_smem, p_ready, p_empty,
                stride_o_b, stride_o_s, stride_o_h, s_q, group, rows, h_kv, causal, last_token):
    """Warpgroup 1: O[:, 256:512] += P V[:, 256:512] with P and the rescale from warpgroup 0."""
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 64, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    row_layout: gl.constexpr = gl.SliceLayout(1, mma)
    part = gl.program_id(1)
    m_tile = gl.program_id(0)
    kv_head = gl.program_id(2)
    begin_req, begin_block, end_req, end_block, begin_chunk = _part_bounds(metadata_ptr, part)
    it = 0
    if begin_req >= 0:
        for req in range(begin_req, end_req + 1):
            lo, hi, hi_seen, seqlen = _request_blocks(req, seqlens_ptr, begin_req, begin_block, end_req,
                                                      end_block, s_q, causal, last_token)
            if lo < hi:
                o4 = gl.zeros([BLOCK_M, BOX], gl.float32, mma)
                o5 = gl.zeros([BLOCK_M, BOX], gl.float32, mma)
                o6 = gl.zeros([BLOCK_M, BOX], gl.float32, mma)
                o7 = gl.zeros([BLOCK_M, BOX], gl.float32, mma)
                inv_l = gl.full([BLOCK_M], 1.0, gl.float32, row_layout)
                for blk in range(lo, hi_seen):
                    stage = it % STAGES
                    mbarrier.wait(p_ready, it & 1)
                    mbarrier.wait(kv_ready.index(stage), (it // STAGES) & 1)  # (visibility of the page)
                    p = p_smem.load(p_layout)
                    alpha = alpha_smem.load(row_layout)
                    if blk == hi_seen - 1:
                        l_final = l_smem.load(row_layout)
                        inv_l = 1.0 / gl.where(l_final > 0.0, l_final, 1.0)
                    mbarrier.arrive(p_empty, count=1)
                    o4, o5, o6, o7 = _pv_quarter_boxes(p, kv_smem, stage * NUM_BOXES + V_BOXES_PER_WG, alpha,
                                                       o4, o5, o6, o7)
                    mbarrier.arrive(kv_empty.index(stage), count=1)
                    it += 1
                slot, num_chunks = _chunk_slot(num_splits_ptr, req, begin_req, begin_chunk)
                _store_half(o4, o5, o6, o7, inv_l, num_chunks == 1, out_ptr, out_part_ptr, req, slot,
                            m_tile, kv_head, stride_o_b, stride_o_s, stride_o_h, group, rows, h_kv,
                            V_BOXES_PER_WG * BOX, mma)


@_gluon_jit
def _store_half(o0, o1, o2, o3, inv_l, write_final, out_ptr, out_part_ptr, req, slot, m_tile, kv_head,
                stride_o_b, stride_o_s, stride_o_h, group, rows, h_kv, COL0: gl.constexpr,
                mma: gl.constexpr):
    """Normalised 256-column half of the tile: to ``out`` (a request done in one chunk) or to
    its fp32 partial slot (merged by the combine kernel)."""
    row = m_tile * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, mma))
    col = gl.arange(0, BOX, layout=gl.SliceLayout(0, mma))
    row_ok = (row < rows)[:, None]
    scale = inv_l[:, None]
    if write_final:
        token = row // group
        head = kv_head * group + row % group
        dst = out_ptr + (req.to(gl.int64) * stride_o_b + token * stride_o_s + head * stride_o_h + COL0)[:, None] \
            + col[None, :]
        dtype = out_ptr.dtype.element_ty
        gl.store(dst, (o0 * scale).to(dtype), mask=row_ok)
        gl.store(dst + BOX, (o1 * scale).to(dtype), mask=row_ok)
        gl.store(dst + 2 * BOX, (o2 * scale).to(dtype), mask=row_ok)
        gl.store(dst + 3 * BOX, (o3 * scale).to(dtype), mask=row_ok)
    else:
        part_row = (slot.to(gl.int64) * h_kv + kv_head) * rows + row
        part_dst = out_part_ptr + (part_row * D_V + COL0)[:, None] + col[None, :]
        gl.store(part_dst, o0 * scale, mask=row_ok)
        gl.store(part_dst + BOX, o1 * scale, mask=row_ok)
        gl.store(part_dst + 2 * BOX, o2 * scale, mask=row_ok)
        gl.store(part_dst + 3 * BOX, o3 * scale, mask=row_ok)


@_gluon_jit
def _scores_half(q_ptr, seqlens_ptr, metadata_ptr, num_splits_ptr, out_ptr, lse_ptr, out_part_ptr, lse_part_ptr,
                 q_smem, kv_smem, kv_ready, kv_empty, p_smem, alpha_smem, l_smem, p_ready, p_empty,
                 stride_q_b, stride_q_s, stride_q_h, stride_o_b, stride_o_s, stride_o_h,
                 stride_lse_b, stride_lse_h, s_q, group, rows, h_kv, scale_log2, causal, last_token):
    """Warpgroup 0: S = Q K^T, online softmax, O[:, :256] += P V[:, :256], lse."""
    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, 64, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    row_layout: gl.constexpr = gl.SliceLayout(1, mma)
    col_layout: gl.constexpr = gl.SliceLayout(0, mma)
    # Q loads: 16-byte vectors, one 64-column box per pass
    q_load: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [4, 1], [1, 0])
    # zeroing the rows of a last page past the end (same shape as a box)
    part = gl.program_id(1)
    m_tile = gl.program_id(0)
    kv_head = gl.program_id(2)
    begin_req, begin_block, end_req, end_block, begin_chunk = _part_bounds(metadata_ptr, part)

    row = m_tile * BLOCK_M + gl.arange(0, BLOCK_M, layout=row_layout)
    token = row // group
    q_rows = m_tile * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, q_load))
    q_cols = gl.arange(0, BOX, layout=gl.SliceLayout(0, q_load))
    q_ok = (q_rows < rows)[:, None]
    q_row_off = (q_rows // group) * stride_q_s + (kv_head * group + q_rows % group) * stride_q_h
    key_in_page = gl.arange(0, PAGE, layout=col_layout)
    tok_in_page = gl.arange(0, PAGE, layout=gl.SliceLayout(1, q_load))
    it = 0
    if begin_req >= 0:
        for req in range(begin_req, end_req + 1):
            lo, hi, hi_seen, seqlen = _request_blocks(req, seqlens_ptr, begin_req, begin_block, end_req,
                                                      end_block, s_q, causal, last_token)
            if lo < hi:
                # Q tile of this request (rows past the tile's end are zero)
                q_base = q_ptr + req.to(gl.int64) * stride_q_b + q_row_off[:, None] + q_cols[None, :]
                for box in gl.static_range(NUM_BOXES):
                    q_smem.index(box).store(gl.load(q_base + box * BOX, mask=q_ok, other=0.0))
                fence_async_shared()
                # Causal is bottom-right aligned: token t sees keys [0, seqlen - (s_q - 1 - t)).
                key_limit = gl.minimum(seqlen - causal * (s_q - 1 - token), seqlen)
                m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, row_layout)
                l_i = gl.zeros([BLOCK_M], gl.float32, row_layout)
                o0 = gl.zeros([BLOCK_M, BOX], gl.float32, mma)
                o1 = gl.zeros([BLOCK_M, BOX], gl.float32, mma)
                o2 = gl.zeros([BLOCK_M, BOX], gl.float32, mma)
                o3 = gl.zeros([BLOCK_M, BOX], gl.float32, mma)
                for blk in range(lo, hi_seen):
                    stage = it % STAGES
                    mbarrier.wait(kv_ready.index(stage), (it // STAGES) & 1)
                    base = stage * NUM_BOXES
                    s = gl.zeros([BLOCK_M, PAGE], gl.float32, mma)
                    for box in gl.static_range(NUM_BOXES):
                        s = warpgroup_mma(q_smem.index(box), kv_smem.index(base + box).permute((1, 0)), s,
                                          use_acc=box > 0, is_async=True)
                    s = warpgroup_mma_wait(0, deps=(s,))
                    valid = seqlen - blk * PAGE  # keys of this page before the end of the request
                    if valid < PAGE:
                        # The page's tail may hold NaN and P = 0 there: 0 * NaN = NaN in PV, so
                        # the value rows past the end are zeroed before either warpgroup's PV.
                        keep = (tok_in_page < valid)[:, None]
                        for box in gl.static_range(2 * V_BOXES_PER_WG):
                            tile = kv_smem.index(base + box)
                            tile.store(gl.where(keep, tile.load(q_load), 0.0).to(tile.dtype))
                        fence_async_shared()
                    key = blk * PAGE + key_in_page
                    s = gl.where(key[None, :] < key_limit[:, None], s * scale_log2, float("-inf"))
                    m_new = gl.maximum(m_i, gl.max(s, 1))
                    # a row with nothing allowed so far keeps m = -inf; subtract 0 instead
                    m_sub = gl.where(m_new == float("-inf"), 0.0, m_new)
                    alpha = gl.exp2(m_i - m_sub)
                    p = gl.exp2(s - m_sub[:, None])
                    l_i = l_i * alpha + gl.sum(p, 1)
                    m_i = m_new
                    p16 = p.to(q_ptr.dtype.element_ty)
                    # hand P, the rescale and the running sum to warpgroup 1
                    mbarrier.wait(p_empty, (it & 1) ^ 1)
                    p_smem.store(p16)
                    alpha_smem.store(alpha)
                    l_smem.store(l_i)
                    mbarrier.arrive(p_ready, count=1)
                    o0, o1, o2, o3 = _pv_quarter_boxes(gl.convert_layout(p16, p_layout), kv_smem, base, alpha,
                                                       o0, o1, o2, o3)
                    mbarrier.arrive(kv_empty.index(stage), count=1)
                    it += 1
                slot, num_chunks = _chunk_slot(num_splits_ptr, req, begin_req, begin_chunk)
                has_keys = l_i > 0.0
                l_safe = gl.where(has_keys, l_i, 1.0)
                _store_half(o0, o1, o2, o3, 1.0 / l_safe, num_chunks == 1, out_ptr, out_part_ptr, req,
                            slot, m_tile, kv_head, stride_o_b, stride_o_s, stride_o_h,
                            group, rows, h_kv, 0, mma)
                lse = (m_i + gl.log2(l_safe)) * 0.6931471805599453  # natural log
                row_ok = row < rows
                if num_chunks == 1:
                    head = kv_head * group + row % group
                    gl.store(lse_ptr + req.to(gl.int64) * stride_lse_b + head * stride_lse_h + token,
                             gl.where(has_keys, lse, float("inf")), mask=row_ok)
                else:
                    part_row = (slot.to(gl.int64) * h_kv + kv_head) * rows + row
                    gl.store(lse_part_ptr + part_row, gl.where(has_keys, lse, float("-inf")), mask=row_ok)


# --------------------------------------------------------------------------- the kernel
@_gluon_jit
def _mla_decode_hopper_kernel(
    q_ptr, kv_desc, block_table_ptr, seqlens_ptr, metadata_ptr, num_splits_ptr,
    out_ptr, lse_ptr, out_part_ptr, lse_part_ptr,
    stride_q_b, stride_q_s, stride_q_h,
    stride_bt_b,
    stride_o_b, stride_o_s, stride_o_h,
    stride_lse_b, stride_lse_h,
    s_q, group, rows, h_kv,
    scale_log2, causal,
):
    """Grid (row tiles, SM parts, kv heads), 4 + 4 + 1 warps; see the module docstring."""
    dtype: gl.constexpr = kv_desc.dtype
    box_layout: gl.constexpr = kv_desc.layout
    q_smem = gl.allocate_shared_memory(dtype, [NUM_BOXES, BLOCK_M, BOX], box_layout)
    kv_smem = gl.allocate_shared_memory(dtype, [STAGES * NUM_BOXES, PAGE, BOX], box_layout)
    p_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, PAGE], box_layout)
    row_smem_layout: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[0])
    alpha_smem = gl.allocate_shared_memory(gl.float32, [BLOCK_M], row_smem_layout)  # row rescale of a step
    l_smem = gl.allocate_shared_memory(gl.float32, [BLOCK_M], row_smem_layout)  # running row sums
    kv_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    kv_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    p_ready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    p_empty = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    for stage in gl.static_range(STAGES):
        mbarrier.init(kv_ready.index(stage), count=1)
        mbarrier.init(kv_empty.index(stage), count=2)  # both warpgroups release a page
    mbarrier.init(p_ready, count=1)
    mbarrier.init(p_empty, count=1)

    m_tile = gl.program_id(0)
    kv_head = gl.program_id(2)
    # the last query token of this tile: no key past what it may see is loaded
    last_token = (gl.minimum(m_tile * BLOCK_M + BLOCK_M, rows) - 1) // group
    kv_col = kv_head * D_QK

    gl.warp_specialize([
        (_scores_half, (q_ptr, seqlens_ptr, metadata_ptr, num_splits_ptr, out_ptr, lse_ptr, out_part_ptr,
                        lse_part_ptr, q_smem, kv_smem, kv_ready, kv_empty, p_smem, alpha_smem, l_smem, p_ready, p_empty,
                        stride_q_b, stride_q_s, stride_q_h, stride_o_b, stride_o_s, stride_o_h,
                        stride_lse_b, stride_lse_h, s_q, group, rows, h_kv, scale_log2, causal, last_token)),
        (_value_half, (seqlens_ptr, metadata_ptr, num_splits_ptr, out_ptr, out_part_ptr,
                       kv_smem, kv_ready, kv_empty, p_smem, alpha_smem, l_smem, p_ready, p_empty,
                       stride_o_b, stride_o_s, stride_o_h, s_q, group, rows, h_kv, causal, last_token)),
        (_loader, (kv_desc, block_table_ptr, seqlens_ptr, metadata_ptr, kv_smem, kv_ready, kv_empty,
                   stride_bt_b, kv_col, s_q, causal, last_token)),
    ], [4, 1], [WG1_REGS, LOADER_REGS])


# --------------------------------------------------------------------------- host side
def box_layout(dtype: torch.dtype):
    """The 128-byte-swizzled shared layout of one 64 x 64 box (TMA destination and wgmma operand)."""
    return gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)


def cache_layout_problem(k_shape, k_strides, element_size: int = 2) -> str:
    """Why this kernel cannot read a cache of this shape and strides through its 2-d TMA view,
    or "" when it can: the view is [pages x 64 tokens, h_kv x 576] with the token as its row.
    (The base address must be 16-byte aligned too; TensorDescriptor checks it at launch.)"""
    pages, page, h_kv, d = k_shape
    s_page, s_tok, s_head, s_dim = k_strides
    if s_dim != 1 or (h_kv > 1 and s_head != _int(D_QK)):
        return "k_cache's heads must be contiguous rows of 576 values"
    if pages > 1 and s_page != page * s_tok:
        return "k_cache's pages must be consecutive (page stride = 64 x token stride)"
    if (s_tok * element_size) % 16:
        return "k_cache's token stride must be a multiple of 16 bytes for TMA"
    return ""


class _CacheBase:
    """What a TensorDescriptor reads of its base tensor (address and dtype), without holding the
    cache or building a view: descriptors are kept per address, shape and strides."""
    __slots__ = ("ptr", "dtype")

    def __init__(self, ptr: int, dtype: torch.dtype):
        self.ptr, self.dtype = ptr, dtype

    def data_ptr(self) -> int:
        return self.ptr


_DESCRIPTORS: dict = {}
_MAX_DESCRIPTORS = 64


def kv_descriptor(k_cache: torch.Tensor):
    """The TMA view [pages x 64 tokens, h_kv x 576] of the cache, boxes of 64 tokens x 64 dims
    (the launcher encodes it into a CUtensorMap at every launch)."""
    key = (k_cache.data_ptr(), k_cache.shape, k_cache.stride(), k_cache.dtype)
    desc = _DESCRIPTORS.get(key)
    if desc is None:
        pages, page, h_kv, _ = k_cache.shape
        if len(_DESCRIPTORS) >= _MAX_DESCRIPTORS:
            _DESCRIPTORS.clear()
        desc = TensorDescriptor(_CacheBase(k_cache.data_ptr(), k_cache.dtype), [pages * page, h_kv * _int(D_QK)],
                                [k_cache.stride(1), 1], [_int(PAGE), _int(BOX)], box_layout(k_cache.dtype))
        _DESCRIPTORS[key] = desc
    return desc


def launch_ints(q_strides, bt_stride0: int, out_strides, lse_strides, s_q: int, group: int, rows: int,
                h_kv: int) -> tuple:
    """The kernel's integer arguments between the tensors and scale_log2, in signature order."""
    return (*q_strides[:3], bt_stride0, *out_strides, *lse_strides, s_q, group, rows, h_kv)


LAUNCH_OPTIONS = dict(num_warps=NUM_WARPS, maxnreg=MAXNREG)


def offline_resources(dtype: str = "bf16", capability: int = 90) -> dict:
    """Compile the kernel for sm_90a without a GPU and report shared memory, registers, spills
    and the setmaxnreg values per partition (from the PTX).

    Under Triton's interpreter (TRITON_INTERPRET=1, which the notebooks set on a CPU) the kernel's
    helpers were wrapped for interpretation when this module was imported, and Triton's compiler
    cannot compile those: the compile then runs in a child process without the variable, and the
    result comes back without the ``compiled`` object."""
    from .triton_decode import _interpreting
    if _interpreting():
        return _offline_resources_in_child(dtype, capability)
    import re
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource
    from .triton_configs import offline_arg_type, ptxas_report
    fn = _mla_decode_hopper_kernel
    layout = gl.NVMMASharedLayout(swizzle_byte_width=128, element_bitwidth=16, rank=2)
    signature, attrs = {}, {}
    for index, name in enumerate(fn.arg_names):
        if name == "kv_desc":
            signature[name] = f"tensordesc<{dtype}[{_int(PAGE)}, {_int(BOX)}],{layout!r}>"
            continue
        signature[name] = offline_arg_type(name, dtype)
        if name.endswith("_ptr"):
            attrs[(index,)] = [["tt.divisibility", 16]]
    compiled = triton.compile(GluonASTSource(fn, signature, {}, attrs), target=GPUTarget("cuda", capability, 32),
                              options=dict(num_warps=NUM_WARPS, maxnreg=MAXNREG))
    ptx = compiled.asm["ptx"]
    report = ptxas_report(ptx, capability)
    return dict(shared_bytes=int(compiled.metadata.shared), n_regs=report["n_regs"], n_spills=report["n_spills"],
                setmaxnreg=sorted(set(re.findall(r"setmaxnreg\.(\w+)\.sync\.aligned\.u32\s+(\d+)", ptx))),
                # ptxas' notes on serialised wgmmas (C7510/C7511/C7517/C7520) and any warning
                warnings=[line for line in report["log"].splitlines() if "warning" in line.lower() or "C75" in line],
                compiled=compiled)


def _offline_resources_in_child(dtype: str, capability: int) -> dict:
    import json
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("import json; from flashmla import triton_hopper as h; "
            f"r = h.offline_resources({dtype!r}, {capability}); r.pop('compiled'); print(json.dumps(r))")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if proc.returncode != 0:
        raise RuntimeError(f"offline compile of the Gluon kernel failed in a child process: {proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["setmaxnreg"] = [tuple(pair) for pair in res["setmaxnreg"]]
    return res
