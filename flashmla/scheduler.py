"""Tile scheduler for split-KV MLA decode: who computes which 64-token blocks.

Why a scheduler at all
----------------------
Decode attention has one query token (or a few speculative ones) per request but thousands of
cached tokens. Giving each request its own thread block leaves most of the GPU idle when the
batch is small or the lengths are uneven. Instead, the (request, 64-token block) work items of
the whole batch are laid end to end and cut into ``num_sm_parts`` nearly equal pieces, one per
thread block ("part"). A request that straddles a cut is computed in several *chunks* by
different parts; each chunk writes a partial output with its log-sum-exp, and a combine step
merges them (flash-decoding).

Cost model
----------
A chunk costs its number of blocks plus a fixed overhead of ``FIXED_OVERHEAD_BLOCKS`` blocks
(loading Q, filling the pipeline, writing the epilogue). So request ``i`` with ``n_i`` blocks
occupies ``w_i = n_i + OVERHEAD`` units on a line (0 units when it is empty), and every part gets
``P = ceil(T / num_sm_parts)`` consecutive units of the line's total ``T``. A cut that lands
inside a request's overhead is moved to the request's first block, so no chunk is ever empty.
The largest part therefore costs at most ``P + OVERHEAD`` (one chunk that starts mid-request
pays an overhead the line did not charge), which the property tests check.

Whole requests when lengths are equal: if every non-empty request has the same ``n`` blocks
(weight ``w = n + OVERHEAD``) and ``k = ceil(P / w)`` whole requests per part cost at most
``P + WHOLE_REQUEST_SLACK_BLOCKS`` units (12: the split schedule's own bound ``P + OVERHEAD``
plus the fp32 partials a split request writes and merges), ``P`` becomes ``k * w``. Every cut
then falls on a request boundary: no request is split, nothing is merged, and no part pays a
second overhead. At b = 128 x 4096 tokens on 132 SMs this is 69 units per part instead of up
to 67 + 5 plus the merge of 128 two-chunk requests: 0.237 instead of 0.255 ms at h_q = 64 on an
H100 (docs/kernel-design.md 5.2).

Optional floor (``min_blocks_per_part``, default 1 = the schedule above unchanged): ``P`` is
raised to at least that many units. It only bites when the batch is small (``T / num_sm_parts``
below the floor, e.g. b = 1), where it trades fewer, longer chunks (fewer partials to write and
merge) for fewer busy SMs; docs/kernel-design.md section 6 has the arithmetic.

Column split (small batches): with at most COLUMN_SPLIT_MAX_BATCH requests and at most
COLUMN_SPLIT_MAX_QUERY_ROWS query rows in all (b = 1 or 2 at up to 128 heads), and short enough
parts, the line is cut into half the parts, and column 7 of every metadata row says so (1).
flashmla's CUDA kernel then runs two thread blocks per part and row tile, each computing S for the
whole tile but PV and the output for half of the 512 columns: the grid is still one wave, and
each thread block's PV and fp32 partial store, the longest phases of its life at b = 1, are
halved. S is computed twice, which pays only while a part is short: the split is made when
half the parts would hold at most COLUMN_SPLIT_MAX_UNITS units each (docs/kernel-design.md 7.16).
The metadata keeps ``num_sm_parts`` rows (the unused ones are empty), so its shape never depends
on the batch (CUDA-graph buffers); kernels that do not split columns ignore column 7.

Everything below is cumulative sums and ``searchsorted`` on tensors: it runs on the tensors' own
device with no host synchronisation, so it is cheap to call once per decode step and safe inside
CUDA-graph capture. The exact output format is documented in ``docs/internals.md``; the CUDA
scheduler kernel in ``csrc/`` produces bit-identical tensors.
"""
from __future__ import annotations

import math

import torch

BLOCK_SIZE = 64  # tokens per KV-cache page, and per inner-loop step of every kernel
ROWS_PER_TILE = 64  # query rows one thread block handles (the wgmma M dimension)
FIXED_OVERHEAD_BLOCKS = 5
# Whole requests per part may cost this many units more than the balanced share P (module
# docstring): OVERHEAD (the bound P + OVERHEAD of the split schedule) plus ~7 blocks for the fp32
# partials a split request writes and merges (2 chunks x 64 rows x 512 x 4 B, written and read
# back, ~ 7 blocks of 72 KiB). Measured: benchmarks/results/cuda_h100_run9_aligned_2026-11-24/.
WHOLE_REQUEST_SLACK_BLOCKS = 12
METADATA_WIDTH = 8
DEFAULT_NUM_SMS = 132  # H100/H200 SXM; used for tensors that do not live on a GPU

# Column split (module docstring); the bounds were measured on an H100 (docs/kernel-design.md 7.16).
COLUMN_SPLIT_MAX_BATCH = 2
COLUMN_SPLIT_MAX_QUERY_ROWS = 256  # b * s_q * h_q
COLUMN_SPLIT_MAX_UNITS = 12  # units per part when cut into half the parts

# Column indices of one tile_scheduler_metadata row (see docs/internals.md).
COL_BEGIN_REQ, COL_BEGIN_BLOCK, COL_END_REQ, COL_END_BLOCK, COL_BEGIN_CHUNK, COL_G0, COL_G1, COL_COLUMN_SPLIT = range(8)


def num_sm_parts(num_sms: int, num_q_tokens_per_head_k: int, num_heads_k: int) -> int:
    """Number of parts (thread blocks per (row tile, kv head)) so that the grid is one wave.

    ``num_q_tokens_per_head_k`` = s_q * h_q / h_kv query rows share each kv head; they are
    processed in tiles of 64 rows, and every tile of every kv head gets its own set of parts.
    Never 0: with more tiles than SMs the grid simply takes more than one wave.
    """
    num_m_blocks = math.ceil(num_q_tokens_per_head_k / ROWS_PER_TILE)
    return max(1, num_sms // num_heads_k // num_m_blocks)


def may_split_columns(batch_size: int, query_rows: int) -> bool:
    """True for the small batches (``query_rows`` = b * s_q * h_q) whose schedule is cut into half
    the parts with the column split when the parts are short enough (module docstring): what the
    host knows; the lengths are only on the GPU."""
    return batch_size <= COLUMN_SPLIT_MAX_BATCH and query_rows <= COLUMN_SPLIT_MAX_QUERY_ROWS


def column_split_mode(column_split: bool | None, batch_size: int, query_rows: int) -> int:
    """The scheduler's column-split mode from the ``column_split`` argument (``None`` = the rule):
    0 never, 1 always, 2 when half the parts would stay short (a length test only the device-side
    tensors can answer). The CUDA scheduler kernel takes the same code (MetadataParams)."""
    if column_split not in (None, True, False):
        raise ValueError(f"column_split must be None, True or False, got {column_split!r}")
    if column_split is None:
        return 2 if may_split_columns(batch_size, query_rows) else 0
    return int(column_split)


def device_num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; DEFAULT_NUM_SMS for any other device."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return DEFAULT_NUM_SMS


def _take(values: torch.Tensor, index: torch.Tensor, fill: int | torch.Tensor) -> torch.Tensor:
    """``values[index]`` where ``index < len(values)``, else ``fill``; no host sync."""
    safe = index.clamp(0, values.numel() - 1)
    return torch.where(index < values.numel(), values[safe], fill)


def compute_tile_scheduler_metadata(
    cache_seqlens: torch.Tensor,
    num_q_tokens_per_head_k: int,
    num_heads_k: int,
    num_sms: int | None = None,
    min_blocks_per_part: int = 1,
    whole_request_slack: int = WHOLE_REQUEST_SLACK_BLOCKS,
    column_split: bool | None = None,
    overhead_blocks: int = FIXED_OVERHEAD_BLOCKS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a batch's KV blocks over ``num_sm_parts`` parts.

    Args:
        cache_seqlens: int32 ``[b]``, tokens in the cache per request (new tokens included).
        num_q_tokens_per_head_k: s_q * h_q / h_kv.
        num_heads_k: h_kv.
        num_sms: SMs to plan for; defaults to the device's (132 off-GPU).
        min_blocks_per_part: floor on the line units per part, ``P = max(ceil(T / parts),
            min_blocks_per_part)``; 1 (the default) leaves the schedule as without a floor.
        whole_request_slack: equal-length batches get whole requests per part when that costs at
            most ``P + whole_request_slack`` units; the default (WHOLE_REQUEST_SLACK_BLOCKS) is
            what the GPU scheduler does; -1 turns the rule off. Other values are for experiments
            (scripts/bench_whole_requests.py).
        column_split: True cuts the line into half the parts and marks column 7 (when there are
            at least two parts), False never does; None (the default) decides as the module
            docstring says.
        overhead_blocks: the fixed cost of a chunk in blocks (module docstring); the default
            (FIXED_OVERHEAD_BLOCKS) is what the GPU scheduler does. Other values are for
            experiments (scripts/ab_cuda.py's "schedule%N" variants).

    Returns:
        ``tile_scheduler_metadata`` int32 ``[num_sm_parts, 8]`` and ``num_splits`` int32
        ``[b + 1]``, on ``cache_seqlens``' device, in the format of docs/internals.md.
    """
    if cache_seqlens.numel() == 0:
        raise ValueError("cache_seqlens must hold at least one request (batch size b > 0)")
    if not isinstance(min_blocks_per_part, int) or not 1 <= min_blocks_per_part <= 1 << 20:
        raise ValueError(f"min_blocks_per_part must be an int in [1, 2**20], got {min_blocks_per_part!r}")
    if not isinstance(overhead_blocks, int) or not 0 <= overhead_blocks <= 1 << 10:
        raise ValueError(f"overhead_blocks must be an int in [0, 1024], got {overhead_blocks!r}")
    device = cache_seqlens.device
    if num_sms is None:
        num_sms = device_num_sms(device)
    parts = num_sm_parts(num_sms, num_q_tokens_per_head_k, num_heads_k)
    batch = cache_seqlens.shape[0]
    mode = column_split_mode(column_split, batch, batch * num_q_tokens_per_head_k * num_heads_k)
    half = parts // 2  # a split needs two thread blocks per part: at least two parts
    overhead = overhead_blocks
    i64 = dict(dtype=torch.int64, device=device)

    blocks = (cache_seqlens.to(torch.int64).clamp_min(0) + BLOCK_SIZE - 1) // BLOCK_SIZE
    width = torch.where(blocks > 0, blocks + overhead, torch.zeros_like(blocks))
    line_end = torch.cumsum(width, 0)
    line_start = line_end - width
    block_end = torch.cumsum(blocks, 0)
    block_start = block_end - blocks
    zero = torch.zeros(1, **i64)
    total_units = torch.cat([zero, line_end])[-1]
    total_blocks = torch.cat([zero, block_end])[-1]

    # Part boundaries on the line, then mapped to global block indices.
    # Column split: half the parts, if (by the rule) they stay short; a 0-d bool tensor, no sync.
    split = torch.full((), mode != 0 and half >= 1, dtype=torch.bool, device=device)
    if mode == 2 and half >= 1:
        split = split & (((total_units + half - 1) // half).clamp_min(min_blocks_per_part) <= COLUMN_SPLIT_MAX_UNITS)
    used = torch.where(split, half, parts)  # split is False where half is 0
    units_per_part = ((total_units + used - 1) // used).clamp_min(min_blocks_per_part)
    # Equal-length batches: if a whole number of requests per part costs no more than the
    # balanced share plus one overhead (the split schedule's own worst case), cut at request
    # boundaries instead; then no request is split, nothing is merged (module docstring).
    max_blocks = torch.cat([zero, blocks]).max()
    min_blocks = torch.where(blocks > 0, blocks, max_blocks).min()
    request_units = max_blocks + overhead
    aligned = (units_per_part + request_units - 1) // request_units * request_units
    use_aligned = ((max_blocks > 0) & (min_blocks == max_blocks) & (whole_request_slack >= 0)
                   & (aligned <= units_per_part + whole_request_slack))
    units_per_part = torch.where(use_aligned, aligned, units_per_part)
    line_cuts = torch.minimum(torch.arange(parts + 1, **i64) * units_per_part, total_units)
    req_at_cut = torch.searchsorted(line_end, line_cuts, right=True)  # b at the line's end
    inside = (line_cuts - _take(line_start, req_at_cut, 0) - overhead).clamp_min(0)
    inside = torch.minimum(inside, _take(blocks, req_at_cut, 0))
    global_cuts = torch.where(req_at_cut < blocks.numel(),
                              _take(block_start, req_at_cut, 0) + inside, total_blocks)
    g0, g1 = global_cuts[:-1], global_cuts[1:]

    # Counting the distinct interior cuts at or before a global block gives chunk indices.
    interior = global_cuts[1:-1]
    sorted_cuts = torch.cat([torch.full((1,), -1, **i64), interior])
    is_new = torch.cat([torch.zeros(1, **i64), (interior != sorted_cuts[:-1]).to(torch.int64)])
    distinct_upto = torch.cumsum(is_new, 0)

    def distinct_cuts_le(x: torch.Tensor) -> torch.Tensor:
        return distinct_upto[torch.searchsorted(sorted_cuts, x, right=True) - 1]

    chunks = 1 + distinct_cuts_le(block_end - 1) - distinct_cuts_le(block_start)
    chunks = torch.where(blocks > 0, chunks, torch.zeros_like(chunks))
    num_splits = torch.cat([zero, torch.cumsum(chunks, 0)]).to(torch.int32)

    nonempty = g1 > g0
    begin_req = torch.searchsorted(block_end, g0, right=True)
    end_req = torch.searchsorted(block_end, (g1 - 1).clamp_min(0), right=True)
    begin_block = g0 - _take(block_start, begin_req, 0)
    end_block = g1 - _take(block_start, end_req, 0)
    begin_chunk = distinct_cuts_le(g0) - distinct_cuts_le(_take(block_start, begin_req, 0))

    none = torch.full_like(g0, -1)
    nil = torch.zeros_like(g0)
    metadata = torch.stack([
        torch.where(nonempty, begin_req, none),
        torch.where(nonempty, begin_block, nil),
        torch.where(nonempty, end_req, none),
        torch.where(nonempty, end_block, nil),
        torch.where(nonempty, begin_chunk, nil),
        g0,
        torch.where(nonempty, g1, g0),
        nil + split.to(torch.int64),
    ], dim=1).to(torch.int32).contiguous()
    return metadata, num_splits


def describe(tile_scheduler_metadata: torch.Tensor, num_splits: torch.Tensor) -> str:
    """Human-readable table of a schedule (for notebooks and debugging)."""
    rows = tile_scheduler_metadata.cpu().tolist()
    lines = ["part  requests        blocks (first req .. last req)   first chunk"]
    for p, r in enumerate(rows):
        if r[COL_BEGIN_REQ] < 0:
            lines.append(f"{p:4d}  (empty)")
            continue
        lines.append(f"{p:4d}  {r[COL_BEGIN_REQ]:>5d} .. {r[COL_END_REQ]:<5d}   "
                     f"from block {r[COL_BEGIN_BLOCK]} to {r[COL_END_BLOCK]} (excl.)"
                     f"          {r[COL_BEGIN_CHUNK]}")
    splits = num_splits.cpu().tolist()
    chunks = [b - a for a, b in zip(splits[:-1], splits[1:])]
    lines.append(f"chunks per request: {chunks}")
    return "\n".join(lines)
