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
# **What it needs**: vLLM ≥ 0.26 (tested with 0.26.0 on an H100, torch 2.11.0+cu130; 0.32.0 on a CPU)
# installed together with flashmla (`pip install --no-build-isolation -e .`); a Hopper GPU runs our
# CUDA kernel, a CPU the reference. Without vLLM the notebook still shows the plugin declaration
# and explains the call sequence; the vLLM steps say why they were skipped. Time: < 1 min.
# Memory: < 4 GiB.

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
        from flashmla.vllm_backend import testing as vllm_testing

        vllm_testing.prepare_cpu_environment()  # a CPU machine: tell vLLM which platform it is on
        from flashmla import vllm_backend

        first = vllm_backend.register()
        again = vllm_backend.register()  # vLLM calls it in every process, maybe more than once: idempotent
        print("register():", first)
        assert not first.get("problem"), first["problem"]
        assert again["registered"] == first["registered"]
        from vllm.v1.attention.backends.registry import AttentionBackendEnum

        backend_cls = AttentionBackendEnum.CUSTOM.get_class()
        builder_cls = backend_cls.get_builder_cls()
        print("CUSTOM ->", AttentionBackendEnum.CUSTOM.get_path())
        print("  name:", backend_cls.get_name(), "| kernel block sizes:", backend_cls.get_supported_kernel_block_sizes(),
              "| head sizes:", backend_cls.get_supported_head_sizes())
        print("  builder:", builder_cls.__name__, "| CUDA graphs:", builder_cls._cudagraph_support.name,
              "| impl:", backend_cls.get_impl_cls().__name__)
        assert AttentionBackendEnum.CUSTOM.get_path() == vllm_backend.CUSTOM_CLASS_PATH
        assert backend_cls.get_supported_kernel_block_sizes() == [64]
        step.result(vllm=first.get("vllm"), registered=first["registered"],
                    cudagraph_support=builder_cls._cudagraph_support.name)

# %% [markdown]
# ## 3. One decode step through the backend's classes
#
# Without loading a model, we do what vLLM's model runner does for one layer of one decode step,
# with vLLM's own config and metadata objects (`flashmla.vllm_backend.testing` builds them as the
# runner would): the builder turns vLLM's common metadata into ours, and `forward_mqa` gets the
# absorbed query as the tuple `(ql_nope, q_pe)` and the cache as `[num_blocks, 64, 576]`. The batch
# has two padded rows, as a CUDA graph captured for a larger batch would: `seq_len = 0`, block-table
# row 0. The data come from a random DeepSeek-V2-Lite attention layer (notebook 01), so the check
# is against the textbook float64 MLA output, projected with `W_UV` as vLLM does.

# %%
with steps.step("decode_step_through_vllm_classes", needs=[have_vllm, have_plugin]) as step:
    if step.runs:
        from flashmla import mla_math

        cfg = mla_math.DEEPSEEK_V2_LITE
        seq_lens, s_q, padded = ([37, 130, 64], 1, 2) if SMOKE else ([37, 130, 64, 4096, 1000, 2049], 1, 2)
        batch = mla_math.decode_batch(cfg, seq_lens=seq_lens, s_q=s_q, seed=SEED)
        k_cache, table, lens = mla_math.page_cache_rows([r[:, None] for r in batch.cache_rows],
                                                        device=device, seed=SEED, spare_blocks=3)
        k_cache = k_cache.squeeze(2)  # vLLM's MLA cache layout: [num_blocks, 64, 576]
        table = torch.cat([table, torch.zeros(padded, table.shape[1], dtype=table.dtype, device=device)])
        config = vllm_testing.make_vllm_config(full_cuda_graphs=device.type == "cuda")
        builder = vllm_testing.make_builder(config, device=device)
        impl = vllm_testing.make_impl(config, scale=cfg.softmax_scale())
        print("kernel:", flashmla.resolve_backend(None if impl.kernel == "auto" else impl.kernel, device))

        # (1) once per step, on the host: vLLM's common metadata -> our decode metadata
        common = vllm_testing.common_decode_metadata(seq_lens, s_q, table, num_padded=padded, device=device)
        metadata = builder.build(0, common)
        decode = metadata.decode
        print("decode metadata: seq_lens", decode.seq_lens.tolist(), "| tile schedule",
              tuple(decode.tile_scheduler_metadata.shape), "| num_splits", decode.num_splits.tolist())

        # (2) per layer: the absorbed query as vLLM hands it over, then forward_mqa
        q = torch.cat(batch.queries + [torch.zeros(padded * s_q, cfg.num_heads, 576, dtype=torch.float64)])
        q = q.to(device=device, dtype=torch.bfloat16)
        latent_out, lse = impl.forward_mqa((q[..., :512].contiguous(), q[..., 512:].contiguous()), k_cache,
                                           metadata, layer=None)
        print("forward_mqa ->", tuple(latent_out.shape), tuple(lse.shape))

        # (3) vLLM applies W_UV to the latent output; compare with the textbook computation
        errors = []
        for i in range(len(seq_lens)):
            got = mla_math.absorbed_output(batch.weights, latent_out[i * s_q:(i + 1) * s_q].double().cpu())
            want = batch.expected[i]
            errors.append(((got - want).norm() / want.norm()).item())
        print("relative error per request:", [f"{e:.1e}" for e in errors])
        assert max(errors) < 2e-2, errors
        assert (latent_out[len(seq_lens) * s_q:] == 0).all() and torch.isinf(lse[len(seq_lens):]).all(), \
            "padded graph rows must give out = 0, lse = +inf"
        assert not torch.isnan(latent_out).any(), "NaN from unused cache rows leaked"
        step.result(kernel=flashmla.resolve_backend(None if impl.kernel == "auto" else impl.kernel, device),
                    max_rel_error=max(errors), requests=len(seq_lens), padded_rows=padded)

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
# ## What to expect on an H100 (measured)
#
# The recorded end-to-end run (`benchmarks/results/vllm_e2e_h100_2026-11-23_run2/README.md`:
# NVIDIA H100 80GB HBM3, driver 580.159.04, vLLM 0.26.0, torch 2.11.0+cu130, Triton 3.6.0,
# 2026-11-23) used this plugin: vLLM found it, served DeepSeek-V2-Lite (dummy weights, block size
# 64, CUDA graphs `FULL_DECODE_ONLY`) on `CUSTOM (flashmla kernel=cuda)`, and with the live check
# on, 1377 `forward_mqa` calls inside the served model matched the float32 reference (max `out`
# error 3.8e-3, max `lse` error 9.5e-7). The GPU test of the backend under CUDA-graph capture
# (padded rows, as in section 3) passed in that run.
#
# The steps above print what the backend declares, the same on every machine:
# `CUSTOM -> flashmla.vllm_backend.backend.FlashMLATutorialBackend`, kernel block sizes `[64]`,
# CUDA graphs `UNIFORM_BATCH`; on a Hopper GPU with `flashmla._C` built, `kernel: cuda`. The decode
# step's error against the float64 textbook MLA must stay below 2e-2 (bf16 inputs); padded rows
# give out = 0, lse = +inf. Without vLLM only the plugin declaration runs.

# %%
steps.finish();
