"""The backend's metadata builder and forward_mqa, driven through a real installed vLLM on CPU.

forward_mqa is checked against an independent computation of MLA attention: the *expanded*
form (per-head keys and values decompressed from the latent with W_UK / W_UV), while the
backend sees what vLLM gives it, the *absorbed* query ``[q_nope @ W_UK | q_pe]`` against the
latent cache, and its latent output is projected with W_UV afterwards, as vLLM does.
"""
import math

import pytest

from flashmla.vllm_backend import testing as vt

vt.prepare_cpu_environment()  # before anything imports vLLM
pytest.importorskip("vllm", reason="vLLM is not installed (CI installs it: see scripts/test.sh)")

import torch  # noqa: E402

import flashmla  # noqa: E402
from flashmla import reference, scheduler  # noqa: E402
from flashmla.vllm_backend import register, verify  # noqa: E402

H, D_NOPE, D_ROPE, D_LATENT, D_V = 16, 128, 64, 512, 128


@pytest.fixture(scope="module")
def config_for():
    """config_for(mode, query_len): a DeepSeek-V2-Lite VllmConfig, eager or with full CUDA graphs,
    with a speculator of query_len - 1 tokens when query_len > 1 (else vLLM calls it a prefill)."""
    register()
    cache = {}

    def make(mode, query_len=1):
        key = (mode, query_len)
        if key not in cache:
            cache[key] = vt.make_vllm_config(full_cuda_graphs=(mode == "graphs"),
                                             num_speculative_tokens=query_len - 1)
        return cache[key]
    return make


def _random_block_table(batch, max_blocks, num_blocks, generator):
    # Distinct pages for all used slots, garbage (incl. negative / out of range) elsewhere.
    table = torch.randint(-7, 10 * num_blocks, (batch, max_blocks), dtype=torch.int32, generator=generator)
    return table


def _assign_pages(seq_lens, table, num_blocks, generator):
    pages = torch.randperm(num_blocks - 1, generator=generator) + 1  # page 0 = vLLM's null block
    used = 0
    for i, n in enumerate(seq_lens):
        k = math.ceil(n / 64)
        table[i, :k] = pages[used:used + k].to(torch.int32)
        used += k
    return table


@pytest.mark.parametrize("mode", ["eager", "graphs"])
@pytest.mark.parametrize("seq_lens, query_len, padded", [
    ([1, 64, 65, 1000, 4096], 1, 0),
    ([3, 700, 129], 2, 0),          # speculative decoding: 1 + 1 token, causal
    ([513, 31, 2048], 1, 3),        # CUDA-graph padding: seqlen 0, block row 0
    ([5000], 4, 0),
])
def test_builder_produces_decode_metadata(config_for, mode, seq_lens, query_len, padded):
    builder = vt.make_builder(config_for(mode, query_len))
    assert builder.reorder_batch_threshold == query_len
    g = torch.Generator().manual_seed(1)
    batch, max_blocks = len(seq_lens) + padded, 96
    table = _assign_pages(seq_lens, _random_block_table(batch, max_blocks, 400, g), 400, g)
    common = vt.common_decode_metadata(seq_lens, query_len, table, num_padded=padded)
    metadata = builder.build(0, common)

    assert (metadata.num_decodes, metadata.num_prefills) == (batch, 0)
    assert metadata.num_decode_tokens == query_len * batch  # padded rows included, as in a graph
    decode = metadata.decode
    lengths = torch.tensor(list(seq_lens) + [0] * padded, dtype=torch.int32)
    assert torch.equal(decode.seq_lens, lengths)
    assert torch.equal(decode.block_table, common.block_table_tensor[:batch])
    assert decode.query_len == query_len
    if padded:
        assert (decode.block_table[len(seq_lens):] == 0).all()
    # The schedule is exactly flashmla's for these lengths and s_q * h_q query rows per kv head.
    expected_md, expected_splits = scheduler.compute_tile_scheduler_metadata(
        lengths, query_len * H, 1, scheduler.device_num_sms(torch.device("cpu")))
    assert torch.equal(decode.tile_scheduler_metadata, expected_md)
    assert torch.equal(decode.num_splits, expected_splits)
    # Padded rows get no chunks, so nothing reads their block tables.
    chunks = decode.num_splits[1:] - decode.num_splits[:-1]
    assert (chunks[len(seq_lens):] == 0).all() and (chunks[:len(seq_lens)] >= 1).all()

    if mode == "graphs":
        # Persistent buffers: the captured kernels read the same addresses every step.
        assert decode.tile_scheduler_metadata.data_ptr() == builder.graph_tile_metadata.data_ptr()
        assert decode.num_splits.data_ptr() == builder.graph_num_splits.data_ptr()
        other = vt.common_decode_metadata([7] * batch, query_len, table)
        again = builder.build(0, other).decode
        assert again.num_splits.data_ptr() == builder.graph_num_splits.data_ptr()
        assert torch.equal(again.num_splits, scheduler.compute_tile_scheduler_metadata(
            torch.full((batch,), 7, dtype=torch.int32), query_len * H, 1,
            scheduler.device_num_sms(torch.device("cpu")))[1])
    else:
        assert builder.graph_tile_metadata is None


def _expanded_mla(q_nope, q_pe, c_kv, k_pe, w_uk, w_uv, scale, s_q):
    """MLA attention of one request, computed the long way in float64.

    q_nope [s_q, H, 128], q_pe [s_q, H, 64], c_kv [L, 512], k_pe [L, 64],
    w_uk / w_uv [H, 128, 512] (k_nope = w_uk @ c_kv, v = w_uv @ c_kv). Causal over the s_q
    new tokens, which are the last s_q of the L cached ones. Returns [s_q, H, 128]."""
    L = c_kv.shape[0]
    k_nope = torch.einsum("hdl,nl->nhd", w_uk, c_kv)          # [L, H, 128]
    v = torch.einsum("hdl,nl->nhd", w_uv, c_kv)               # [L, H, 128]
    scores = (torch.einsum("thd,nhd->htn", q_nope, k_nope)
              + torch.einsum("thr,nr->htn", q_pe, k_pe)) * scale
    t = torch.arange(s_q)[:, None]
    visible = torch.arange(L)[None, :] < (L - (s_q - 1 - t))
    scores = scores.masked_fill(~visible[None], -math.inf)
    return torch.einsum("htn,nhd->thd", torch.softmax(scores, dim=-1), v)


@pytest.mark.parametrize("seq_lens, query_len, padded", [
    ([1, 77, 130, 600], 1, 0),
    ([40, 257], 2, 0),
    ([300, 64], 1, 2),
])
def test_forward_mqa_equals_expanded_mla_attention(config_for, seq_lens, query_len, padded):
    config = config_for("eager", query_len)
    builder = vt.make_builder(config)
    impl = vt.make_impl(config)
    impl.kernel = "reference"  # the CPU path; the GPU kernels are checked against it elsewhere
    scale = impl.scale
    g = torch.Generator().manual_seed(7)
    dtype = torch.bfloat16
    num_blocks, max_blocks = 64, 16
    batch = len(seq_lens) + padded

    w_uk = torch.randn(H, D_NOPE, D_LATENT, generator=g) / math.sqrt(D_LATENT)
    w_uv = torch.randn(H, D_V, D_LATENT, generator=g) / math.sqrt(D_LATENT)
    cache = torch.full((num_blocks, 64, D_LATENT + D_ROPE), float("nan"), dtype=dtype)  # unused rows: NaN
    table = _assign_pages(seq_lens, _random_block_table(batch, max_blocks, num_blocks, g), num_blocks, g)
    q_nope_all, q_pe_all, expected = [], [], []
    for i, n in enumerate(seq_lens):
        c_kv = torch.randn(n, D_LATENT, generator=g).to(dtype)
        k_pe = torch.randn(n, D_ROPE, generator=g).to(dtype)
        for pos in range(n):  # what vLLM's concat_and_cache_mla writes: [c_kv | k_pe] per slot
            page = int(table[i, pos // 64])
            cache[page, pos % 64] = torch.cat([c_kv[pos], k_pe[pos]])
        q_nope = torch.randn(query_len, H, D_NOPE, generator=g).to(dtype)
        q_pe = torch.randn(query_len, H, D_ROPE, generator=g).to(dtype)
        q_nope_all.append(q_nope)
        q_pe_all.append(q_pe)
        expected.append(_expanded_mla(q_nope.double(), q_pe.double(), c_kv.double(), k_pe.double(),
                                      w_uk.double(), w_uv.double(), scale, query_len))
    # vLLM's decode path: absorb W_UK into the query (ql_nope = q_nope @ W_UK), hand over the tuple.
    q_nope = torch.cat(q_nope_all + [torch.zeros(query_len * padded, H, D_NOPE, dtype=dtype)])
    q_pe = torch.cat(q_pe_all + [torch.zeros(query_len * padded, H, D_ROPE, dtype=dtype)])
    ql_nope = torch.einsum("thd,hdl->thl", q_nope.float(), w_uk).to(dtype)

    common = vt.common_decode_metadata(seq_lens, query_len, table, num_padded=padded)
    metadata = builder.build(0, common)
    latent_out, lse = impl.forward_mqa((ql_nope, q_pe), cache, metadata, layer=None)

    assert latent_out.shape == (batch * query_len, H, D_LATENT)
    assert lse.shape == (batch, H, query_len)
    if padded:  # padded graph rows: nothing to attend -> out = 0, lse = +inf (never NaN)
        assert (latent_out[len(seq_lens) * query_len:] == 0).all()
        assert torch.isinf(lse[len(seq_lens):]).all()
    out = torch.einsum("thl,hdl->thd", latent_out[: len(seq_lens) * query_len].double(), w_uv.double())
    want = torch.cat(expected)
    err = (out - want).abs().max() / want.abs().max()
    assert err < 2e-2, f"relative error {err:.3g}"
    assert torch.isfinite(lse[: len(seq_lens)]).all()
    assert not torch.isnan(latent_out).any()


def test_dense_reference_matches_flashmla_reference():
    """The verification switch's capturable reference against the project's oracle, with NaN in
    unused cache rows, garbage block-table entries, empty rows and causal s_q > 1."""
    g = torch.Generator().manual_seed(3)
    for seq_lens, s_q in [([1, 64, 200, 0, 511], 1), ([70, 3, 128], 3)]:
        b, num_blocks, max_blocks = len(seq_lens), 40, 9
        cache = torch.randn(num_blocks, 64, 1, 576, generator=g).to(torch.bfloat16)
        table = _assign_pages(seq_lens, _random_block_table(b, max_blocks, num_blocks, g), num_blocks, g)
        for i, n in enumerate(seq_lens):  # poison every row past each sequence's end
            if n % 64:
                cache[table[i, n // 64], n % 64:] = float("nan")
        q = torch.randn(b, s_q, H, 576, generator=g).to(torch.bfloat16)
        lens = torch.tensor(seq_lens, dtype=torch.int32)
        causal = s_q > 1
        ref_out, ref_lse = reference.decode(q, cache, table, lens, 0.1, causal)
        out, lse = verify.dense_reference(q, cache, table, lens, 0.1, causal)
        assert torch.allclose(out, ref_out.float(), atol=1e-2, rtol=1e-2)
        assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
        finite = torch.isfinite(ref_lse)
        assert torch.allclose(lse[finite], ref_lse[finite], atol=1e-4)


def test_verification_switch_catches_a_wrong_output(config_for, monkeypatch):
    monkeypatch.setenv(verify.ENV, "4")
    verify.reset()
    try:
        builder = vt.make_builder(config_for("eager"))
        impl = vt.make_impl(config_for("eager"))
        impl.kernel = "reference"
        assert builder.verifier is verify.active() is not None
        g = torch.Generator().manual_seed(5)
        seq_lens = [90, 300, 5]
        cache = torch.randn(20, 64, 576, generator=g).to(torch.bfloat16)
        table = _assign_pages(seq_lens, _random_block_table(3, 8, 20, g), 20, g)
        common = vt.common_decode_metadata(seq_lens, 1, table)
        q = (torch.randn(3, H, 512, generator=g).to(torch.bfloat16),
             torch.randn(3, H, 64, generator=g).to(torch.bfloat16))
        impl.forward_mqa(q, cache, builder.build(0, common), layer=None)
        summary = builder.verifier.poll()  # what the next step's build() does
        assert summary["passed"] and summary["checked_calls"] == 1

        real_decode = flashmla.flash_mla_with_kvcache

        def off_by_a_bit(*args, **kwargs):
            out, lse = real_decode(*args, **kwargs)
            return out * 1.1, lse
        monkeypatch.setattr(flashmla, "flash_mla_with_kvcache", off_by_a_bit)
        impl.forward_mqa(q, cache, builder.build(0, common), layer=None)
        with pytest.raises(verify.VerificationError, match="differs from the float32 reference"):
            builder.build(0, common)
    finally:
        verify.reset()


def test_sampled_rows_cover_first_and_last():
    for b in [1, 5, 8, 9, 64, 65, 512]:
        rows = list(range(b))[verify.sampled_slice(b)]
        assert rows[0] == 0 and len(rows) <= verify.SAMPLED_REQUESTS
        assert b <= verify.SAMPLED_REQUESTS or b - 1 - rows[-1] < (b - 1) // (verify.SAMPLED_REQUESTS - 1) + 1


@pytest.mark.gpu
def test_cuda_graph_replay_with_padded_batch_on_gpu(config_for, monkeypatch):
    """What vLLM's full CUDA graphs do: capture forward_mqa once for a padded batch, then, each
    step, copy new lengths / block tables / queries into the same buffers, rebuild the metadata
    (copied into the builder's persistent buffers) and replay. Padded rows (seqlen 0, block 0)
    must give out = 0, lse = +inf and read nothing; the verification switch runs inside the graph."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    import dataclasses
    monkeypatch.setenv(verify.ENV, "100")
    verify.reset()
    try:
        device = torch.device("cuda")
        config = config_for("graphs")
        builder = vt.make_builder(config, device=device)
        impl = vt.make_impl(config)
        assert builder.verifier is not None
        g = torch.Generator().manual_seed(11)
        num_blocks, max_blocks, batch, real = 300, 64, 8, 5  # 4000 tokens need 63 blocks
        cache = torch.randn(num_blocks, 64, 576, generator=g).to(torch.bfloat16).to(device)
        lens_buf = torch.zeros(batch, dtype=torch.int32, device=device)
        table_buf = torch.zeros(batch, max_blocks, dtype=torch.int32, device=device)
        ql_buf = torch.zeros(batch, H, 512, dtype=torch.bfloat16, device=device)
        qpe_buf = torch.zeros(batch, H, 64, dtype=torch.bfloat16, device=device)

        def step(seq_lens):
            table = _assign_pages(seq_lens, _random_block_table(batch, max_blocks, num_blocks, g), num_blocks, g)
            table[real:] = 0
            lens_buf.copy_(torch.tensor(list(seq_lens) + [0] * (batch - real), dtype=torch.int32))
            table_buf.copy_(table)
            ql_buf.copy_(torch.randn(batch, H, 512, generator=g).to(torch.bfloat16))
            qpe_buf.copy_(torch.randn(batch, H, 64, generator=g).to(torch.bfloat16))
            common = vt.common_decode_metadata(seq_lens, 1, table, num_padded=batch - real, device=device)
            common = dataclasses.replace(common, seq_lens=lens_buf, block_table_tensor=table_buf)
            return builder.build(0, common)

        def expected():
            q = torch.cat([ql_buf, qpe_buf], dim=-1).unsqueeze(1)
            return reference.decode(q, cache.unsqueeze(-2), table_buf, lens_buf, impl.scale, False)

        metadata = step([100, 4000, 64, 1, 700])
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            impl.forward_mqa((ql_buf, qpe_buf), cache, metadata, None)  # warm-up (Triton JIT etc.)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out, lse = impl.forward_mqa((ql_buf, qpe_buf), cache, metadata, None)
        for seq_lens in ([100, 4000, 64, 1, 700], [3000, 5, 129, 2048, 64], [1, 1, 1, 1, 3072]):
            step(seq_lens)
            graph.replay()
            torch.cuda.synchronize()
            ref_out, ref_lse = expected()
            got = out.reshape(batch, 1, H, 512).float()
            err = (got[:real] - ref_out[:real].float()).abs().max() / ref_out[:real].float().abs().max()
            assert err < 2e-2, f"{seq_lens}: relative error {err:.3g}"
            assert (got[real:] == 0).all() and torch.isinf(lse[real:]).all()
            assert torch.allclose(lse[:real], ref_lse[:real], atol=1e-2)
        summary = builder.verifier.poll()
        assert summary["passed"] and summary["checked_calls"] >= 4
    finally:
        verify.reset()
