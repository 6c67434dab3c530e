"""The public API: call styles, backend dispatch and every validation error (each names its argument)."""
import pytest
import torch

import flashmla
from flashmla import reference
from flashmla.testing import make_decode_inputs


@pytest.fixture
def inp():
    return make_decode_inputs([70, 0, 130], s_q=2, h_q=16, h_kv=1)


def call(inp, **overrides):
    args = dict(q=inp.q, k_cache=inp.k_cache, block_table=inp.block_table, cache_seqlens=inp.cache_seqlens,
                head_dim_v=512, causal=True, backend="reference")
    args.update(overrides)
    return flashmla.flash_mla_with_kvcache(**args)


def expected(inp, causal=True, scale=576 ** -0.5):
    return reference.decode(inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, scale, causal)


def test_three_call_styles_agree(inp):
    ref_out, ref_lse = expected(inp)
    seqlens = inp.cache_seqlens
    md, ns = flashmla.get_mla_metadata(seqlens, 2 * 16 // 1, 1)  # Feb 2025
    a = call(inp, tile_scheduler_metadata=md, num_splits=ns)
    md, ns = flashmla.get_mla_metadata(seqlens, 32, 1, num_heads_q=16, is_fp8_kvcache=False, topk=None)  # Sep 2025
    b = call(inp, tile_scheduler_metadata=md, num_splits=ns)
    sched, none = flashmla.get_mla_metadata()  # 2026 lazy form
    assert none is None and not sched.have_initialized
    c = call(inp, tile_scheduler_metadata=sched, num_splits=None)
    assert sched.have_initialized
    c2 = call(inp, tile_scheduler_metadata=sched, num_splits=None)  # reused by the next layer
    for out, lse in (a, b, c, c2):
        assert torch.equal(out, ref_out) and torch.equal(lse, ref_lse)
    assert a[0].shape == (3, 2, 16, 512) and a[1].shape == (3, 16, 2) and a[1].dtype == torch.float32


def test_lazy_schedule_rejects_other_config(inp):
    sched, _ = flashmla.get_mla_metadata()
    call(inp, tile_scheduler_metadata=sched)
    other = make_decode_inputs([70, 0, 130], s_q=1, h_q=16)
    with pytest.raises(ValueError, match="sched_meta.config.s_q"):
        call(other, tile_scheduler_metadata=sched)


def test_default_softmax_scale(inp):
    out, lse = call(inp)
    ref_out, ref_lse = expected(inp, scale=576 ** -0.5)
    assert torch.equal(lse, ref_lse)


def test_backend_selection(inp, monkeypatch):
    assert flashmla.resolve_backend(None, torch.device("cpu")) == "reference"
    with pytest.raises(ValueError, match="backend must be one of"):
        call(inp, backend="fast")
    monkeypatch.setenv("FLASHMLA_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="FLASHMLA_BACKEND"):
        call(inp, backend=None)
    monkeypatch.setenv("FLASHMLA_BACKEND", "reference")
    call(inp, backend=None)
    with pytest.raises(RuntimeError, match="backend 'cuda' is not available"):
        call(inp, backend="cuda")


def test_backend_status_lists_every_backend():
    status = flashmla.backend_status("cpu")
    assert set(status) == {"cuda", "triton", "reference"}
    assert status["reference"][0] is True
    assert status["cuda"][0] is False and status["cuda"][1], "an unavailable backend says why"


# ---- each invalid input raises, naming the argument and the expected vs actual value
def _bad(inp):
    return dict(q=inp.q, k_cache=inp.k_cache, block_table=inp.block_table, cache_seqlens=inp.cache_seqlens)


CASES = {
    "q fp32": (lambda i: dict(q=i.q.float(), k_cache=i.k_cache.float()), TypeError, r"q must have dtype.*float32"),
    "q int": (lambda i: dict(q=i.q.to(torch.int8)), TypeError, r"q must have dtype"),
    "cache dtype mismatch": (lambda i: dict(k_cache=i.k_cache.half()), TypeError, r"k_cache must have the same dtype as q"),
    "q not a tensor": (lambda i: dict(q=[1, 2]), TypeError, r"q must be a torch.Tensor"),
    "d != 576": (lambda i: dict(q=i.q[..., :512].contiguous()), ValueError, r"q.shape\[-1\].*576, got 512"),
    "cache d != 576": (lambda i: dict(k_cache=i.k_cache[..., :512].contiguous()), ValueError, r"k_cache.shape\[-1\].*576, got 512"),
    "page size != 64": (lambda i: dict(k_cache=i.k_cache[:, :32].contiguous()), ValueError, r"page block size\) must be 64, got 32"),
    "h_q not divisible": (lambda i: dict(k_cache=i.k_cache.expand(-1, -1, 3, -1).contiguous()), ValueError, r"h_q \(16.*multiple of h_kv \(3"),
    "b = 0": (lambda i: dict(q=i.q[:0], block_table=i.block_table[:0], cache_seqlens=i.cache_seqlens[:0]), ValueError, r"batch size\) must be > 0"),
    "q 3-d": (lambda i: dict(q=i.q[0]), ValueError, r"q must have shape \[batch, s_q, h_q, 576\]"),
    "block_table int64": (lambda i: dict(block_table=i.block_table.long()), TypeError, r"block_table must have dtype torch.int32, got torch.int64"),
    "seqlens int64": (lambda i: dict(cache_seqlens=i.cache_seqlens.long()), TypeError, r"cache_seqlens must have dtype torch.int32"),
    "block_table non-contiguous": (lambda i: dict(block_table=i.block_table.t().contiguous().t()), ValueError, r"block_table must be contiguous"),
    "seqlens non-contiguous": (lambda i: dict(cache_seqlens=torch.stack([i.cache_seqlens] * 2, 1)[:, 0]), ValueError, r"cache_seqlens must be contiguous"),
    "block_table rows": (lambda i: dict(block_table=i.block_table[:2]), ValueError, r"block_table.shape\[0\] must equal the batch size 3"),
    "seqlens shape": (lambda i: dict(cache_seqlens=i.cache_seqlens[:2]), ValueError, r"cache_seqlens must have shape \(3,\)"),
    "q last dim not contiguous": (lambda i: dict(q=torch.repeat_interleave(i.q, 2, dim=-1)[..., ::2]), ValueError, r"q must have a contiguous last dimension"),
    "cache last dim not contiguous": (lambda i: dict(k_cache=torch.repeat_interleave(i.k_cache, 2, dim=-1)[..., ::2]), ValueError, r"k_cache must have a contiguous last dimension"),
    "negative seqlen": (lambda i: dict(cache_seqlens=torch.tensor([70, -1, 130], dtype=torch.int32)), ValueError, r"cache_seqlens must be >= 0, got cache_seqlens\[1\] = -1"),
    "seqlen too long": (lambda i: dict(cache_seqlens=torch.tensor([70, 0, 10000], dtype=torch.int32)), ValueError, r"cache_seqlens\[2\] = 10000 exceeds what block_table can hold"),
    "block id out of range": (lambda i: dict(block_table=_set(i.block_table, (2, 1), 10 ** 6)), ValueError, r"block_table\[2, 1\] = 1000000 is out of range"),
    "negative block id": (lambda i: dict(block_table=_set(i.block_table, (0, 0), -3)), ValueError, r"block_table\[0, 0\] = -3 is out of range"),
}


def _set(t, idx, value):
    t = t.clone()
    t[idx] = value
    return t


@pytest.mark.parametrize("name", list(CASES))
def test_invalid_inputs_raise(inp, name):
    make, exc, pattern = CASES[name]
    args = _bad(inp)
    args.update(make(inp))
    with pytest.raises(exc, match=pattern):
        flashmla.flash_mla_with_kvcache(**args, head_dim_v=512, causal=True, backend="reference")


def test_garbage_past_the_end_is_fine(inp):
    """Unused block-table slots hold garbage ids by construction: no error, correct output."""
    assert int(inp.block_table[1, 0]) > inp.k_cache.shape[0]  # request 1 is empty: slot 0 is garbage
    call(inp)


def test_head_dim_v(inp):
    with pytest.raises(ValueError, match="head_dim_v must be 512, got 576"):
        call(inp, head_dim_v=576)


def test_devices_must_match(inp):
    meta_seqlens = inp.cache_seqlens.to("meta")
    with pytest.raises(ValueError, match="cache_seqlens is on meta but q is on cpu"):
        call(inp, cache_seqlens=meta_seqlens)


def test_metadata_for_another_configuration(inp):
    md, ns = flashmla.get_mla_metadata(inp.cache_seqlens, 200, 1)  # 4 row tiles: 33 parts
    with pytest.raises(ValueError, match="num_q_tokens_per_head_k=200"):
        call(inp, tile_scheduler_metadata=md, num_splits=ns)
    md, ns = flashmla.get_mla_metadata(inp.cache_seqlens[:2].contiguous(), 32, 1)
    with pytest.raises(ValueError, match="computed for batch size 2"):
        call(inp, tile_scheduler_metadata=md, num_splits=ns)
    # copies lose the recorded configuration; the shape check still catches a wrong row count
    md, ns = flashmla.get_mla_metadata(inp.cache_seqlens, 200, 1)
    with pytest.raises(ValueError, match="needs num_sm_parts = 132"):
        call(inp, tile_scheduler_metadata=md.clone(), num_splits=ns.clone())
    md, ns = flashmla.get_mla_metadata(inp.cache_seqlens, 32, 1)
    with pytest.raises(ValueError, match=r"num_splits must have shape \(4,\)"):
        call(inp, tile_scheduler_metadata=md.clone(), num_splits=ns[:3].clone())
    with pytest.raises(TypeError, match="tile_scheduler_metadata must have dtype torch.int32"):
        call(inp, tile_scheduler_metadata=md.long(), num_splits=ns)
    with pytest.raises(ValueError, match="num_splits must be None"):
        call(inp, tile_scheduler_metadata=flashmla.get_mla_metadata()[0], num_splits=ns)


def test_get_mla_metadata_validation(inp):
    with pytest.raises(TypeError, match="cache_seqlens must have dtype torch.int32"):
        flashmla.get_mla_metadata(inp.cache_seqlens.long(), 32, 1)
    with pytest.raises(ValueError, match="num_q_tokens_per_head_k must be a positive int"):
        flashmla.get_mla_metadata(inp.cache_seqlens, 0, 1)
    with pytest.raises(ValueError, match="num_heads_k must be a positive int"):
        flashmla.get_mla_metadata(inp.cache_seqlens, 32, 0)
    with pytest.raises(ValueError, match="is_fp8_kvcache=True is not supported"):
        flashmla.get_mla_metadata(inp.cache_seqlens, 32, 1, is_fp8_kvcache=True)
    with pytest.raises(ValueError, match="topk must be None"):
        flashmla.get_mla_metadata(inp.cache_seqlens, 32, 1, topk=2048)
    with pytest.raises(ValueError, match="at least one request"):
        flashmla.get_mla_metadata(torch.zeros(0, dtype=torch.int32), 32, 1)


def test_sparse_and_fp8_arguments_rejected(inp):
    with pytest.raises(ValueError, match="indices must be None"):
        call(inp, indices=torch.zeros(3, 2, 8, dtype=torch.int32))
    with pytest.raises(ValueError, match="is_fp8_kvcache=True is not supported"):
        call(inp, is_fp8_kvcache=True)
