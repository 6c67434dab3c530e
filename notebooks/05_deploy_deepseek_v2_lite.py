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
# # 05 · Deploy DeepSeek-V2-Lite-Chat on our kernel and compare backends
#
# **What you will learn**
# - how much of an H100 the model's weights take and how many tokens of MLA cache fit in the rest
#   (and how many would fit with multi-head attention);
# - how to fetch the model through ModelScope into a cache that survives restarts, chat with it
#   through vLLM on our backend, and compare our backend with vLLM's Triton MLA and FlashMLA
#   backends in tokens per second on the same prompts;
# - how the same code runs on a machine that cannot download 31 GB: the real architecture with
#   random weights (`load_format="dummy"`), prompts given as token ids — timing is then real,
#   the text is not.
#
# **What it needs**: an NVIDIA GPU with ≥ 40 GB (Hopper for our CUDA kernel), vLLM ≥ 0.26 with
# flashmla installed (`pip install --no-build-isolation -e .`), ModelScope and ~32 GB of disk for the
# real weights (`MODELSCOPE_CACHE`, see `docs/pai-dsw.md`). Time: download 5–20 min once; each
# backend ~1–2 min to load and warm up. Without vLLM or a GPU the serving steps are skipped and
# say why; the memory arithmetic runs anywhere.

# %% tags=["parameters"]
SMOKE: bool = False  # True: CPU allowed; only the arithmetic runs (serving needs vLLM and a GPU)
DEVICE: str = "auto"  # "auto" (the GPU if torch sees one), "cuda", or "cpu" (cpu only with SMOKE)
OUTPUT_DIR: str = "../out/notebooks"  # step records and plots are written here
SEED: int = 0  # sampling seed
MODEL_ID: str = "deepseek-ai/DeepSeek-V2-Lite-Chat"  # ModelScope model id
MODEL_REVISION: str = "master"  # ModelScope revision; pin a commit for reproducible runs
MODEL_DIR: str = ""  # a local copy of the model; empty means download through ModelScope
WEIGHTS: str = "auto"  # "auto" (real if available, else dummy), "real" (fail without), or "dummy"
BACKENDS: list = ["CUSTOM", "TRITON_MLA", "FLASHMLA"]  # vLLM attention backends to compare; CUSTOM is ours
MAX_NEW_TOKENS: int = 256  # tokens generated per prompt in the comparison
BATCH_SIZE: int = 16  # prompts per comparison batch
GPU_MEMORY_UTILIZATION: float = 0.85  # fraction of GPU memory vLLM may take

# %%
import os

import matplotlib.pyplot as plt
import torch

from flashmla import env, mla_math

device = env.resolve_device(DEVICE, SMOKE)
env.use_triton_interpreter(device)
steps = env.StepLog("05_deploy_deepseek_v2_lite", smoke=SMOKE, output_dir=OUTPUT_DIR,
                    parameters=dict(SMOKE=SMOKE, DEVICE=DEVICE, SEED=SEED, MODEL_ID=MODEL_ID,
                                    MODEL_REVISION=MODEL_REVISION, MODEL_DIR=MODEL_DIR, WEIGHTS=WEIGHTS,
                                    BACKENDS=BACKENDS, MAX_NEW_TOKENS=MAX_NEW_TOKENS, BATCH_SIZE=BATCH_SIZE))
if WEIGHTS not in ("auto", "real", "dummy"):
    raise ValueError(f"WEIGHTS must be 'auto', 'real' or 'dummy', got {WEIGHTS!r}")
have_vllm = env.has_package("vllm", ">=0.26", import_name="vllm")
have_deploy = env.has_module("flashmla.deploy", "flashmla's deploy module")
serving_needs = [have_vllm, have_deploy, env.has_gpu_memory(40)]
print("vLLM:", "available" if have_vllm[0] else have_vllm[1])

# %% [markdown]
# ## 1. The model and its KV cache
#
# DeepSeek-V2-Lite: 15.7 B parameters (2.4 B active per token: 64 routed experts, 6 chosen,
# plus 2 shared), 27 layers, 16 attention heads, MLA with a 512-wide latent and a 64-wide RoPE key.

# %%
with steps.step("model_architecture") as step:
    if step.runs:
        cfg = mla_math.DEEPSEEK_V2_LITE
        print(cfg)
        print(f"cached per token: {mla_math.kv_cache_bytes_per_token('mla', cfg):,} bytes "
              f"({cfg.latent_dim} numbers x {cfg.num_layers} layers x 2 bytes); softmax scale {cfg.softmax_scale():.5f}")
        step.result(latent_dim=cfg.latent_dim, layers=cfg.num_layers, heads=cfg.num_heads)

# %% [markdown]
# ## 2. What fits on the GPU
#
# vLLM takes `gpu_memory_utilization` of the card, loads the weights (31.4 GB = 29.3 GiB in bf16),
# keeps room for activations and CUDA graphs, and turns the rest into KV-cache blocks of 64 tokens.

# %%
with steps.step("kv_cache_budget") as step:
    if step.runs:
        gpu_gib = torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else 79.2
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else "an H100 80GB (79.2 GiB, no GPU here)"
        budgets = {kind: mla_math.serving_budget(gpu_gib, kind=kind, utilization=GPU_MEMORY_UTILIZATION,
                                                 num_kv_heads=4 if kind == "gqa" else None)
                   for kind in ("mla", "gqa", "mha")}
        names = {"mla": "MLA (the model)", "gqa": "GQA, 4 kv heads", "mha": "MHA"}
        print(f"{label}: weights {budgets['mla'].weights_gib:.1f} GiB, KV cache {budgets['mla'].kv_cache_gib:.1f} GiB")
        for kind, b in budgets.items():
            print(f"  {names[kind]:<16} {b.bytes_per_token:>8,} B/token -> {b.max_tokens:>10,} tokens, "
                  f"{b.concurrent_requests:>5} requests of 4096 tokens")
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.barh([names[k] for k in budgets], [b.concurrent_requests for b in budgets.values()], color=["C0", "C1", "C3"])
        ax.set_xlabel("concurrent 4096-token requests in the KV cache")
        ax.set_title(f"DeepSeek-V2-Lite on {label.split(' (')[0]}")
        steps.savefig(fig, "kv_budget")
        plt.show()
        assert budgets["mla"].max_tokens > 7 * budgets["mha"].max_tokens
        step.result(gpu_gib=round(gpu_gib, 1), kv_cache_gib=round(budgets["mla"].kv_cache_gib, 1),
                    mla_tokens=budgets["mla"].max_tokens, mha_tokens=budgets["mha"].max_tokens)

# %% [markdown]
# ## 3. Real weights or dummy weights
#
# With `WEIGHTS="auto"`: a local copy (`MODEL_DIR`) or ModelScope's cache is used when present;
# otherwise the model is downloaded if ModelScope can be reached; otherwise the run uses **dummy
# weights** — the same architecture (`config.json` of V2-Lite) with random weights — and says so
# here and in the step record. Dummy weights give real timings but meaningless text.

# %%
with steps.step("choose_weights", needs=[have_deploy]) as step:
    if step.runs:
        from flashmla import deploy

        source = deploy.resolve_model_source(MODEL_ID, revision=MODEL_REVISION, model_dir=MODEL_DIR or None,
                                             weights=WEIGHTS)
        print(source)
        step.result(**{k: v for k, v in vars(source).items() if isinstance(v, (str, bool, int, float))})

# %% [markdown]
# ## 4. Download (once)

# %%
with steps.step("download", needs=[have_deploy, (have_deploy[0] and source.needs_download, "nothing to download: "
                                   + (getattr(source, "reason", "") if have_deploy[0] else ""))]) as step:
    if step.runs:
        model_path = deploy.download_model(source)
        print("model at", model_path)
        step.result(model_path=str(model_path))

# %% [markdown]
# ## 5. Chat on our backend

# %%
with steps.step("chat", needs=serving_needs) as step:
    if step.runs:
        reply = deploy.chat(source, "Write a quicksort in C++.", backend="CUSTOM", max_new_tokens=MAX_NEW_TOKENS,
                            gpu_memory_utilization=GPU_MEMORY_UTILIZATION, seed=SEED)
        print(reply)
        step.result(backend="CUSTOM", dummy_weights=source.dummy)

# %% [markdown]
# ## 6. Compare backends
#
# Each backend runs in its own process (vLLM caches the backend choice per process), on the same
# prompts, with CUDA graphs and block size 64; we report output tokens per second and the decode
# time per step.

# %%
with steps.step("compare_backends", needs=serving_needs) as step:
    if step.runs:
        results = deploy.compare_backends(source, backends=BACKENDS, batch_size=BATCH_SIZE,
                                          max_new_tokens=MAX_NEW_TOKENS,
                                          gpu_memory_utilization=GPU_MEMORY_UTILIZATION, seed=SEED)
        for r in results:
            print(r)
        fig, ax = plt.subplots(figsize=(6, 3))
        ok = [r for r in results if r.get("tokens_per_s")]
        ax.barh([r["backend"] for r in ok], [r["tokens_per_s"] for r in ok])
        ax.set_xlabel("output tokens / s")
        ax.set_title(f"DeepSeek-V2-Lite{' (dummy weights)' if source.dummy else ''}, batch {BATCH_SIZE}")
        steps.savefig(fig, "backends")
        plt.show()
        assert any(r["backend"] == "CUSTOM" and r.get("tokens_per_s") for r in results), "our backend did not run"
        step.result(tokens_per_s={r["backend"]: r.get("tokens_per_s") for r in results})

# %% [markdown]
# ## What to expect on an H100
#
# H100 80GB, vLLM 0.26.0, torch 2.11.0+cu130, block size 64, CUDA graphs, DeepSeek-V2-Lite with
# dummy weights, one process per backend (`perf-targets.md`, 2026-11-22): decode step at batch
# 64 × 3072-token prompts — TRITON_MLA 13.0 ms, FLASHMLA 8.51 ms; at batch 1 × 512 — TRITON_MLA
# 4.68 ms, FLASHMLA 4.93 ms. Our CUSTOM backend's target: at most FLASHMLA's in both. The KV budget
# at 0.85 utilisation is ≈ 36 GiB ≈ 1.2 M tokens of MLA cache (≈ 0.18 M with MHA).

# %%
steps.finish();
