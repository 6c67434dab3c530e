"""flashmla.mla_math: KV-cache arithmetic, weight absorption, the paged demo and the roofline."""
import math

import pytest
import torch

import flashmla
from flashmla import mla_math
from flashmla.mla_math import DEEPSEEK_V2_LITE as LITE


# --------------------------------------------------------------------------- KV-cache size
def test_kv_cache_bytes_per_token_follow_the_paper_table():
    # Per token and layer: MHA 2*n_h*d_h, GQA 2*n_g*d_h, MQA 2*d_h, MLA d_c + d_R; 27 layers, bf16.
    assert mla_math.kv_cache_bytes_per_token("mla", LITE) == (512 + 64) * 27 * 2 == 31104
    assert mla_math.kv_cache_bytes_per_token("mha", LITE) == 2 * 16 * 128 * 27 * 2
    assert mla_math.kv_cache_bytes_per_token("gqa", LITE, num_kv_heads=4) == 2 * 4 * 128 * 27 * 2
    assert mla_math.kv_cache_bytes_per_token("mqa", LITE) == 2 * 128 * 27 * 2
    assert mla_math.kv_cache_bytes_per_token("mla", LITE, bytes_per_element=1) == 576 * 27
    # MLA's row does not grow with the number of heads.
    assert mla_math.kv_cache_bytes_per_token("mla", mla_math.DEEPSEEK_V3) == 576 * 61 * 2


def test_kv_cache_arguments_are_checked():
    with pytest.raises(ValueError, match="num_kv_heads"):
        mla_math.kv_cache_bytes_per_token("gqa", LITE)
    with pytest.raises(ValueError, match="num_kv_heads"):
        mla_math.kv_cache_bytes_per_token("gqa", LITE, num_kv_heads=17)
    with pytest.raises(ValueError, match="kind"):
        mla_math.kv_cache_bytes_per_token("mlp", LITE)


def test_kv_cache_table_is_consistent():
    rows = mla_math.kv_cache_table(LITE, context=32768, budget_gib=40, gqa_groups=(4, 2))
    by = {r.label: r for r in rows}
    assert [r.label for r in rows] == ["MHA", "GQA (4 kv heads)", "GQA (2 kv heads)", "MQA", "MLA"]
    assert by["MLA"].ratio_to_mla == 1.0
    assert by["MHA"].ratio_to_mla == pytest.approx(221184 / 31104)
    for r in rows:
        assert r.gib_at_context == pytest.approx(r.bytes_per_token * 32768 / 2**30)
        assert r.max_tokens_in_budget == int(40 * 2**30 // r.bytes_per_token)
    text = mla_math.format_kv_cache_table(rows, context=32768, budget_gib=40)
    assert "31,104" in text and "MHA" in text


def test_softmax_scale_is_the_models_not_576():
    plain = mla_math.MLAConfig("x", 64, 2, 1, 32, 16, 8, 16)
    assert plain.softmax_scale() == pytest.approx(24 ** -0.5)
    mscale = 0.1 * 0.707 * math.log(40) + 1
    assert LITE.softmax_scale() == pytest.approx(192 ** -0.5 * mscale ** 2)
    assert LITE.latent_dim == 576 and LITE.qk_head_dim == 192


# --------------------------------------------------------------------------- absorption
def test_weight_absorption_is_exact_in_float64():
    result = mla_math.absorption_demo(LITE, seq_len=23, new_tokens=3, seed=1)
    assert result.expanded.shape == (3, 16, 128)
    assert result.max_abs_value > 0.05  # a real signal, not zeros
    assert result.max_abs_diff < 1e-12
    assert result.cached_numbers_per_token == 576
    assert result.expanded_numbers_per_token == 16 * (192 + 128)


def test_absorption_demo_detects_a_broken_absorption(monkeypatch):
    # Guard against a test that cannot fail: transposing W_UK the wrong way must show up.
    original = mla_math.absorbed_query

    def wrong(weights, x_q, positions):
        q = original(weights, x_q, positions)
        return q.flip(-1)
    monkeypatch.setattr(mla_math, "absorbed_query", wrong)
    assert mla_math.absorption_demo(LITE, seq_len=9, seed=2).max_abs_diff > 1e-3


def test_rope_is_a_rotation_that_depends_on_position():
    x = torch.randn(5, 64, dtype=torch.float64)
    pos = torch.arange(5)
    y = mla_math.apply_rope(x, pos)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))  # rotations keep the norm
    torch.testing.assert_close(y[0], x[0])  # position 0: identity
    assert not torch.allclose(y[1:], x[1:])
    heads = mla_math.apply_rope(x[:, None, :].expand(5, 3, 64), pos)
    torch.testing.assert_close(heads[:, 2], y)


def test_paged_cache_holds_the_rows_and_poisons_the_rest():
    rows = [torch.randn(70, 1, 576), torch.randn(5, 1, 576)]
    k_cache, block_table, seqlens = mla_math.page_cache_rows(rows, dtype=torch.float32, seed=3)
    assert seqlens.tolist() == [70, 5] and block_table.dtype == torch.int32
    for i, r in enumerate(rows):
        pages = block_table[i, : math.ceil(len(r) / 64)].long()
        got = k_cache[pages].reshape(-1, 1, 576)[: len(r)]
        torch.testing.assert_close(got, r)
        assert torch.isnan(k_cache[pages].reshape(-1, 1, 576)[len(r):]).all()  # tail of the last page
        assert (block_table[i, len(pages):] >= k_cache.shape[0]).all()  # garbage ids, out of range


def test_the_kernel_api_computes_the_mla_layer():
    """The notebook-01 demo: the paged bf16 decode through flashmla (reference backend here)
    reproduces the textbook float64 MLA layer."""
    weights = mla_math.MLAWeights.random(LITE, seed=0)
    x = torch.randn(100, LITE.hidden_size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    pos = torch.arange(100)
    cache = mla_math.mla_cache_rows(weights, x, pos)
    expected = mla_math.mla_attention_expanded(weights, x[-1:], pos[-1:], cache)
    q = mla_math.absorbed_query(weights, x[-1:], pos[-1:])[None].to(torch.bfloat16)
    k_cache, block_table, seqlens = mla_math.page_cache_rows([cache[:, None]], seed=0)
    md, ns = flashmla.get_mla_metadata(seqlens, 16, 1)
    out, _ = flashmla.flash_mla_with_kvcache(q, k_cache, block_table, seqlens, 512, md, ns,
                                             softmax_scale=LITE.softmax_scale(), backend="reference")
    got = mla_math.absorbed_output(weights, out[0].double())
    rel = ((got - expected).norm() / expected.norm()).item()
    assert rel < 2e-2
    # With the default 1/sqrt(576) scale the result is a different function: the check can fail.
    out_wrong, _ = flashmla.flash_mla_with_kvcache(q, k_cache, block_table, seqlens, 512, md, ns,
                                                   backend="reference")
    wrong = mla_math.absorbed_output(weights, out_wrong[0].double())
    assert ((wrong - expected).norm() / expected.norm()).item() > 5 * rel


# --------------------------------------------------------------------------- roofline
def test_flops_and_bytes_match_flashmla_counting():
    lens = [4096] * 128
    assert mla_math.decode_flops(lens, 1, 128) == 2 * 1 * 4096 * 128 * 128 * (576 + 512)
    assert mla_math.decode_bytes(lens, 1, 128) == 2 * (4096 * 128 * 576 + 128 * 1 * 128 * (576 + 512))


def test_intensity_limits():
    assert mla_math.mla_intensity_limit(1, 128) == pytest.approx(128 * 1088 / 576)
    assert mla_math.mla_intensity_limit(2, 64) == mla_math.mla_intensity_limit(1, 128)
    assert mla_math.mha_intensity_limit(1) == 1.0 and mla_math.mha_intensity_limit(2, 8) == 16.0
    # Long contexts approach the limit from below (q and out traffic).
    p = mla_math.roofline([1 << 20], 1, 128, mla_math.GPU_SPECS["H100 SXM (datasheet)"])
    assert p.intensity == pytest.approx(mla_math.mla_intensity_limit(1, 128), rel=1e-3)
    assert p.intensity < mla_math.mla_intensity_limit(1, 128)


def test_roofline_bound_and_time():
    gpu = mla_math.GPUSpec("toy", peak_tflops=100.0, bandwidth_tbs=1.0, source="test")
    assert gpu.ridge_point == 100.0
    assert gpu.mla_heads_at_ridge() == pytest.approx(100 * 576 / 1088)
    lens = [8192] * 64
    low = mla_math.roofline(lens, 1, 16, gpu)
    assert low.bound == "memory" and low.time_s == pytest.approx(low.bytes / 1e12)
    high = mla_math.roofline(lens, 2, 128, gpu)
    assert high.bound == "compute" and high.time_s == pytest.approx(high.flops / 100e12)
    assert high.attainable_tflops == pytest.approx(100.0)
    # The H100 figures of perf-targets.md: b=128, 4096, h=128, s_q=1 sits just below the ridge.
    h100 = mla_math.GPU_SPECS["H100 SXM (measured)"]
    assert mla_math.roofline([4096] * 128, 1, 128, h100).bound == "memory"
    assert mla_math.roofline([4096] * 128, 2, 128, h100).bound == "compute"


def test_plots_build(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for fig in (mla_math.plot_kv_cache(LITE), mla_math.plot_roofline(mla_math.GPU_SPECS["H20 (datasheet)"])):
        path = tmp_path / "f.png"
        fig.savefig(path)
        assert path.stat().st_size > 1000
        plt.close(fig)


def test_decode_batch_through_the_paged_api():
    """Notebook 04's problem: several requests, s_q = 2 (causal), paged, through flashmla."""
    batch = mla_math.decode_batch(LITE, seq_lens=(3, 70), s_q=2, seed=4)
    assert [q.shape for q in batch.queries] == [(2, 16, 576)] * 2
    k_cache, block_table, seqlens = mla_math.page_cache_rows([r[:, None] for r in batch.cache_rows], seed=1)
    q = torch.stack(batch.queries).to(torch.bfloat16)
    md, ns = flashmla.get_mla_metadata(seqlens, 2 * 16, 1)
    out, _ = flashmla.flash_mla_with_kvcache(q, k_cache, block_table, seqlens, 512, md, ns,
                                             softmax_scale=LITE.softmax_scale(), causal=True, backend="reference")
    for i in range(2):
        got = mla_math.absorbed_output(batch.weights, out[i].double())
        rel = ((got - batch.expected[i]).norm() / batch.expected[i].norm()).item()
        assert rel < 2e-2, (i, rel)
    with pytest.raises(ValueError, match="s_q"):
        mla_math.decode_batch(LITE, seq_lens=(1,), s_q=2)
