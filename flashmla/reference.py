"""Reference paged MLA decode in plain torch: the oracle every kernel is tested against.

It gathers each request's pages, upcasts to float32 and computes attention row by row with the
exact semantics of docs/internals.md. It is slow (one Python iteration per request) but simple
enough to check by eye, and it runs on any device.
"""
from __future__ import annotations

import math

import torch

from .scheduler import BLOCK_SIZE

HEAD_DIM_V = 512


def is_available(device: torch.device) -> tuple[bool, str]:
    return True, ""


def causal_key_limits(seqlen: int, s_q: int, causal: bool, device=None) -> torch.Tensor:
    """Number of keys each of the ``s_q`` query tokens may attend to.

    Causal attention is aligned bottom-right: the last query token is the newest cache entry,
    so token ``t`` sees keys ``[0, seqlen - (s_q - 1 - t))``. Without causal, all ``seqlen``.
    """
    t = torch.arange(s_q, device=device)
    if causal:
        return (seqlen - (s_q - 1 - t)).clamp_min(0)
    return torch.full_like(t, seqlen)


def gather_request_cache(k_cache: torch.Tensor, block_table_row: torch.Tensor, seqlen: int) -> torch.Tensor:
    """The first ``seqlen`` cache rows of one request, ``[seqlen, h_kv, 576]``, in page order.

    Only the ``ceil(seqlen / 64)`` pages in use are read, so garbage block-table entries past
    the end of the sequence are never touched, and rows past ``seqlen`` (which may hold NaN)
    are cut off before any arithmetic.
    """
    num_pages = math.ceil(seqlen / BLOCK_SIZE)
    pages = block_table_row[:num_pages].long()
    rows = k_cache[pages].reshape(num_pages * BLOCK_SIZE, *k_cache.shape[2:])
    return rows[:seqlen]


def decode(q, k_cache, block_table, cache_seqlens, softmax_scale: float, causal: bool,
           tile_scheduler_metadata=None, num_splits=None):
    """Paged MLA decode with float32 math. See ``flashmla.flash_mla_with_kvcache``.

    Returns ``out [b, s_q, h_q, 512]`` in q's dtype and ``lse [b, h_q, s_q]`` float32
    (natural log). Rows with nothing to attend get out = 0 and lse = +inf.
    """
    b, s_q, h_q, _ = q.shape
    h_kv = k_cache.shape[2]
    group = h_q // h_kv
    out = torch.zeros(b, s_q, h_q, HEAD_DIM_V, dtype=torch.float32, device=q.device)
    lse = torch.full((b, h_q, s_q), math.inf, dtype=torch.float32, device=q.device)
    seqlens = cache_seqlens.tolist()
    for i in range(b):
        seqlen = seqlens[i]
        if seqlen <= 0:
            continue
        kv = gather_request_cache(k_cache, block_table[i], seqlen).float()  # [n, h_kv, 576]
        kv = kv.repeat_interleave(group, dim=1)  # [n, h_q, 576]: q head h reads kv head h // group
        qi = q[i].float()  # [s_q, h_q, 576]
        scores = torch.einsum("thd,nhd->htn", qi, kv) * softmax_scale  # [h_q, s_q, n]
        limits = causal_key_limits(seqlen, s_q, causal, device=q.device)  # [s_q]
        allowed = torch.arange(seqlen, device=q.device)[None, :] < limits[:, None]  # [s_q, n]
        scores = scores.masked_fill(~allowed[None], -math.inf)
        row_lse = torch.logsumexp(scores, dim=-1)  # [h_q, s_q]; -inf where nothing allowed
        probs = torch.exp(scores - row_lse[..., None]).nan_to_num(0.0)
        out[i] = torch.einsum("htn,nhd->thd", probs, kv[..., :HEAD_DIM_V])
        lse[i] = torch.where(torch.isfinite(row_lse), row_lse, math.inf)
    return out.to(q.dtype), lse
