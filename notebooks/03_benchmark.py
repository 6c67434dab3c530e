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
# # 03 · Benchmark: our kernels beside FlashMLA, FlashInfer and vLLM's Triton MLA
#
# **What you will learn**
# - how MLA decode kernels are timed so the numbers compare: the same inputs for every provider
#   in one process, `triton.testing.do_bench` (median, L2 cleared between calls), metadata made
#   outside the timed call, FLOPs and bytes counted as FlashMLA counts them;
# - how to read the results against the GPU's *measured* ceilings (copy bandwidth and bf16 matmul
#   rate, taken in the same run): GB/s for the memory-bound shapes, TFLOP/s for the compute-bound ones;
# - where our CUDA and Triton kernels stand against the targets in `perf-targets.md`.
#
# **What it needs**: an NVIDIA GPU; Hopper for our CUDA kernel, FlashInfer's `fa3` and DeepSeek's
# FlashMLA; FlashInfer and vLLM installed for those providers (each missing provider is listed with
# its reason). Time: 2–5 min for the `table` + `sweep` suites on an H100. Memory: < 10 GiB.
# In SMOKE mode on a CPU: two tiny shapes, the torch reference and our Triton kernel in the
# interpreter (the timings then only prove that the pipeline runs).
#
# The same run from a shell: `python -m flashmla.bench --suites table sweep --out <dir>` (or
# `scripts/bench.py`); the method is in `docs/benchmarking.md`.

# %% tags=["parameters"]
SMOKE: bool = False  # True: two tiny shapes on the CPU (reference + Triton interpreter); what CI runs
DEVICE: str = "auto"  # "auto" (the GPU if torch sees one), "cuda", or "cpu" (cpu only with SMOKE)
OUTPUT_DIR: str = "../out/notebooks"  # step records and plots; the full CSV goes to OUTPUT_DIR/03_bench/
SEED: int = 0  # random inputs
SUITES: list = ["table", "sweep"]  # named shape suites of flashmla.bench.shapes (table, sweep, small, long, quick, all)
SHAPES: list = []  # extra shapes as "b,s_q,seqlen,h_q[,varlen]" strings, for example "64,1,16K,128"
PROVIDERS: list = []  # provider names to run; empty list means all (unavailable ones are listed as skipped)
RECORDED_RUN: str = "../benchmarks/results/bench_h100_2026-12-07_session28"  # committed H100 run whose plots SMOKE mode shows, labelled as recorded; "" for none

# %%
from pathlib import Path

from IPython.display import Image, Markdown, display

from flashmla import bench, env

device = env.resolve_device(DEVICE, SMOKE)
env.use_triton_interpreter(device)
steps = env.StepLog("03_benchmark", smoke=SMOKE, output_dir=OUTPUT_DIR,
                    parameters=dict(SMOKE=SMOKE, DEVICE=DEVICE, SEED=SEED, SUITES=SUITES, SHAPES=SHAPES,
                                    PROVIDERS=PROVIDERS))
if SMOKE:  # tiny shapes: one fixed-length, one varied-length causal s_q=2 (odd lengths exercise masking)
    SUITES, SHAPES = [], ["b=2,s_q=1,seqlen=128,h_q=16", "b=2,s_q=2,seqlen=100,h_q=16,varlen=1"]
bench_dir = Path(OUTPUT_DIR) / "03_bench"
print(f"device {device}; suites {SUITES}; extra shapes {SHAPES}; providers {PROVIDERS or 'all'}")

# %% [markdown]
# ## 1. Providers: who can run here
#
# Every provider says whether it can run on this machine, and why not. Missing ones are not an
# error (FlashInfer is optional, DeepSeek's FlashMLA is taken from vLLM's build when vLLM is
# installed, and FlashMLA at the commit behind perf-targets.md, `flashmla-head`, runs only where
# `scripts/build_flashmla_head.sh` has built it from a FlashMLA checkout); they are listed, never
# silently dropped.

# %%
with steps.step("providers") as step:
    if step.runs:
        available = {}
        for provider in bench.get_providers(PROVIDERS or None):
            ok, why = provider.availability(device)
            available[provider.name] = ok
            print(f"{provider.name:16s} {'available' if ok else 'NOT available: ' + why}")
        assert available.get("torch"), "the torch reference must always run"
        step.result(available=available)

# %% [markdown]
# ## 2. Run the suite
#
# For each shape: build the inputs once (values `randn/10` clamped, pages in random order, NaN in
# unused rows, garbage block-table slots), run the fp32 reference, then every provider —
# **check it against the reference first** (a provider that disagrees is reported as a
# `mismatch` and not timed), then time it. On a GPU each shape runs in a supervised child
# process, so a crashing third-party kernel costs one row, not the whole benchmark.

# %%
with steps.step("run_benchmark") as step:
    if step.runs:
        result, files = bench.run_benchmark(suites=SUITES, shapes=SHAPES, providers=PROVIDERS or None,
                                            device=str(device), out_dir=bench_dir, seed=SEED)
        print(bench.report.results_table(result.rows, markdown=False))
        statuses = {}
        for row in result.rows:
            statuses[row["status"]] = statuses.get(row["status"], 0) + 1
        print("row statuses:", statuses)
        for row in result.rows:
            if row["status"] != "ok":
                print(f"  {row['provider']:16s} {row['shape']:24s} {row['status']}: {row['reason']}")
        step.result(rows=len(result.rows), statuses=statuses, ceilings=result.ceilings.as_dict(),
                    csv=str(files.get("csv")))

# %% [markdown]
# ## 3. Hard check: every provider that ran agrees with the reference
#
# The benchmark compares each output with the float32 reference (relative L2 error of `out`,
# max error of `lse`, no NaN/inf) before timing it. Any `mismatch` fails this notebook; so does a
# crash or failure of *our* kernels.

# %%
with steps.step("all_results_match_reference") as step:
    if step.runs:
        ran = [r for r in result.rows if r["status"] == "ok"]
        bad = [r for r in result.rows if r["status"] == "mismatch"
               or (r["provider"].startswith("flashmla") and r["status"] in ("failed", "crashed"))]
        for r in bad:
            print(f"{r['provider']} {r['shape']}: {r['status']} {r['reason']}")
        assert not bad, f"{len(bad)} rows disagree with the reference or crashed"
        assert any(r["provider"] != "torch" for r in ran), "no kernel besides the reference ran"
        worst = max((r["err_rel_l2"] or 0.0) for r in ran)
        print(f"{len(ran)} rows ran and matched; worst relative L2 error {worst:.2e}")
        step.result(rows_ok=len(ran), worst_rel_l2=worst)

# %% [markdown]
# ## 4. Plots
#
# - **GB/s against context length** (b=128, s_q=1): memory-bound at 16 heads — compare with the
#   copy-bandwidth line;
# - **TFLOP/s against heads**: at 128 heads and s_q=2 decode is compute-bound — compare with the
#   matmul line;
# - **speed-up over the best other provider** per shape (> 1 means ours is faster).

# %%
with steps.step("plots") as step:
    if step.runs:
        shown = []
        for key in ("gbps_vs_seqlen.png", "tflops_vs_heads.png", "speedup_vs_best_other.png"):
            if key in files:
                path = steps.add_image(files[key], key.removesuffix(".png"))
                display(Image(filename=str(path)))
                shown.append(path.name)
            else:
                print(f"{key}: no data for this plot with these shapes/providers")
        for error in files.get("plot_errors", []):
            print("plot error:", error)
        assert not files.get("plot_errors"), "a plot failed"
        step.result(figures=shown)

# %% [markdown]
# ## 5. Against the targets
#
# `target ms` is the bar from `perf-targets.md`: our CUDA kernel at ≤ best/0.9 of the faster of
# FlashMLA and FlashInfer `fa3` on every row of the table; our Triton kernel at ≤ best/0.6 on the
# b=128 rows and never slower than vLLM's Triton kernel. `met` says whether it was met here. Where
# `flashmla-head` and FlashInfer `fa3` both ran, the report also gives the same bar measured in
# this run ("same-run bar": 0.9 × the speed of the faster of the two), because one H100 differs
# from another by a few per cent.

# %%
with steps.step("targets") as step:
    if step.runs:
        ours = [r for r in result.rows if r["provider"].startswith("flashmla") and r.get("target_ms")]
        met = sum(1 for r in ours if r.get("target_met"))
        for r in ours:
            print(f"{r['provider']:16s} {r['shape']:24s} {r['ms']!s:>10} ms  target {r['target_ms']:.4f}  "
                  f"{'met' if r.get('target_met') else 'NOT met'}")
        print(f"targets met: {met} of {len(ours)} rows with a target" if ours else
              "no row here has a target (targets exist for the table suite on H100/H200)")
        display(Markdown(Path(files["md"]).read_text()))
        step.result(rows_with_target=len(ours), targets_met=met)

# %% [markdown]
# ## 6. The recorded H100 run (SMOKE mode only)
#
# A CPU cannot show what these plots look like on a Hopper GPU, so in SMOKE mode this step shows the
# plots **committed from the recorded H100 run** in `RECORDED_RUN`
# (`benchmarks/results/bench_h100_2026-12-07_session28/`, written by `scripts/gpu_bench.sh`). They are not
# this run's output: the GPU, versions and date printed above them are read from that run's
# `bench_meta.json`. Outside SMOKE mode the plots of section 4 are this run's own, and this step is
# skipped.

# %%
recorded_dir = Path(RECORDED_RUN) if RECORDED_RUN else None
with steps.step("recorded_h100_run", needs=[
        (SMOKE, "not SMOKE: section 4 shows this run's own plots"),
        (bool(recorded_dir) and (recorded_dir / "bench_meta.json").is_file(),
         f"no recorded run at RECORDED_RUN={RECORDED_RUN!r} (a clone of the repository has it)")]) as step:
    if step.runs:
        import json

        meta = json.loads((recorded_dir / "bench_meta.json").read_text())
        info, ceilings = meta["meta"], meta["ceilings"]
        label = (f"RECORDED run, not this one: {info['gpu']} ({info['sm_count']} SMs), {info['date']}, "
                 f"torch {info['torch']}, Triton {info['triton']}, driver {info['driver']}; "
                 f"ceilings copy {ceilings['copy_gbps']:.0f} GB/s, bf16 matmul {ceilings['matmul_tflops']:.0f} TFLOP/s")
        display(Markdown(f"**{label}** — files in `{recorded_dir}`"))
        shown = []
        for key in ("gbps_vs_seqlen.png", "tflops_vs_heads.png", "speedup_vs_best_other.png"):
            if (recorded_dir / key).is_file():
                print(f"[recorded {info['gpu']}, {info['date']}] {key}")
                display(Image(filename=str(recorded_dir / key)))
                shown.append(key)
        assert shown, f"{recorded_dir} has bench_meta.json but none of the plots"
        step.result(recorded_run=str(recorded_dir), gpu=info["gpu"], date=info["date"], plots=shown)

# %% [markdown]
# ## What to expect on an H100 (measured)
#
# **Measured** by the recorded run `benchmarks/results/bench_h100_2026-12-07_session28/` (`bench.md`,
# `bench.csv`, `README.md`; the README's table): NVIDIA H100 80GB HBM3 (132 SMs), 2026-12-07,
# torch 2.11.0+cu130 (CUDA 13.0), Triton 3.6.0, driver 580.159.04, every provider in one process on
# the same inputs: ours (flashmla 0.1.0, commit baf3dab: the lazy running max, CUDA and Triton), DeepSeek's
# FlashMLA at 9241ae3 (`flashmla-head`) and as built in vLLM 0.26.0, FlashInfer 0.7.2 `fa3`/`fa2`,
# vLLM 0.26.0's Triton MLA. Ceilings measured in the same run: copy 3039 GB/s, bf16 matmul 738
# TFLOP/s. Every timed output matched the fp32 reference (relative L2 ≤ 3.1e-3). Times in ms (b = 1:
# CUDA-graph replay in brackets). "Ours Triton" is the Gluon kernel the Triton backend runs on
# Hopper; "portable" is the `tl.dot` kernel every other GPU runs. The last column is our CUDA target
# from `perf-targets.md` (≤ 0.9 × the speed of the better of FlashMLA 9241ae3 and FlashInfer `fa3`
# there, measured on another H100).
#
# | b, s_q, seqlen, h_q | ours CUDA | ours Triton | portable | FlashMLA 9241ae3 | FlashMLA (vLLM) | FlashInfer fa3 | vLLM Triton | target |
# |---|---:|---:|---:|---:|---:|---:|---:|---:|
# | 128, 1, 4096, 16 | 0.2142 | 0.2231 | 0.2357 | 0.2228 | 0.2335 | 0.2144 | 0.3678 | ≤ 0.2458 |
# | 128, 1, 8192, 128 | 0.5260 | 0.5600 | 1.1493 | 0.5125 | 0.5590 | 0.5385 | 4.9005 | ≤ 0.5926 |
# | 128, 2, 8192, 128 | 0.9857 | 1.0556 | 2.0602 | 0.9038 | 0.9996 | 1.0079 | 9.8972 | ≤ 0.9732 |
# | 128, 1, 8192, 16, varied lengths | 0.4234 | 0.4397 | 0.4623 | 0.4354 | 0.4576 | 0.4964 | 0.8856 | ≤ 0.5022 |
# | 32, 1, 32768, 128 | 0.4968 | 0.5392 | 1.1169 | 0.4960 | 0.5306 | 0.5566 | 4.5731 | ≤ 0.5576 |
# | 1, 1, 4096, 128 | 0.0230 (0.0231) | 0.0308 (0.0304) | 0.0383 (0.0376) | 0.0255 (0.0254) | 0.0330 (0.0328) | 0.0239 (0.0239) | 0.0683 (0.0669) | ≤ 0.0263 |
#
# In that run our CUDA kernel met its target on 34 of the 35 rows that have one, and the same bar
# measured in the run on all 35; the Triton backend met its own bar on all 35, the portable kernel on
# 23. The one CUDA miss is b = 128, s_q = 2, 8K tokens, 128 heads (256 query rows per kv head), 1.3%
# over; a second run of the same code on another machine start missed that row and the two other
# 256-row rows by 0.8-2.9% (docs/kernel-design.md 7.29 follows the gap to FlashMLA step by step:
# ours takes 1.01-1.09 of its time there). Against the best other provider of each shape it ran at
# a geometric mean of 0.98× (0.89× … 1.10×, 53 shapes): 0.98× on the 36 fixed-length shapes (behind
# FlashMLA 9241ae3 on 13 of them, FlashInfer `fa3` on 6), ahead of every other provider on 5 of the
# 17 varied-length ones. At b = 128, 16-64 heads, fixed lengths of 4K-8K, it streams 2.84-3.01 TB/s
# (93-99% of copy), 3.10 TB/s at 32768 tokens; at 128 heads and s_q = 2 it reaches 570-633 TFLOP/s.
# Both Triton kernels are faster than vLLM's Triton MLA on all 52 shapes it ran; vLLM's Triton MLA
# crashed (illegal memory access) on b128 s1 32K h128
# varied. A later run of main with `+pvbfirst` in `auto` (session 29, bit-identical output;
# `benchmarks/results/bench_h100_2026-12-07_session29/`, on a slower machine start: copy 3020 GB/s)
# met 33 of 35, missing b128 s2 8K h128 fixed and varied by 1.7% and 1.9%: the 256-row rows sit
# within 0-3% of their targets, on either side depending on the machine start. Session 30 measured
# why (`benchmarks/results/power_state_h100_2026-12-07/`, docs/kernel-design.md 7.31): after an idle
# the H100 runs these kernels at its full clock for 30-130 ms before its 700 W cap steps the clock
# down 6-10%, and do_bench's 100 ms window lands on that step, so a compute-bound timing depends on
# what ran just before it. `python -m flashmla.bench --settle 1` gives every provider the same idle
# first; `scripts/power_transient.py` draws the transient call by call. Session 31 then took
# 1.5-3.5% off those rows (`+chainpv+sbrightfirst` in `auto`: warpgroup 1's two PVs queued back to
# back where the lazy max did not move, and the next S on the half page that this frees first;
# docs/kernel-design.md 7.32): two runs on two machine starts met **all 35** targets
# (`benchmarks/results/bench_h100_2026-12-07_session31_run4/` and `..._session31/`; b128 s2 8K h128
# 0.960 and 0.905 ms against 0.973).
# This run's own numbers are in `OUTPUT_DIR/03_bench/bench.md`.

# %%
steps.finish();
