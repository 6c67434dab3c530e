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
# # 02 · Build the kernel, read its schedule, prove it correct
#
# **What you will learn**
# - how the Hopper kernel `flashmla._C` is built (`csrc/` has the CUDA code, which knows nothing
#   of torch; a thin binding does checks and dispatch; `setup.py` compiles it for `sm_90a`);
# - how one decode step's work is cut into equal pieces for the GPU's SMs: the *tile schedule*
#   from `flashmla.get_mla_metadata`, the split-KV chunks and their combine by log-sum-exp;
# - how to prove a kernel correct against the float32 reference on inputs built to catch bugs
#   (NaN in unused cache rows, garbage page ids past each sequence, empty requests, causal s_q=2);
# - how the same schedule is written in Triton's Gluon for Hopper, and compiled without a GPU.
#
# **What it needs**: the build and the CUDA checks need an sm_90 GPU (H100/H800/H200/H20), a CUDA
# build of torch and nvcc (tested with 13.0); the Triton kernel runs on any CUDA GPU from sm_80; in
# SMOKE mode on a CPU the Triton kernel runs in Triton's interpreter, and the Hopper Triton kernel
# is compiled for sm_90a without a GPU.
# Time: build 3–10 min (once), checks < 1 min on a GPU; SMOKE on a CPU about 1 min. Memory: < 4 GiB.

# %% tags=["parameters"]
SMOKE: bool = False  # True: tiny shapes, CPU allowed (reference + Triton interpreter); what CI runs
DEVICE: str = "auto"  # "auto" (the GPU if torch sees one), "cuda", or "cpu" (cpu only with SMOKE)
OUTPUT_DIR: str = "../out/notebooks"  # step records, plots and the build log are written here
SEED: int = 0  # random inputs
BUILD: str = "auto"  # "auto": build flashmla._C if missing (not in SMOKE); "always"; "never"
NUM_SMS: int = 0  # SMs to plan the schedule for; 0 means this GPU (132 on an H100 or when there is no GPU)

# %%
import matplotlib.pyplot as plt
import torch

import flashmla
from flashmla import env, scheduler, testing

device = env.resolve_device(DEVICE, SMOKE)
env.use_triton_interpreter(device)
steps = env.StepLog("02_build_the_kernel", smoke=SMOKE, output_dir=OUTPUT_DIR,
                    parameters=dict(SMOKE=SMOKE, DEVICE=DEVICE, SEED=SEED, BUILD=BUILD, NUM_SMS=NUM_SMS))
if BUILD not in ("auto", "always", "never"):
    raise ValueError(f"BUILD must be 'auto', 'always' or 'never', got {BUILD!r}")

# %% [markdown]
# ## 1. Build `flashmla._C`
#
# The equivalent shell command, from the repository root, is
# `pip install -e . --no-build-isolation` (or `python setup.py build_ext --inplace`, which is what
# this step runs). Build against the torch you will run with, and rebuild whenever torch changes
# (`pip install vllm` may change it). `setup.py` builds only where nvcc, a CUDA torch and an sm_90
# GPU are present (`FLASHMLA_BUILD_CUDA=1` forces it). The whole compiler log is kept in
# `OUTPUT_DIR/02_build.log`; `-Xptxas -v` prints each kernel's registers and any spills there.
#
# With `BUILD="auto"` an existing build is reused; in SMOKE mode nothing is compiled (CI checks
# that `csrc/` compiles for sm_90a in its own test).

# %%
built, where = env.cuda_extension_status()
build_needs = [env.has_cuda_gpu(), env.has_executable("nvcc", "install the CUDA toolkit 12.3+")]
if BUILD == "never":
    steps.skip("build_extension", "BUILD='never'" + (f"; using the existing build {where}" if built else ""))
elif built and BUILD == "auto":
    steps.skip("build_extension", f"already built: {where} (BUILD='always' rebuilds)")
elif SMOKE:
    steps.skip("build_extension", "SMOKE mode compiles nothing (a full sm_90a build takes minutes)")
else:
    with steps.step("build_extension", needs=build_needs) as step:
        if step.runs:
            ok, log_tail = env.build_extension(f"{OUTPUT_DIR}/02_build.log")
            print(log_tail)
            assert ok, "the build failed; the compiler log is in OUTPUT_DIR/02_build.log"
            step.result(extension=env.cuda_extension_status()[1])
print(env.cuda_extension_status())

# %% [markdown]
# ## 2. The tile schedule
#
# Decode has one (or two) query tokens per request but thousands of cached tokens. One thread
# block per request would leave most SMs idle for small batches or uneven lengths. Instead the
# batch's 64-token blocks are laid end to end on a line — each request also pays a fixed cost of
# 5 blocks for loading Q, filling the pipeline and writing the result — and the line is cut into
# `num_sm_parts` equal parts, one thread block each (`num_sm_parts = SMs / h_kv / row tiles`, so
# the grid is one wave). A request cut by a part boundary is computed in several *chunks*; each
# chunk writes a float32 partial output and its log-sum-exp, and a combine kernel merges them:
#
# $$o = \sum_c e^{\text{lse}_c - \text{lse}}\, o_c, \qquad \text{lse} = \log \sum_c e^{\text{lse}_c}.$$
#
# When every request has the same length, cutting into equal parts would split nearly every
# request by a block or two; the scheduler then gives each part whole requests instead, if that
# costs at most 12 blocks more than the equal share (no request split, nothing to merge: 8% faster
# at 128 x 4096 tokens on an H100, `docs/kernel-design.md` 5.2).
#
# At one or two requests most SMs would get no part at all. There, when the parts stay short, the
# scheduler cuts the line into half the parts and marks the schedule (column 7 = 1); the CUDA
# kernel then gives each part two thread blocks, each computing the output for half of the 512
# columns, so each stores half the float32 partials (`docs/kernel-design.md` 7.16).
#
# The schedule is computed once per decode step and shared by all layers. It is made of
# cumulative sums and `searchsorted`, so it runs on the GPU without a host sync (CUDA-graph safe).
# `docs/internals.md` fixes its exact format: int32 `[num_sm_parts, 8]` rows
# `(begin_req, begin_block, end_req, end_block, begin_chunk, g0, g1, column_split)` and
# `num_splits[b+1]`.

# %%
with steps.step("schedule_walkthrough") as step:
    if step.runs:
        lengths = [4096, 300, 8192, 64, 0, 1500, 37, 2049] if not SMOKE else [300, 64, 0, 150, 37]
        cache_seqlens = torch.tensor(lengths, dtype=torch.int32, device=device)
        num_sms = NUM_SMS or scheduler.device_num_sms(device)
        if SMOKE:
            num_sms = NUM_SMS or 8  # a few parts keep the picture readable
        h_q, s_q, h_kv = 16, 1, 1
        metadata, num_splits = flashmla.get_mla_metadata(cache_seqlens, s_q * h_q // h_kv, h_kv, num_sms=num_sms)
        print(scheduler.describe(metadata, num_splits))
        md = metadata.cpu()
        blocks = [(n + 63) // 64 for n in lengths]
        total = sum(blocks)
        # Hard check: the parts tile the block line exactly once, in order, with no gap or overlap.
        g0, g1 = md[:, scheduler.COL_G0].tolist(), md[:, scheduler.COL_G1].tolist()
        assert g0[0] == 0 and g1[-1] == total and all(g1[p] == g0[p + 1] for p in range(len(g0) - 1)), (g0, g1)
        splits = num_splits.cpu().tolist()
        chunks = [b - a for a, b in zip(splits[:-1], splits[1:])]
        assert all((c == 0) == (n == 0) for c, n in zip(chunks, lengths)), "an empty request got chunks, or vice versa"

        # Picture: one row per part, coloured by the request whose blocks it computes.
        starts = [sum(blocks[:i]) for i in range(len(blocks))]
        fig, ax = plt.subplots(figsize=(8, min(0.25 * len(g0) + 1.5, 9)))
        colors = plt.cm.tab10.colors
        labelled = set()
        for p, (a, b) in enumerate(zip(g0, g1)):
            for i, (s, n) in enumerate(zip(starts, blocks)):
                lo, hi = max(a, s), min(b, s + n)
                if hi > lo:
                    ax.barh(p, hi - lo, left=lo, color=colors[i % 10], edgecolor="black", linewidth=0.3,
                            label=None if i in labelled else f"request {i}: {lengths[i]} tokens")
                    labelled.add(i)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.set_xlabel("global 64-token block index (the batch laid end to end)")
        ax.set_ylabel("part (thread block)")
        ax.invert_yaxis()
        ax.set_title(f"tile schedule: {len(g0)} parts for {len(lengths)} requests, {total} blocks")
        steps.savefig(fig, "schedule")
        plt.show()
        step.result(num_sm_parts=len(g0), total_blocks=total, chunks_per_request=chunks)

# %% [markdown]
# On a GPU with the CUDA kernel built, `get_mla_metadata` runs the schedule as a small CUDA kernel;
# it must produce **bit-identical** tensors to the torch version in `flashmla/scheduler.py`.

# %%
with steps.step("gpu_scheduler_matches_reference", needs=[env.has_backend("cuda", device)]) as step:
    if step.runs:
        gen = torch.Generator().manual_seed(SEED)
        for b in (1, 7, 128):
            lens = torch.randint(0, 20000, (b,), generator=gen, dtype=torch.int32)
            for rows in (16, 32, 128, 256):
                gpu_md, gpu_ns = flashmla.get_mla_metadata(lens.to(device), rows, 1)
                ref_md, ref_ns = scheduler.compute_tile_scheduler_metadata(lens, rows, 1, scheduler.device_num_sms(device))
                assert torch.equal(gpu_md.cpu(), ref_md) and torch.equal(gpu_ns.cpu(), ref_ns), (b, rows)
        print("GPU scheduler == torch scheduler for 12 batches")
        step.result(cases=12)

# %% [markdown]
# ## 3. Correctness against the float32 reference
#
# Inputs follow the project's rules: values `randn/10` clamped to ±1 (never zeros, which hide
# unwritten outputs), pages in a random permutation, NaN in every unused cache row, garbage page
# ids (out of range, even negative) in block-table slots past each sequence's end, and empty
# requests. Pass criteria, per case: no NaN in the output; bf16 output within 2e-2 absolute of the
# reference (bf16 has 8 bits of mantissa; outputs are O(0.1–1)); log-sum-exp within 1e-3 relative;
# empty rows give out = 0 and lse = +inf.

# %%
if SMOKE:
    cases = [  # (seqlens, s_q, h_q, h_kv, causal): tiny, but every edge the contract names
        ([37, 130], 1, 16, 1, False),
        ([1, 64, 0, 65], 2, 16, 1, True),
        ([200, 5], 1, 64, 1, False),
    ]
else:
    cases = [
        ([37, 130, 0, 4096, 64, 65, 1, 8192], 1, 16, 1, False),
        ([37, 130, 0, 4096, 64, 65, 2, 8192], 2, 16, 1, True),
        ([1000] * 16, 1, 128, 1, False),
        (testing.flashmla_varied_lengths(64, 4096, 2, seed=SEED), 2, 128, 1, True),
        (testing.flashmla_varied_lengths(128, 8192, 1, seed=SEED), 1, 64, 1, False),
        ([5000, 17, 0, 333], 1, 32, 2, False),
    ]


def check_backend(name):
    """Run every case on backend `name` and compare with the reference; returns the error rows."""
    results = []
    for k, (lens, s_q, h_q, h_kv, causal) in enumerate(cases):
        inp = testing.make_decode_inputs(lens, s_q, h_q, h_kv, device=device,
                                         generator=torch.Generator().manual_seed(SEED + k))
        md, ns = flashmla.get_mla_metadata(inp.cache_seqlens, s_q * h_q // h_kv, h_kv)
        args = (inp.q, inp.k_cache, inp.block_table, inp.cache_seqlens, 512, md, ns)
        out, lse = flashmla.flash_mla_with_kvcache(*args, causal=causal, backend=name)
        ref_out, ref_lse = flashmla.flash_mla_with_kvcache(*args, causal=causal, backend="reference")
        stats = testing.compare_outputs(out, lse, ref_out, ref_lse)
        label = f"b={len(lens)} s_q={s_q} h_q={h_q} h_kv={h_kv} causal={causal} max_len={max(lens)}"
        print(f"{name:9s} {label:55s} max_abs={stats['max_abs']:.2e} rel_l2={stats['rel_l2']:.2e} "
              f"lse_rel={stats['lse_max_rel']:.2e}")
        assert not stats["nan_in_out"], f"{name}: NaN leaked into the output ({label})"
        assert stats["max_abs"] < 2e-2 and stats["lse_max_rel"] < 1e-3, f"{name}: too far from the reference ({label})"
        empty = inp.cache_seqlens.cpu() == 0
        if empty.any():
            assert (out[empty.to(out.device)] == 0).all() and torch.isinf(lse[empty.to(lse.device)]).all()
        results.append(stats)
    return results


# %%
with steps.step("triton_matches_reference", needs=[env.has_backend("triton", device)]) as step:
    if step.runs:
        from flashmla import triton_decode
        # on Hopper the Triton backend runs its Gluon kernel (section 4), elsewhere the portable one
        print("Triton kernel here:", {"gluon": "the Hopper kernel in Gluon (flashmla/triton_hopper.py)",
                                      "tl": "the portable tl.dot kernel (flashmla/triton_decode.py)"}[
                                          triton_decode.kernel_config(device, 64).kernel])
        stats = check_backend("triton")
        step.result(cases=len(stats), worst_max_abs=max(s["max_abs"] for s in stats),
                    worst_lse_rel=max(s["lse_max_rel"] for s in stats))

# %%
with steps.step("cuda_matches_reference", needs=[env.has_backend("cuda", device)]) as step:
    if step.runs:
        stats = check_backend("cuda")
        step.result(cases=len(stats), worst_max_abs=max(s["max_abs"] for s in stats),
                    worst_lse_rel=max(s["lse_max_rel"] for s in stats))

# %% [markdown]
# ## 4. The same schedule in Triton: the Hopper kernel in Gluon
#
# The Triton backend has two kernels. The portable one (`flashmla/triton_decode.py`) uses
# `tl.dot` and runs on every CUDA GPU from sm_80 (and on the CPU in Triton's interpreter). On
# Hopper the backend runs `flashmla/triton_hopper.py` instead, written in **Gluon**, the
# layout-explicit language inside Triton: it spells out what `tl.dot` hides (wgmma operands in
# shared memory, TMA copies, mbarriers, and warp specialisation with a register budget per
# partition), so it can split the work by warpgroup the way the CUDA kernel of section 2 does:
# a loader warp streams each 64-token page by TMA into two stages, warpgroup 0 computes the scores,
# the online softmax and the left half of P·V, warpgroup 1 the right half with P handed over
# through shared memory. On an H100 that is about twice as fast as the portable kernel on the
# compute-bound shapes (docs/triton-kernel.md has the numbers).
#
# Triton compiles it without a GPU: the step below builds it for `sm_90a` with Triton's compiler
# and the `ptxas` that Triton ships, and reports what the GPU would see: shared memory, the
# registers each partition gets (`setmaxnreg`: loader, warpgroup 1, warpgroup 0) and spills.

# %%
def gluon_importable():
    from flashmla import triton_hopper
    return triton_hopper.gluon is not None, triton_hopper._IMPORT_ERROR


with steps.step("gluon_kernel_compiles_for_sm90a",
                needs=[env.has_module("triton", "pip install the pinned triton"), gluon_importable()]) as step:
    if step.runs:
        from flashmla import triton_hopper
        res = triton_hopper.offline_resources("bf16")
        budgets = sorted({int(n) for _, n in res["setmaxnreg"]})
        print(f"shared memory {res['shared_bytes']} B of 232448; register budgets (setmaxnreg) {budgets}; "
              f"{res['n_spills']} spilled words; ptxas notes on serialised wgmmas: {res['warnings'] or 'none'}")
        assert res["shared_bytes"] <= 227 * 1024 and not res["warnings"]
        step.result(shared_bytes=res["shared_bytes"], register_budgets=budgets, spilled_words=res["n_spills"])

# %% [markdown]
# ## What to expect on an H100 (measured)
#
# This notebook ran in full on an H100 in the recorded run of the series
# (`benchmarks/results/notebooks_nvidia-h100-80gb-hbm3_2026-11-23/`, `02_build_the_kernel.steps.json`):
# the build took 61.6 s on 16 cores, the GPU scheduler matched on 12 cases, and both kernels
# matched the reference with worst max abs 9.8e-4 and worst lse relative error 6.5e-5. The other
# figures below come from the H100 runs named beside them. All on NVIDIA H100 80GB HBM3 (132 SMs,
# driver 580.159.04), torch 2.11.0+cu130, Triton 3.6.0, nvcc 13.0, 2026-11-23.
#
# - **Build** (`benchmarks/results/bench_h100_2026-11-23/cuda_build.log`): one `.so`,
#   `flashmla/_C.cpython-312-x86_64-linux-gnu.so`; the sm_90a decode kernels (bf16/fp16, one per
#   schedule in that build) use 245–254 registers per thread with 0 bytes of spills.
#   A later build adds the seesaw kernel for compute-bound batches (both warpgroups compute S;
#   `docs/kernel-design.md` section 7): 248 registers, 0 spills
#   (`benchmarks/results/cuda_h100_run8_seesaw_2026-11-23/final_build.log`). Since 2026-11-24 both
#   kernels start QK^T on each 8 KiB TMA box of a page as it lands instead of waiting for the whole
#   72 KiB page (one mbarrier per box; 1.9% faster over the 35 target rows, up to 9.6% on the
#   compute-bound ones): 250–254 registers, 0 spills
#   (`benchmarks/results/cuda_h100_run10_stream_2026-11-24/h_final_build.log`). The seesaw's
#   `+ahead` form (the next pair's S queued behind the PVs; section 7.10), which `auto` runs from
#   256 query rows per kv head, is built beside it, and both issue each refill one TMA box per lane:
#   250 and 240 registers, 0 spills
#   (`benchmarks/results/cuda_h100_session9_ahead_2026-11-24/build_lanes.log`). Since 2026-12-06
#   `auto`'s seesaw writes each request's output with TMA stores staged through shared memory and
#   loads its Q tile by TMA (section 7.13): 250 and 251 registers, 0 spills
#   (`benchmarks/results/tma_boundary_h100_2026-12-06/run3_build.log`). Since session 15 `auto`
#   runs batches of at most 2 requests on a serial kernel that can split each part's output
#   columns over two thread blocks when the GPU scheduler marks the metadata so (section 7.16):
#   254 registers, 0 spills (`benchmarks/results/bench_h100_2026-12-06_session15/build.log`). Since
#   session 16 each thread loads one row of the Q tile (one division by the heads per kv head instead
#   of 36), which shrinks the serial kernels' code from 108-122 KB to 64-79 KB, faster at small
#   batch where a thread block runs its code once (section 7.17): 234 and 240 registers, 0 spills
#   (`benchmarks/results/bench_h100_2026-12-06_session16/build.log`). Since session 19 the `+ahead`
#   seesaw holds two copies of its steady-state loop, one without any masking code for the steps
#   that never mask (`+nomask`, which `auto` adds; section 7.20): 247 registers, 0 spills
#   (`benchmarks/results/nomask_h100_2026-12-06/run4_build_regs.txt`). Since session 20 the combine
#   kernel of `auto`'s seesaw merges each split request as soon as all its chunks are stored, while
#   the main kernel's last thread blocks still run (`+overlapcombine`; section 7.22): the seesaw
#   kernels unchanged (247 and 248 registers), the combine 54 registers, 0 spills
#   (`benchmarks/results/pvearly_h100_2026-12-06/run3/build.log`). Since session 26 every mbarrier
#   wait passes a suspend-time hint (section 7.27), and since session 27 `auto`'s `+ahead` seesaw
#   loads the next request's Q tile during a request's last step and stages the output in that
#   request's last K stage (`+earlyq`; section 7.28): 248 and 251 registers, 0 spills
#   (`benchmarks/results/earlyq_h100_2026-12-07/run2/build_tree.log`). Since session 28 the online
#   softmax keeps a lazy running max (O is rescaled only when a block's max exceeds the running one
#   by more than 8 in log2 units; section 7.29): the seesaw kernels 247 and 255 registers, 0 spills
#   (`benchmarks/results/lazymax_h100_2026-12-07/run3.tar.xz`, `run3/build.log`). Since session 29
#   `auto`'s `+ahead` seesaw has warpgroup 0 queue the next S only once warpgroup 1 has issued the
#   PV that frees the next page (`+pvbfirst`, a runtime flag: the same build; section 7.30). Since
#   session 31 warpgroup 1 queues its two PVs back to back where the lazy max did not move, and the
#   next S starts on the half page freed first (`+chainpv+sbrightfirst`; section 7.32): 255 and 247
#   registers, 0 spills (`benchmarks/results/chainpv_h100_2026-12-07/run1.tar.xz`, `build_tree.log`).
# - **Schedule**: the card has 132 SMs, so the schedule for the 8 requests above has 132 parts, as
#   it has here without a GPU (`NUM_SMS = 0` falls back to 132).
# - **GPU scheduler**: bit-identical to the torch one on 32 cases, 1 to 264 SMs
#   (`docs/kernel-design.md`); this notebook checks 12.
# - **Correctness** (`benchmarks/results/bench_h100_2026-11-23/bench.csv`, 53 shapes, inputs made
#   by the same rules as above): our CUDA and Triton kernels matched the float32 reference with
#   relative L2 error 8.9e-5 … 2.1e-3, max abs error of `out` ≤ 1.95e-3 and of `lse` ≤ 1.9e-6, the
#   same as DeepSeek's FlashMLA on those inputs. Expect numbers of that size in the two checks
#   above; their limits (2e-2 absolute, 1e-3 relative on lse) leave about 10× headroom.
#   The Triton test suite passed on the same H100 (`benchmarks/results/triton_h100_run2_tests.log`,
#   238 tests).
#
# - **The Gluon kernel** (section 4; `benchmarks/results/bench_h100_2026-11-24_session7_gluon/`,
#   2026-11-24): 230,176 B of shared memory, register budgets 24 / 224 / 256, 36 spilled words
#   (scalars); on the H100 it passed the Triton GPU tests (the foundation grid, the benchmark
#   shapes, graph replay of a padded batch) and in `triton_matches_reference` above it is the
#   kernel that runs there.
#
# In SMOKE on a CPU, the Triton interpreter matches with max abs 2e-4 … 1e-3, the Gluon kernel
# still compiles for sm_90a, and the CUDA steps are skipped with their reason. How fast the
# kernels are is notebook 03's subject.

# %%
steps.finish();
