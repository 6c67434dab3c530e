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
# # 00 · Environment: is this machine ready for the series?
#
# **What you will learn**
# - which pieces the series uses (torch + CUDA, Triton, the sm90a CUDA kernel `flashmla._C`,
#   vLLM, FlashInfer, ModelScope) and how to see at a glance which of them this machine has;
# - which decode backend `flashmla` picks here (`auto` = our CUDA kernel on Hopper when built,
#   else Triton on any CUDA GPU, else the torch reference), and that each one that can run agrees
#   with the float32 reference on a small paged-cache problem;
# - whether there is room for DeepSeek-V2-Lite-Chat's 31 GB of weights where ModelScope will put them.
#
# **What it needs**: any machine. With `SMOKE=False` it requires a CUDA GPU (an H100/H800/H200/H20
# for the CUDA kernel) and checks it; with `SMOKE=True` it runs on a CPU.
# Time: under a minute (GPU or CPU). Memory: < 1 GiB.
#
# Every step below prints `[RAN]`, `[SKIPPED] <reason>` or `[FAILED]`; the record goes to
# `OUTPUT_DIR/00_environment.steps.json` and `scripts/run_notebooks.py` gathers them.

# %% tags=["parameters"]
SMOKE: bool = False  # True: tiny shapes, CPU allowed (torch reference + Triton interpreter); what CI runs
DEVICE: str = "auto"  # "auto" (the GPU if torch sees one), "cuda", or "cpu" (cpu only with SMOKE)
OUTPUT_DIR: str = "../out/notebooks"  # step records and plots are written here
SEED: int = 0  # random inputs of the backend check
MODEL_CACHE_DIR: str = ""  # where the model will live; empty means $MODELSCOPE_CACHE, else ~/.cache/modelscope
MODEL_SIZE_GIB: float = 31.0  # DeepSeek-V2-Lite-Chat in bf16, plus a little room

# %%
import os

import torch

import flashmla
from flashmla import env, testing

device = env.resolve_device(DEVICE, SMOKE)
triton_interpreted = env.use_triton_interpreter(device)  # CPU: Triton kernels run in its interpreter
steps = env.StepLog("00_environment", smoke=SMOKE, output_dir=OUTPUT_DIR,
                    parameters=dict(SMOKE=SMOKE, DEVICE=DEVICE, SEED=SEED, MODEL_CACHE_DIR=MODEL_CACHE_DIR))
print(f"device: {device}; SMOKE={SMOKE}; Triton interpreter: {triton_interpreted}")

# %% [markdown]
# ## 1. The environment report
#
# `flashmla.env.report()` reads versions from package metadata (it does not import vLLM or
# FlashInfer, so a broken optional package cannot break the report) and asks each backend
# whether it can run on `device`. Keep this table when you ask for help: it answers the first
# ten questions.

# %%
with steps.step("environment_report") as step:
    if step.runs:
        report = env.report(device)
        print(report)
        step.result(torch=report.torch, torch_cuda=report.torch_cuda,
                    gpu=report.gpu.name if report.gpu else None, driver=report.driver,
                    triton=report.packages.get("triton"), vllm=report.packages.get("vllm"),
                    flashinfer=report.packages.get("flashinfer"),
                    cuda_extension_built=report.cuda_extension[0],
                    backends={k: ok for k, (ok, _) in report.backends.items()})

# %% [markdown]
# ## 2. Hard requirements
#
# Outside SMOKE mode the series needs a CUDA GPU; `require` raises one error that lists every
# missing piece with the command that fixes it. It never falls back to SMOKE on its own: a GPU
# machine whose torch is a CPU build (it happens when `pip install vllm` swaps torch) fails here
# instead of quietly running tiny shapes.

# %%
with steps.step("requirements") as step:
    if step.runs:
        env.require(smoke=SMOKE, gpu=True, packages={"torch": ">=2.4"})
        print("requirements met" + (" (SMOKE: hardware not required)" if SMOKE else ""))

# %% [markdown]
# ## 3. Is it a Hopper GPU?
#
# Our CUDA kernel uses Hopper-only instructions (wgmma, TMA), so it needs compute capability 9.0
# (H100, H800, H200, H20). Other GPUs from sm_80 on use the Triton kernel.

# %%
with steps.step("hopper_gpu", needs=[env.has_hopper_gpu()]) as step:
    if step.runs:
        props = torch.cuda.get_device_properties(device)
        print(f"{props.name}: {props.multi_processor_count} SMs, {props.total_memory / 2**30:.1f} GiB, "
              f"sm_{props.major}{props.minor}")
        step.result(name=props.name, sms=props.multi_processor_count,
                    memory_gib=round(props.total_memory / 2**30, 1))

# %% [markdown]
# ## 4. Every available backend agrees with the reference
#
# A small paged cache built to catch bugs (`flashmla.testing.make_decode_inputs`): random values,
# pages in random order, NaN in the unused tail of each last page and in unused pages, garbage
# page ids past each sequence's end, one empty request. Each backend that can run here must
# match the float32 reference: bf16 outputs within 2e-2, the log-sum-exp within 1e-3 relative,
# no NaN leaking out.

# %%
with steps.step("backends_match_reference") as step:
    if step.runs:
        generator = torch.Generator().manual_seed(SEED)
        seqlens = [37, 130, 0] if SMOKE else [37, 130, 0, 1000, 4096]
        inputs = testing.make_decode_inputs(seqlens, s_q=2, h_q=16, h_kv=1, device=device, generator=generator)
        metadata, num_splits = flashmla.get_mla_metadata(inputs.cache_seqlens, 2 * 16, 1)
        ref_out, ref_lse = flashmla.flash_mla_with_kvcache(
            inputs.q, inputs.k_cache, inputs.block_table, inputs.cache_seqlens, 512, metadata, num_splits,
            causal=True, backend="reference")
        errors = {}
        for name, (ok, why) in flashmla.backend_status(device).items():
            if not ok:
                print(f"backend {name}: not available here ({why})")
                continue
            out, lse = flashmla.flash_mla_with_kvcache(
                inputs.q, inputs.k_cache, inputs.block_table, inputs.cache_seqlens, 512, metadata, num_splits,
                causal=True, backend=name)
            stats = testing.compare_outputs(out, lse, ref_out, ref_lse)
            print(f"backend {name}: {stats}")
            assert not stats["nan_in_out"], f"{name}: NaN leaked into the output"
            assert stats["max_abs"] < 2e-2, f"{name}: max abs error {stats['max_abs']:.3g} vs the reference"
            assert stats["lse_max_rel"] < 1e-3, f"{name}: lse relative error {stats['lse_max_rel']:.3g}"
            errors[name] = stats["max_abs"]
        print("auto picks:", flashmla.resolve_backend("auto", device))
        step.result(max_abs_error=errors, auto=flashmla.resolve_backend("auto", device))

# %% [markdown]
# ## 5. Room for the model
#
# DeepSeek-V2-Lite-Chat is about 31 GB in bf16. ModelScope stores it under `$MODELSCOPE_CACHE`
# (default `~/.cache/modelscope`). On PAI-DSW point that variable at a mounted NAS/OSS/CPFS path
# so the download survives instance stops (see `docs/pai-dsw.md`). This step only reports; it
# does not download anything.

# %%
with steps.step("model_storage") as step:
    if step.runs:
        cache_dir = MODEL_CACHE_DIR or os.environ.get("MODELSCOPE_CACHE") or os.path.expanduser("~/.cache/modelscope")
        free = env.disk_free_gib(cache_dir)
        enough = free >= MODEL_SIZE_GIB
        print(f"model cache: {cache_dir}; free: {free:.1f} GiB; "
              + ("enough" if enough else f"NOT enough for {MODEL_SIZE_GIB:.0f} GiB: notebook 05 will use dummy weights"))
        step.result(cache_dir=cache_dir, free_gib=round(free, 1), enough_for_model=enough)

# %% [markdown]
# ## What to expect on an H100
#
# On the project's H100 80GB HBM3 host (driver 580.x, Python 3.12, torch 2.11.0+cu130,
# Triton 3.6.0, nvcc 13.0): the report shows `NVIDIA H100 80GB HBM3, sm_90, 132 SMs, 79.2 GiB`;
# backends `cuda` (once `flashmla._C` is built), `triton` and `reference` are available; `auto`
# picks `cuda`; every backend's max abs error is around 1e-3 to 4e-3 (bf16 rounding of outputs
# of magnitude ~0.1–1). On a CPU in SMOKE mode, `reference` and `triton` (interpreter) run and
# `cuda` is reported unavailable with its reason.

# %%
steps.finish();
