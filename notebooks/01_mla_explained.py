# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · MLA explained: from multi-head attention to a 576-wide latent cache
#
# **What you will learn**
# - why decoding is dominated by reading the KV cache, and how much cache one token costs with
#   multi-head (MHA), grouped-query (GQA), multi-query (MQA) and multi-head latent attention (MLA),
#   with DeepSeek-V2-Lite's real numbers;
# - *weight absorption*: why MLA never decompresses its cache at decode time, proven numerically
#   on a random layer, and why the kernel's inputs are 576 wide (512 latent + 64 RoPE) with
#   V = the first 512 of them;
# - that `flashmla.flash_mla_with_kvcache` on a paged cache computes exactly that layer's attention;
# - the roofline argument: MHA decode is always memory-bound, MLA decode crosses into
#   compute-bound territory at about 120–160 heads·tokens on an H100.
#
# **What it needs**: a CPU is enough for everything here (the kernel call runs on the GPU when
# there is one). Time: about 10 s. Memory: < 1 GiB.

# %% tags=["parameters"]
SMOKE: bool = False  # True: shorter sequences; everything here also runs on a CPU
DEVICE: str = "auto"  # "auto" (the GPU if torch sees one), "cuda", or "cpu" (cpu only with SMOKE)
OUTPUT_DIR: str = "../out/notebooks"  # step records and plots are written here
SEED: int = 0  # random weights and hidden states
CONTEXT: int = 32768  # context length for the KV-cache table
KV_BUDGET_GIB: float = 40.0  # GPU memory left for the KV cache (H100 80 GB minus 31 GB weights and activations)
GPU: str = "H100 SXM (measured)"  # roofline to draw; a key of flashmla.mla_math.GPU_SPECS

# %%
import matplotlib.pyplot as plt
import torch

import flashmla
from flashmla import env, mla_math

device = env.resolve_device(DEVICE, SMOKE)
env.use_triton_interpreter(device)
steps = env.StepLog("01_mla_explained", smoke=SMOKE, output_dir=OUTPUT_DIR,
                    parameters=dict(SMOKE=SMOKE, DEVICE=DEVICE, SEED=SEED, CONTEXT=CONTEXT,
                                    KV_BUDGET_GIB=KV_BUDGET_GIB, GPU=GPU))
cfg = mla_math.DEEPSEEK_V2_LITE
print(cfg)

# %% [markdown]
# ## 1. Decode reads the whole cache for every new token
#
# In multi-head attention each layer projects the hidden state into per-head queries, keys and
# values. At decode time a request adds one token, and its query must meet the keys and values
# of *every* earlier token, so they are cached. One decode step therefore reads the whole KV
# cache of the batch once, while doing only two small matrix–vector products per head per
# cached token. The cache size per token decides how many requests fit on the GPU and how many
# bytes each step must move.
#
# DeepSeek-V2 (paper, Table 1) compares, per token and layer, with `n_h` heads of width `d_h`:
#
# | attention | cached numbers per token and layer |
# |---|---|
# | MHA | 2 · n_h · d_h |
# | GQA with n_g groups | 2 · n_g · d_h |
# | MQA | 2 · d_h |
# | MLA | d_c + d_R (latent + decoupled RoPE key) |
#
# DeepSeek-V2-Lite: `n_h = 16`, `d_h = 128`, `d_c = kv_lora_rank = 512`, `d_R = 64`, 27 layers, bf16.

# %%
with steps.step("kv_cache_sizes") as step:
    if step.runs:
        rows = mla_math.kv_cache_table(cfg, context=CONTEXT, budget_gib=KV_BUDGET_GIB, gqa_groups=(4, 2))
        print(mla_math.format_kv_cache_table(rows, context=CONTEXT, budget_gib=KV_BUDGET_GIB))
        v3 = mla_math.kv_cache_table(mla_math.DEEPSEEK_V3, context=CONTEXT, budget_gib=KV_BUDGET_GIB, gqa_groups=(8,))
        print("\nDeepSeek-V3 (128 heads, 61 layers) for scale:")
        print(mla_math.format_kv_cache_table(v3, context=CONTEXT, budget_gib=KV_BUDGET_GIB))
        by_label = {r.label: r for r in rows}
        # Hard checks: the arithmetic from the config, not numbers copied from somewhere.
        assert by_label["MLA"].bytes_per_token == (512 + 64) * 2 * 27 == 31104
        assert by_label["MHA"].bytes_per_token == 2 * 16 * 128 * 2 * 27
        fig = mla_math.plot_kv_cache(cfg, gqa_groups=(4, 2))
        steps.savefig(fig, "kv_cache")
        plt.show()
        step.result(mla_bytes_per_token=by_label["MLA"].bytes_per_token,
                    mha_bytes_per_token=by_label["MHA"].bytes_per_token,
                    mha_over_mla=round(by_label["MHA"].ratio_to_mla, 2),
                    v3_mha_over_mla=round({r.label: r for r in v3}["MHA"].ratio_to_mla, 2))

# %% [markdown]
# MLA caches 31,104 bytes per token for V2-Lite: 7.1× less than MHA would, a little more than
# MQA — but unlike MQA every head keeps its own keys and values, because they are *computed*
# from the shared latent by per-head up-projections. With 128 heads (V3) the saving is 57×.
#
# ## 2. Weight absorption: attention directly on the latent
#
# MLA caches, per token, a latent `c = x W_DKV` (512 numbers) and one RoPE key
# `k_R = RoPE(x W_KR)` (64 numbers, shared by all heads). Head `h`'s key and value would be
#
# $$k_h = [\,c\,W_{UK}^{(h)} \;|\; k_R\,], \qquad v_h = c\,W_{UV}^{(h)} .$$
#
# Decompressing them for every cached token at every step would undo the saving. Instead,
# matrix products regroup:
#
# $$q_h^{\text{nope}} \cdot (c\,W_{UK}^{(h)}) = (q_h^{\text{nope}}\,W_{UK}^{(h)\top}) \cdot c,
# \qquad \sum_t p_t\,(c_t W_{UV}^{(h)}) = \Big(\sum_t p_t\,c_t\Big)\,W_{UV}^{(h)} .$$
#
# So each head's query is mapped once into the latent space (`q_nope W_UKᵀ`, 512 wide) and
# concatenated with its RoPE part (64): a **576-wide query against 576-wide cache rows**, one KV
# head shared by all query heads (MQA-like), and the **values are the first 512 numbers of the
# same rows**. `W_UV` is applied to the 512-wide attention output afterwards. The RoPE part
# cannot be absorbed because its rotation depends on the position; that is why it is kept apart.
#
# One subtlety: the softmax scale stays the model's, `1/√192` (times YaRN's `mscale²` for
# V2-Lite), not `1/√576` — the absorbed dot product computes the same number as the original one.

# %%
with steps.step("weight_absorption") as step:
    if step.runs:
        demo = mla_math.absorption_demo(cfg, seq_len=37 if SMOKE else 300, new_tokens=2, seed=SEED)
        print(f"expanded vs absorbed (float64): max |diff| = {demo.max_abs_diff:.2e} "
              f"(outputs up to {demo.max_abs_value:.2f})")
        print(f"numbers cached per token: {demo.cached_numbers_per_token}; numbers the expanded form "
              f"materialises per token and step: {demo.expanded_numbers_per_token}")
        assert demo.max_abs_diff <= 1e-10 * max(1.0, demo.max_abs_value), "absorption changed the result"
        step.result(max_abs_diff=demo.max_abs_diff, softmax_scale=cfg.softmax_scale())

# %% [markdown]
# ## 3. The kernel computes this layer's attention
#
# Now the same random layer, but the attention runs through `flashmla.flash_mla_with_kvcache` on
# a **paged** bf16 cache, exactly as a server stores it: rows `[c | k_R]` in 64-token pages
# handed out in random order, NaN in the unused tail of the last page, garbage page ids past the
# end of the block table. We pass the model's softmax scale, take the 512-wide output, apply
# `W_UV`, and compare with the textbook float64 computation.

# %%
with steps.step("kernel_computes_mla") as step:
    if step.runs:
        seq_len = 37 if SMOKE else 1000
        weights = mla_math.MLAWeights.random(cfg, seed=SEED)
        x = torch.randn(seq_len, cfg.hidden_size, generator=torch.Generator().manual_seed(SEED + 1),
                        dtype=torch.float64)
        positions = torch.arange(seq_len)
        cache_rows = mla_math.mla_cache_rows(weights, x, positions)  # [S, 576]
        expected = mla_math.mla_attention_expanded(weights, x[-1:], positions[-1:], cache_rows)  # [1, h, 128]

        q = mla_math.absorbed_query(weights, x[-1:], positions[-1:])  # [1, h, 576]
        k_cache, block_table, cache_seqlens = mla_math.page_cache_rows(
            [cache_rows[:, None, :]], dtype=torch.bfloat16, device=device, seed=SEED)
        q_bf16 = q[None].to(device=device, dtype=torch.bfloat16)  # [b=1, s_q=1, h, 576]
        metadata, num_splits = flashmla.get_mla_metadata(cache_seqlens, cfg.num_heads, 1)
        backend = flashmla.resolve_backend("auto", device)
        latent_out, lse = flashmla.flash_mla_with_kvcache(
            q_bf16, k_cache, block_table, cache_seqlens, 512, metadata, num_splits,
            softmax_scale=cfg.softmax_scale(), causal=True, backend=backend)
        got = mla_math.absorbed_output(weights, latent_out[0].double().cpu())  # [1, h, 128]
        rel = ((got - expected).norm() / expected.norm()).item()
        print(f"backend {backend}: relative L2 error vs float64 textbook MLA = {rel:.2e} (bf16 inputs)")
        assert torch.isfinite(got).all(), "NaN from the poisoned cache rows leaked into the output"
        assert rel < 2e-2, f"relative error {rel:.3g} is too large for bf16"
        step.result(backend=backend, rel_l2_error=rel, seq_len=seq_len)

# %% [markdown]
# ## 4. Memory- or compute-bound? The roofline
#
# A kernel cannot run faster than `max(FLOPs / peak FLOP/s, bytes / bandwidth)`. The ratio
# FLOPs/bytes (arithmetic intensity) decides which term wins; the GPU's *ridge point*
# `peak / bandwidth` is where they are equal.
#
# Counted as FlashMLA counts them: FLOPs = 2·s_q·Σseqlen·h_q·(576+512), bytes ≈ 2·Σseqlen·576
# (the cache, read once, dominates). So MLA decode's intensity ≈ **1.89 · s_q · h_q** FLOP/byte:
# every query head (and every speculative token) reuses each 576-wide row that was loaded.
# MHA decode reads a separate K and V per head and uses each number once per token: ≈ **s_q**
# FLOP/byte (GQA: × the group size). On an H100 (ridge ≈ 230–295 FLOP/byte) MHA decode is hopelessly
# memory-bound, while MLA with 128 heads — DeepSeek-V3 without tensor parallelism — is
# compute-bound: the kernel must keep the tensor cores busy, not only stream bytes.

# %%
with steps.step("roofline") as step:
    if step.runs:
        gpu = mla_math.GPU_SPECS[GPU]
        for spec in mla_math.GPU_SPECS.values():
            print(f"{spec.name:<22} ridge {spec.ridge_point:6.1f} FLOP/B -> MLA compute-bound from "
                  f"h_q*s_q ~ {spec.mla_heads_at_ridge():5.1f}   ({spec.source})")
        lengths = [4096] * 128
        print(f"\nb=128, seqlen=4096 on {gpu.name}:")
        points = {}
        for s_q in (1, 2):
            for h_q in (16, 32, 64, 128):
                p = mla_math.roofline(lengths, s_q, h_q, gpu)
                points[f"s_q{s_q}_h{h_q}"] = p
                print(f"  s_q={s_q} h_q={h_q:3d}: {p.intensity:6.1f} FLOP/B, {p.bound}-bound, "
                      f"roofline time >= {p.time_s * 1e3:.3f} ms ({p.attainable_tflops:.0f} TFLOP/s)")
        # Hard checks on the argument itself.
        assert mla_math.mha_intensity_limit(1, 1) < gpu.ridge_point / 100  # MHA: ~1 FLOP/B
        assert points["s_q1_h16"].bound == "memory" and points["s_q2_h128"].bound == "compute"
        fig = mla_math.plot_roofline(gpu)
        steps.savefig(fig, "roofline")
        plt.show()
        step.result(ridge_flop_per_byte=gpu.ridge_point, mla_heads_at_ridge=gpu.mla_heads_at_ridge(),
                    bound_b128_s4096={k: v.bound for k, v in points.items()},
                    min_time_ms_h128_s1=points["s_q1_h128"].time_s * 1e3)

# %% [markdown]
# ## What to expect on an H100
#
# Everything above is arithmetic and runs the same everywhere: 31,104 B/token for MLA vs
# 221,184 B/token for MHA (7.11×; 56.9× for V3), absorption error ~1e-15, relative error of the
# paged bf16 kernel against float64 MLA ~3e-3. With the measured H100 ceilings (3.03 TB/s copy,
# ~700 TFLOP/s bf16 matmul; torch 2.11.0+cu130) the roofline bound for b=128, seqlen 4096 is
# 0.211 ms at h_q=128 and s_q=1. Anchors (`perf-targets.md`, measured 2026-11-22): DeepSeek's
# FlashMLA takes 0.263 ms there and FlashInfer 0.282 ms, about 80% of the bound. Measured beside
# them in the recorded run `benchmarks/results/bench_h100_2026-11-23/bench.md` (H100 80GB HBM3,
# torch 2.11.0+cu130, Triton 3.6.0, 2026-11-23; its own ceilings 3006 GB/s and 731 TFLOP/s put
# the bound at 0.213 ms): our CUDA kernel 0.308 ms, our Triton kernel 0.653 ms, FlashMLA as built
# in vLLM 0.26.0 0.291 ms, FlashInfer `fa3` 0.277 ms. Notebook 03 explains those numbers.

# %%
steps.finish();
