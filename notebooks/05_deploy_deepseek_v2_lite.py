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
# flashmla installed (`pip install --no-build-isolation -e .`), and for real weights ModelScope with
# ~32 GB of disk (`MODELSCOPE_CACHE`, see `docs/pai-dsw.md`) or a local copy (`MODEL_DIR`). Time:
# download 5–20 min once; then ~1–2 min per backend (engine start, CUDA-graph capture, the timed
# runs). Without vLLM or a GPU, or in SMOKE mode, the serving steps are skipped and say why; the
# memory arithmetic runs anywhere. The same steps from a shell:
# `python -m flashmla.deploy chat --backend ours` and `python -m flashmla.deploy compare [--offline]`
# (or `scripts/deploy.py`).

# %% tags=["parameters"]
SMOKE: bool = False  # True: CPU allowed; only the arithmetic runs (serving needs vLLM and a GPU)
DEVICE: str = "auto"  # "auto" (the GPU if torch sees one), "cuda", or "cpu" (cpu only with SMOKE)
OUTPUT_DIR: str = "../out/notebooks"  # step records and plots are written here
SEED: int = 0  # sampling seed
MODEL_ID: str = "deepseek-ai/DeepSeek-V2-Lite-Chat"  # ModelScope model id
MODEL_DIR: str = ""  # a local copy of the model; empty means ModelScope's cache ($MODELSCOPE_CACHE)
WEIGHTS: str = "auto"  # "auto" (real when ModelScope or MODEL_DIR has them, else dummy), "real", or "dummy"
BACKENDS: list = ["ours", "triton_mla", "flashmla"]  # backends to compare (flashmla.deploy labels; ours is CUSTOM)
MAX_NEW_TOKENS: int = 0  # tokens generated per prompt; 0 means flashmla.deploy's default (65 dummy, 256 real)
BATCH_SIZE: int = 16  # chat prompts in the batch scenario with real weights (dummy: 64 prompts of 3072 tokens)
REPETITIONS: int = 3  # timed repetitions per scenario (medians are reported)
VERIFY_STEPS: int = 8  # decode steps of our backend checked against the reference inside vLLM; 0 skips
TIMEOUT_S: int = 600  # per backend process

# %%
import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import Image, Markdown, display

from flashmla import env, mla_math

device = env.resolve_device(DEVICE, SMOKE)
env.use_triton_interpreter(device)
steps = env.StepLog("05_deploy_deepseek_v2_lite", smoke=SMOKE, output_dir=OUTPUT_DIR,
                    parameters=dict(SMOKE=SMOKE, DEVICE=DEVICE, SEED=SEED, MODEL_ID=MODEL_ID, MODEL_DIR=MODEL_DIR,
                                    WEIGHTS=WEIGHTS, BACKENDS=BACKENDS, MAX_NEW_TOKENS=MAX_NEW_TOKENS,
                                    BATCH_SIZE=BATCH_SIZE, REPETITIONS=REPETITIONS, VERIFY_STEPS=VERIFY_STEPS))
if WEIGHTS not in ("auto", "real", "dummy"):
    raise ValueError(f"WEIGHTS must be 'auto', 'real' or 'dummy', got {WEIGHTS!r}")
deploy_dir = Path(OUTPUT_DIR) / "05_deploy"
deploy_dir.mkdir(parents=True, exist_ok=True)
have_vllm = env.has_package("vllm", ">=0.26", import_name="vllm")
serving_needs = [(not SMOKE, "SMOKE mode: serving a 16-billion-parameter model is not a smoke test"),
                 have_vllm, env.has_module("flashmla.deploy"), env.has_gpu_memory(40)]
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
        budgets = {kind: mla_math.serving_budget(gpu_gib, kind=kind, utilization=0.85,
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
        ax.set_title(f"DeepSeek-V2-Lite on {label.split(' (')[0]}, gpu_memory_utilization 0.85")
        steps.savefig(fig, "kv_budget")
        plt.show()
        assert budgets["mla"].max_tokens > 7 * budgets["mha"].max_tokens
        step.result(gpu_gib=round(gpu_gib, 1), kv_cache_gib=round(budgets["mla"].kv_cache_gib, 1),
                    mla_tokens=budgets["mla"].max_tokens, mha_tokens=budgets["mha"].max_tokens)

# %% [markdown]
# ## 3. Real weights or dummy weights
#
# With `WEIGHTS="auto"`: a local copy (`MODEL_DIR`) is used when given; otherwise the model is
# fetched through ModelScope when `modelscope` is installed and its server can be reached (a
# finished download is found in the cache and not repeated; an interrupted one resumes);
# otherwise the run uses **dummy weights** — the same architecture (the shipped `config.json` of
# V2-Lite, `load_format="dummy"`) with random weights and token-id prompts — and says so here and
# in the step record. Dummy weights give real timings but no meaningful text.

# %%
source, model_path = "none", None  # set by this step: "dummy", "local" or "modelscope"
with steps.step("choose_weights", needs=[(not SMOKE, "SMOKE mode: no model is loaded")]) as step:
    if step.runs:
        reachable = env.can_reach("www.modelscope.cn") if env.has_package("modelscope")[0] else \
            (False, env.has_package("modelscope")[1])
        if WEIGHTS == "dummy":
            source, why = "dummy", "WEIGHTS='dummy'"
        elif MODEL_DIR:
            source, why = "local", f"MODEL_DIR={MODEL_DIR}"
        elif reachable[0]:
            source, why = "modelscope", "ModelScope is reachable"
        elif WEIGHTS == "real":
            raise env.RequirementError(f"WEIGHTS='real' but no MODEL_DIR and ModelScope is unusable: {reachable[1]}")
        else:
            source, why = "dummy", f"no MODEL_DIR and ModelScope is unusable ({reachable[1]})"
        print(f"weights: {source.upper()} ({why})")
        if source == "dummy":
            print("DUMMY WEIGHTS: the real DeepSeek-V2-Lite architecture with random weights; timings are real, "
                  "generated tokens are not meaningful text")
        step.result(weights=source, reason=why)

# %% [markdown]
# ## 4. Download (once)
#
# About 31 GB into `$MODELSCOPE_CACHE` (see `docs/pai-dsw.md` for a location that survives instance
# stops). `flashmla.deploy.download_model` uses ModelScope's resumable `snapshot_download`.

# %%
with steps.step("download", needs=[(source == "modelscope", f"weights come from {source!r}, nothing to download")]) as step:
    if step.runs:
        from flashmla import deploy

        model_path = deploy.download_model(MODEL_ID)
        print("model at", model_path)
        step.result(model_path=str(model_path))
model_args = (["--offline"] if source == "dummy" else ["--model", MODEL_DIR] if source == "local"
              else ["--model", str(model_path or MODEL_ID)])

# %% [markdown]
# ## 5. Chat on our backend
#
# vLLM keeps the GPU memory of an engine for as long as its process lives, so each engine runs in
# a fresh process: `python -m flashmla.deploy chat --backend ours …`, the same command you would
# type in a terminal. Its log shows `Using CUSTOM backend` and the kernel our backend picked.

# %%
with steps.step("chat", needs=serving_needs) as step:
    if step.runs:
        cmd = [sys.executable, "-m", "flashmla.deploy", "chat", "--backend", "ours", *model_args,
               "--max-tokens", str(MAX_NEW_TOKENS or 256)]
        rc, tail = env.run_streaming(cmd, log_path=deploy_dir / "chat.log", timeout=TIMEOUT_S, echo=False)
        print(tail)
        assert rc == 0, f"chat failed (exit {rc}); log: {deploy_dir / 'chat.log'}"
        step.result(backend="ours", weights=source)

# %% [markdown]
# ## 6. Compare backends
#
# `flashmla.deploy`'s comparison (the same as `python -m flashmla.deploy compare …`): first our
# backend runs a few decode steps with the **live check** switched on (`FLASHMLA_VLLM_VERIFY`: each
# `forward_mqa` output is compared with the reference inside vLLM; any mismatch fails the run).
# Then each backend — ours (`CUSTOM`), vLLM's `TRITON_MLA` and vLLM's `FLASHMLA` — runs in its own
# process on the same prompts, with block size 64 and CUDA graphs: one request, then a batch;
# medians of the repetitions after a warm-up. With dummy weights the prompts are those of
# `perf-targets.md` (1 × 512 tokens and 64 × 3072 tokens). Decode time per step is measured on
# decode-only engine steps: each repetition generates 1 + L and 1 + L + N tokens per prompt (L
# covers the chunked prefill, N = 128 decode steps) and divides the difference of the two decode
# windows by N, so prefill never enters the figure (`flashmla.deploy.MEASUREMENT_METHOD`).

# %%
with steps.step("compare_backends", needs=serving_needs) as step:
    if step.runs:
        from flashmla import deploy

        argv = ["compare", "--backends", *BACKENDS, "--out", str(deploy_dir), "--repetitions", str(REPETITIONS),
                "--timeout", str(TIMEOUT_S), "--verify-steps", str(VERIFY_STEPS), "--batch", str(BATCH_SIZE),
                *model_args] + (["--max-tokens", str(MAX_NEW_TOKENS)] if MAX_NEW_TOKENS else [])
        summary_file = deploy_dir / "deploy_compare.json"
        summary_file.unlink(missing_ok=True)  # never read an earlier run's numbers
        rc = deploy.main(argv)
        assert summary_file.exists(), f"flashmla.deploy compare exited {rc} before running a backend (see above)"
        result = json.loads(summary_file.read_text())
        rows = result["rows"]
        display(Markdown((deploy_dir / "deploy_compare.md").read_text()))
        if (deploy_dir / "deploy_compare.png").exists():
            display(Image(filename=str(steps.add_image(deploy_dir / "deploy_compare.png", "backends"))))
        checked = [r for r in result["records"] if r["label"] == "ours_verify"]
        if VERIFY_STEPS:
            assert checked and checked[0].get("verification", {}).get("passed"), \
                f"our backend did not pass the live check against the reference: {checked}"
        assert rc == 0, f"flashmla.deploy compare exited {rc}; failures: " + \
            str({r["label"]: r.get("error") for r in result["records"] if r.get("error")})
        assert any(r["backend"] == "ours" for r in rows), "our backend produced no result"
        step.result(weights=source, decode_ms_per_step={f"{r['backend']}/{r['scenario']}": r["decode_ms_per_step"]
                                                        for r in rows},
                    output_tok_s={f"{r['backend']}/{r['scenario']}": r["output_tok_s"] for r in rows},
                    verified=bool(checked and checked[0].get("verification", {}).get("passed")))

# %% [markdown]
# ## What to expect on an H100 (measured)
#
# **Measured** with the same `flashmla.deploy compare` this notebook runs, by `scripts/gpu_vllm.sh`
# (`benchmarks/results/vllm_e2e_h100_2026-11-23_run2/`, `README.md` and `vllm_e2e.csv`): NVIDIA
# H100 80GB HBM3, driver 580.159.04, vLLM 0.26.0, torch 2.11.0+cu130, Triton 3.6.0, 2026-11-23;
# DeepSeek-V2-Lite with dummy weights, block size 64, CUDA graphs `FULL_DECODE_ONLY`, one process
# per backend, medians of 3 repetitions after a warm-up. The live check passed first: 1377
# `forward_mqa` calls, max `out` error 3.8e-3, max `lse` error 9.5e-7. Decode ms/step is a
# decode-only engine step with the whole batch (`flashmla.deploy.MEASUREMENT_METHOD`).
#
# | backend | 1 × 512: decode ms / step | tok/s | TTFT s | 64 × 3072: decode ms / step | tok/s | TTFT s |
# |---|---:|---:|---:|---:|---:|---:|
# | ours (`CUSTOM`, kernel cuda) | 4.699 | 186.7 | 0.094 | **8.254** | 2552 | 1.43 |
# | `TRITON_MLA` | 4.656 | 191.4 | 0.083 | 9.842 | 2457 | 1.42 |
# | `FLASHMLA` | 4.952 | 176.9 | 0.083 | 8.798 | 2543 | 1.45 |
#
# At 64 × 3072, where attention reads 64 × 3072 cached tokens per layer and step, ours is 6%
# faster than vLLM's bundled `FLASHMLA` and 16% faster than `TRITON_MLA`. At batch 1 the three
# are within 6%: a 1 × 512 step is dominated by the rest of the model, not attention.
#
# **Anchors** (`perf-targets.md`, another H100, 2026-11-22, same setup), not this run: decode ms per
# step at 64 × 3072 — `TRITON_MLA` 13.0, `FLASHMLA` 8.51; at 1 × 512 — `TRITON_MLA` 4.68,
# `FLASHMLA` 4.93. Our target, at most `FLASHMLA`'s in both, is met in the same-run comparison.
#
# Section 2's KV budget is arithmetic, not a measurement: at 0.85 utilisation of an H100 80GB,
# ≈ 36 GiB ≈ 1.2 M tokens of MLA cache (≈ 0.18 M with MHA).

# %%
steps.finish();
