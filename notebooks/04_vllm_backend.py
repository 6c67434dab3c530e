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
# # 04 · Our kernel inside vLLM: a plugin, not a patch
#
# **What you will learn**
# - how a pip-installed package plugs an attention backend into vLLM without copying a file into
#   `site-packages` (the 2025 tutorial did that for vLLM 0.7): an entry point in the
#   `vllm.general_plugins` group whose `register()` puts our backend into vLLM's registry, in
#   every vLLM process;
# - how to select it: `vllm serve … --attention-backend CUSTOM`, or
#   `LLM(…, attention_backend="CUSTOM")` (`VLLM_ATTENTION_BACKEND` no longer exists since 0.15);
# - what vLLM calls and when: the metadata builder once per step on the host, `forward_mqa` once
#   per layer, inside a CUDA graph for pure-decode batches.
#
# **What it needs**: vLLM ≥ 0.26 (tested with 0.26.0, torch 2.11.0+cu130) installed together with
# flashmla (`pip install --no-build-isolation -e .`), and a Hopper GPU for our CUDA kernel. Without
# vLLM the notebook still shows the plugin declaration and explains the call sequence; the vLLM
# steps say why they were skipped. Time: < 1 min. Memory: < 4 GiB.

# %% tags=["parameters"]
SMOKE: bool = False  # True: CPU allowed; the vLLM steps need vLLM (and a GPU for the kernel check)
DEVICE: str = "auto"  # "auto" (the GPU if torch sees one), "cuda", or "cpu" (cpu only with SMOKE)
OUTPUT_DIR: str = "../out/notebooks"  # step records and plots are written here
SEED: int = 0  # random inputs of the kernel check
VLLM_MIN_VERSION: str = "0.26.0"  # oldest vLLM the plugin supports

# %%
import importlib.metadata
import tomllib
from pathlib import Path

import torch

import flashmla
from flashmla import env

device = env.resolve_device(DEVICE, SMOKE)
env.use_triton_interpreter(device)
steps = env.StepLog("04_vllm_backend", smoke=SMOKE, output_dir=OUTPUT_DIR,
                    parameters=dict(SMOKE=SMOKE, DEVICE=DEVICE, SEED=SEED, VLLM_MIN_VERSION=VLLM_MIN_VERSION))
have_vllm = env.has_package("vllm", ">=" + VLLM_MIN_VERSION, import_name="vllm")
have_plugin = env.has_module("flashmla.vllm_backend", "the vLLM backend module of flashmla")
print("vLLM:", "available" if have_vllm[0] else have_vllm[1])

# %% [markdown]
# ## 1. The plugin declaration
#
# `pyproject.toml` declares one entry point:
#
# ```toml
# [project.entry-points."vllm.general_plugins"]
# flashmla = "flashmla.vllm_backend:register"
# ```
#
# vLLM's `load_general_plugins()` calls every function in that group, once per process, in the
# API server, the engine core and every worker, before any model layer is built. Entry points are
# found only for an **installed** distribution (a `flashmla-*.dist-info` on `sys.path`); putting the
# checkout on `PYTHONPATH` is not enough — hence `pip install -e .`.

# %%
with steps.step("plugin_declared") as step:
    if step.runs:
        pyproject = tomllib.loads((Path(flashmla.__file__).resolve().parent.parent / "pyproject.toml").read_text())
        declared = pyproject["project"]["entry-points"]["vllm.general_plugins"]
        print("declared in pyproject.toml:", declared)
        assert declared == {"flashmla": "flashmla.vllm_backend:register"}
        installed = [ep for ep in importlib.metadata.entry_points(group="vllm.general_plugins") if ep.name == "flashmla"]
        if installed:
            print("installed entry point:", installed[0].value, "from", installed[0].dist.name if installed[0].dist else "?")
        else:
            print("NOTE: flashmla is not pip-installed here, so vLLM would not find the plugin; "
                  "run `pip install --no-build-isolation -e .` in the repository")
        step.result(declared=declared["flashmla"], installed=bool(installed))

# %% [markdown]
# ## 2. What vLLM calls, and when
#
# For DeepSeek-V2-Lite (16 heads at TP=1) one decode step goes:
#
# 1. **Once per step, on the host**: the metadata builder's `build()` splits the batch into
#    decodes and prefills and calls our `_build_decode(block_table, seq_lens, …)`, which runs
#    `flashmla.get_mla_metadata(seq_lens, s_q·16, 1)` and copies the schedule into persistent
#    buffers (CUDA graphs replay fixed addresses; padded graph rows have `seq_len = 0`, which our
#    schedule gives 0 chunks, so they produce out = 0 and are never read).
# 2. **Per layer (27 of them), inside the CUDA graph for pure-decode batches**: the layer writes
#    the new token's `[c_kv (512) | k_pe (64)]` row into the paged cache (vLLM's own
#    `concat_and_cache_mla`, block size 64 because our backend declares it), absorbs `W_UK` into
#    the query (`q_nope @ W_UK^T`), and calls our **`forward_mqa(q, kv_cache, metadata, layer)`**,
#    which is a single `flashmla.flash_mla_with_kvcache(…)` call with the model's softmax scale
#    and `causal=True`. vLLM then applies `W_UV` and `o_proj`.
# 3. **Prefill** (prompt processing) does not go through our kernel: vLLM's MLA prefill backend
#    (FlashAttention 3 on Hopper) computes it on the decompressed keys and values.

# %%
with steps.step("register_plugin", needs=[have_vllm, have_plugin]) as step:
    if step.runs:
        from flashmla import vllm_backend

        vllm_backend.register()
        vllm_backend.register()  # vLLM may call it several times per process: it must be idempotent
        from vllm.v1.attention.backends.registry import AttentionBackendEnum

        path = AttentionBackendEnum.CUSTOM.get_path()
        backend_cls = AttentionBackendEnum.CUSTOM.get_class()
        print("CUSTOM ->", path)
        print("name:", backend_cls.get_name(), "| kernel block sizes:", backend_cls.get_supported_kernel_block_sizes())
        assert path.startswith("flashmla."), path
        step.result(backend_class=path, name=backend_cls.get_name())

# %% [markdown]
# ## 3. The backend computes what the kernel computes
#
# The plugin's `forward_mqa` on a vLLM-shaped problem (query as vLLM hands it over, cache as
# `[num_blocks, 64, 576]`, padded rows with `seq_len = 0`) must equal the float32 reference.

# %%
with steps.step("backend_matches_reference", needs=[have_vllm, have_plugin, env.has_cuda_gpu()]) as step:
    if step.runs:
        from flashmla import vllm_backend

        report = vllm_backend.self_check(device=device, seed=SEED)
        print(report)
        assert report["ok"], report
        step.result(**{k: v for k, v in report.items() if isinstance(v, (int, float, str, bool))})

# %% [markdown]
# ## 4. Use it
#
# ```bash
# vllm serve deepseek-ai/DeepSeek-V2-Lite-Chat --trust-remote-code --block-size 64 \
#      --attention-backend CUSTOM            # ours
# vllm serve … --attention-backend TRITON_MLA   # vLLM's Triton MLA, the portable baseline
# vllm serve … --attention-backend FLASHMLA     # vLLM's build of DeepSeek's FlashMLA
# ```
#
# The log says `Using CUSTOM backend` (our class is named in the registry line). Notebook 05 does
# this from Python and compares the three.
#
# ## What to expect on an H100
#
# With vLLM 0.26.0 / torch 2.11.0+cu130: `CUSTOM -> flashmla.vllm_backend…`, name `CUSTOM`, kernel
# block size `[64]`; the backend check matches the reference to bf16 rounding (max abs error
# ≈ 2e-3 to 4e-3). Without vLLM (e.g. the CPU CI) only the plugin declaration runs.

# %%
steps.finish();
