"""Random paged-cache inputs for tests, notebooks and benchmarks, built to catch bugs.

Following shared/perf-targets.md: values are ``randn / 10`` clamped to ±1 (never zeros, which
hide unwritten outputs), pages are a random permutation of the cache, the unused tail of every
last page is poisoned with NaN, and block-table slots past a sequence's end hold garbage page ids
(out of range, even negative), which a correct kernel never reads.
"""
from __future__ import annotations

import dataclasses
import math
import random
from typing import Sequence

import torch

from .scheduler import BLOCK_SIZE

HEAD_DIM_QK = 576
GARBAGE_PAGE_IDS = (2147480000, -7, 123456789)


@dataclasses.dataclass
class DecodeInputs:
    q: torch.Tensor  # [b, s_q, h_q, 576]
    k_cache: torch.Tensor  # [num_blocks, 64, h_kv, 576]
    block_table: torch.Tensor  # [b, max_blocks] int32
    cache_seqlens: torch.Tensor  # [b] int32

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(b, s_q, h_q, h_kv)."""
        b, s_q, h_q, _ = self.q.shape
        return b, s_q, h_q, self.k_cache.shape[2]


def flashmla_varied_lengths(batch: int, mean: int, s_q: int, seed: int = 0) -> list[int]:
    """FlashMLA's benchmark length generator: normal(mean, mean/2), at least s_q."""
    rng = random.Random(seed)
    return [max(int(rng.normalvariate(mean, mean / 2)), s_q) for _ in range(batch)]


def make_decode_inputs(seqlens: Sequence[int], s_q: int, h_q: int, h_kv: int = 1,
                       dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cpu",
                       poison_nan: bool = True, garbage_block_table: bool = True,
                       extra_blocks: int = 1, spare_pages: int = 3,
                       generator: torch.Generator | None = None) -> DecodeInputs:
    """Build a random paged KV cache holding ``seqlens`` tokens for each request.

    Args:
        seqlens: tokens per request (0 allowed), the s_q new ones included.
        extra_blocks: block-table columns beyond the longest request (filled with garbage).
        spare_pages: cache pages that belong to no request (filled with NaN when poisoning).
    """
    device = torch.device(device)
    b = len(seqlens)
    pages_per_req = [math.ceil(n / BLOCK_SIZE) for n in seqlens]
    used_pages = sum(pages_per_req)
    num_blocks = used_pages + spare_pages
    max_blocks = max(max(pages_per_req, default=0), 1) + extra_blocks

    def randn(*shape):
        return (torch.randn(*shape, generator=generator) / 10).clamp_(-1, 1)

    k_cache = randn(num_blocks, BLOCK_SIZE, h_kv, HEAD_DIM_QK)
    q = randn(b, s_q, h_q, HEAD_DIM_QK)
    perm = torch.randperm(num_blocks, generator=generator)[:used_pages]
    block_table = torch.empty(b, max_blocks, dtype=torch.int64)
    fill = GARBAGE_PAGE_IDS if garbage_block_table else (0,)
    for j in range(max_blocks):
        block_table[:, j] = fill[j % len(fill)]
    used_mask = torch.zeros(num_blocks, dtype=torch.bool)
    cursor = 0
    for i, (n, pages) in enumerate(zip(seqlens, pages_per_req)):
        block_table[i, :pages] = perm[cursor:cursor + pages]
        used_mask[perm[cursor:cursor + pages]] = True
        if poison_nan and pages and n % BLOCK_SIZE:
            k_cache[perm[cursor + pages - 1], n % BLOCK_SIZE:] = float("nan")
        cursor += pages
    if poison_nan:
        k_cache[~used_mask] = float("nan")
    return DecodeInputs(
        q=q.to(dtype=dtype, device=device),
        k_cache=k_cache.to(dtype=dtype, device=device),
        block_table=block_table.to(torch.int32).to(device),
        cache_seqlens=torch.tensor(list(seqlens), dtype=torch.int32, device=device),
    )


def compare_outputs(out: torch.Tensor, lse: torch.Tensor, ref_out: torch.Tensor, ref_lse: torch.Tensor) -> dict:
    """Error statistics of (out, lse) against the reference, ignoring rows with lse = +inf."""
    o, r = out.float(), ref_out.float()
    diff = (o - r).abs()
    finite_ref = torch.isfinite(ref_lse)
    lse_diff = torch.where(finite_ref, (lse - ref_lse).abs() / ref_lse.abs().clamp_min(1e-6),
                           torch.where(torch.isinf(lse) & (lse > 0), 0.0, math.inf))
    flat_o, flat_r = o.flatten(), r.flatten()
    cos = torch.nn.functional.cosine_similarity(flat_o.double(), flat_r.double(), dim=0).item() \
        if flat_r.norm() > 0 else (1.0 if flat_o.norm() == 0 else 0.0)
    return {
        "max_abs": diff.max().item() if diff.numel() else 0.0,
        "rel_l2": ((o - r).norm() / r.norm().clamp_min(1e-12)).item(),
        "cos_dist": 1.0 - cos,
        "lse_max_rel": lse_diff.max().item() if lse_diff.numel() else 0.0,
        "nan_in_out": bool(torch.isnan(o).any()),
    }


def capture_graph(step):
    """Capture ``step()`` in a CUDA graph as a serving engine does (one warm-up call on the capture
    stream first, so lazy allocations and compiles stay out of the graph), replay it once, and
    return ``(graph, outputs)``: the outputs are the graph's own buffers, rewritten by every
    ``graph.replay()``."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = step()
    graph.replay()
    torch.cuda.synchronize()
    return graph, outputs
