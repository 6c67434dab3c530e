"""The torch reference against an independent float64 per-token loop."""
import itertools
import math
import random

import pytest
import torch

from flashmla import reference
from flashmla.testing import make_decode_inputs

HEAD_CASES = [(1, 1), (3, 1), (16, 1), (16, 2), (16, 8), (63, 1), (128, 1), (128, 2), (128, 8)]


def loop_oracle(q, k_cache, block_table, cache_seqlens, scale, causal):
    """One query row at a time, one key at a time, in float64: no shared code with the reference."""
    b, s_q, h_q, _ = q.shape
    h_kv = k_cache.shape[2]
    out = torch.zeros(b, s_q, h_q, 512, dtype=torch.float64)
    lse = torch.full((b, h_q, s_q), math.inf, dtype=torch.float64)
    for i in range(b):
        n = int(cache_seqlens[i])
        # token j lives in page block_table[i, j // 64], row j % 64: indexed token by token
        keys = torch.stack([k_cache[int(block_table[i, j // 64]), j % 64].double() for j in range(n)]) \
            if n else torch.zeros(0, h_kv, 576, dtype=torch.float64)
        for t in range(s_q):
            visible = n - (s_q - 1 - t) if causal else n
            if visible <= 0:
                continue
            kv_head_of = torch.arange(h_q) // (h_q // h_kv)
            k = keys[:visible][:, kv_head_of]  # [visible, h_q, 576]: head h reads kv head h // group
            scores = torch.einsum("vhd,hd->hv", k, q[i, t].double()) * scale
            m = scores.max(dim=1, keepdim=True).values
            w = torch.exp(scores - m)  # [h_q, visible]
            lse[i, :, t] = (m[:, 0] + torch.log(w.sum(1)))
            out[i, t] = torch.einsum("hv,vhd->hd", w, k[..., :512]) / w.sum(1, keepdim=True)
    return out, lse


CASES = [(hq, hkv, s_q, causal) for (hq, hkv), s_q, causal in itertools.product(HEAD_CASES, [1, 2, 4], [False, True])]


@pytest.mark.parametrize("h_q,h_kv,s_q,causal", CASES)
def test_reference_matches_float64_loop(h_q, h_kv, s_q, causal):
    rng = random.Random(hash((h_q, h_kv, s_q, causal)) & 0xFFFF)
    seqlens = [rng.choice([0, 1, s_q, 63, 64, 65, 130, 300, rng.randint(0, 300)]) for _ in range(3)]
    inp = make_decode_inputs(seqlens, s_q, h_q, h_kv, dtype=torch.float32 if h_q > 16 else torch.bfloat16)
    scale = rng.uniform(0.03, 0.1)
    out, lse = reference.decode(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, scale, causal)
    ref_out, ref_lse = loop_oracle(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, scale, causal)
    assert not torch.isnan(out).any(), "NaN from an unused cache row leaked into the output"
    tol = 2e-2 if inp.q.dtype == torch.bfloat16 else 1e-5  # bf16 output rounding vs fp32 math
    torch.testing.assert_close(out.double(), ref_out, atol=tol, rtol=tol)
    # lse is fp32 in both dtypes; +inf rows must agree exactly
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    finite = torch.isfinite(ref_lse)
    torch.testing.assert_close(lse.double()[finite], ref_lse[finite], atol=1e-5, rtol=1e-5)


def test_empty_rows_give_zero_and_inf():
    """seqlen 0, and causal rows with s_q > seqlen, have nothing to attend."""
    inp = make_decode_inputs([0, 2, 70], s_q=4, h_q=2)
    out, lse = reference.decode(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 0.1, True)
    assert torch.all(out[0] == 0) and torch.all(torch.isinf(lse[0]))
    # request 1 has 2 tokens and 4 queries: queries 0 and 1 see nothing, 2 and 3 see 1 and 2 keys
    assert torch.all(out[1, :2] == 0) and torch.all(torch.isinf(lse[1, :, :2]))
    assert torch.all(torch.isfinite(lse[1, :, 2:])) and torch.all(torch.isfinite(lse[2]))


def test_causal_is_noop_for_single_query():
    inp = make_decode_inputs([100, 5], s_q=1, h_q=4)
    a = reference.decode(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 0.1, True)
    b = reference.decode(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 0.1, False)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_nan_rows_and_garbage_table_never_read():
    inp = make_decode_inputs([65, 3], s_q=2, h_q=4, h_kv=2)
    assert torch.isnan(inp.k_cache).any(), "the poisoning helper must actually poison"
    out, lse = reference.decode(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 0.1, False)
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()


def test_v_is_first_512_columns_of_k():
    """Changing the rope part of the cache changes scores but V comes from the first 512 dims."""
    inp = make_decode_inputs([1], s_q=1, h_q=1, poison_nan=False)
    out, _ = reference.decode(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 0.1, False)
    page = int(inp.block_table[0, 0])
    torch.testing.assert_close(out[0, 0, 0].float(), inp.k_cache[page, 0, 0, :512].float())
