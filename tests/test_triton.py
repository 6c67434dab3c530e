"""Tests of the Triton MLA decode backend (flashmla/triton_decode.py).

CPU: the kernels run in the Triton interpreter (TRITON_INTERPRET=1) on tiny odd shapes, in
both dtypes, against the fp32 reference. GPU (marked ``gpu``): the foundation grid and the
benchmark shapes. Every case draws fresh random data, poisons unused cache rows and unused
pages with NaN, fills unused block-table slots with garbage, and permutes the pages.

Interpreter versions (see docs/triton-kernel.md): Triton 3.6.x needs numpy < 2.4 (its
interpreter calls int() on 1-element arrays, a TypeError from numpy 2.4 on); Triton >= 3.7.1
works with numpy 2.4.
"""
from __future__ import annotations

import dataclasses
import math
import os
import sys
import warnings

import pytest
import torch

triton = pytest.importorskip("triton", reason="Triton is not installed: pip install the pinned triton "
                                              "(see docs/triton-kernel.md) to test the Triton backend")

from flashmla import reference, testing, triton_configs, triton_decode  # noqa: E402

if os.environ.get("FLASHMLA_TRITON_PICKS"):  # scripts/gpu_triton.sh: test the tuner's fresh picks
    triton_configs.load_picks(os.environ["FLASHMLA_TRITON_PICKS"])

PAGE = 64
OUT_RTOL = 1e-2
LSE_RTOL = 1e-3
GARBAGE_BLOCK_ID = 2**31 - 77  # an index no cache has: reading it would fault or read junk


# --------------------------------------------------------------------------- inputs and checks
def make_inputs(seqlens, s_q, h_q, h_kv, dtype, device, seed, spare_pages=3, extra_table_cols=1):
    """Paged inputs with permuted pages, NaN in every cache row no request uses, garbage in
    block-table slots past each request's pages. Random values are drawn on ``device``."""
    device = torch.device(device)
    host_gen = torch.Generator().manual_seed(seed)
    dev_gen = torch.Generator(device=device).manual_seed(seed)
    b = len(seqlens)
    pages = [math.ceil(s / PAGE) for s in seqlens]
    table_cols = max(pages + [1]) + extra_table_cols
    num_blocks = sum(pages) + spare_pages

    def rand(*shape):
        x = torch.randn(*shape, generator=dev_gen, device=device, dtype=torch.float32) / 10
        return x.clamp_(-1, 1).to(dtype)

    k_cache = rand(num_blocks, PAGE, h_kv, 576)
    q = rand(b, s_q, h_q, 576)
    perm = torch.randperm(num_blocks, generator=host_gen)
    block_table = torch.full((b, table_cols), GARBAGE_BLOCK_ID, dtype=torch.int32)
    used = torch.zeros(num_blocks, PAGE, dtype=torch.bool)
    pos = 0
    for i, (n, s) in enumerate(zip(pages, seqlens)):
        ids = perm[pos:pos + n]
        pos += n
        block_table[i, :n] = ids.to(torch.int32)
        used[ids, :] = True
        if s % PAGE:
            used[ids[-1], s % PAGE:] = False
    if b and table_cols > pages[0]:
        block_table[0, -1] = -5  # negative garbage as well, in an unused slot
    k_cache[~used.to(device)] = float("nan")
    return q, k_cache, block_table.to(device), torch.tensor(seqlens, dtype=torch.int32, device=device)


def reference_fp32(q, k_cache, block_table, cache_seqlens, scale, causal):
    return reference.decode(q.float(), k_cache.float(), block_table, cache_seqlens, scale, causal)


def assert_matches_reference(out, lse, ref_out, ref_lse, what=""):
    assert not torch.isnan(out).any(), f"NaN in out {what}"
    assert not torch.isnan(lse).any(), f"NaN in lse {what}"
    empty = torch.isinf(ref_lse)
    assert torch.equal(torch.isinf(lse), empty), f"rows with nothing to attend differ {what}"
    assert bool((lse[empty] > 0).all()), f"empty rows must have lse=+inf {what}"
    # out [b, s_q, h_q, 512]; lse [b, h_q, s_q]: empty rows must be exactly zero.
    empty_rows = empty.transpose(1, 2)
    assert bool((out[empty_rows] == 0).all()), f"empty rows must have out=0 {what}"
    ref = ref_out.float()
    err = ((out.float() - ref).norm() / ref.norm().clamp_min(1e-30)).item()
    assert err <= OUT_RTOL, f"out relative error {err:.3e} > {OUT_RTOL} {what}"
    finite = ~empty
    if finite.any():
        lse_err = ((lse[finite] - ref_lse[finite]).norm() / ref_lse[finite].norm()).item()
        assert lse_err <= LSE_RTOL, f"lse relative error {lse_err:.3e} > {LSE_RTOL} {what}"
    return err


# --------------------------------------------------------------------------- pure-Python parts
def test_config_table_fits_shared_memory():
    limits = {"sm90": 227 * 1024, "sm80": 163 * 1024, "sm86": 99 * 1024}
    for family, table in triton_configs.CONFIGS.items():
        assert set(table) == set(triton_configs.ROW_BUCKETS), family
        for bucket, cfg in table.items():
            assert PAGE % cfg.block_n == 0 and cfg.block_n >= 16, (family, bucket, cfg)
            # 128-row tiles only with half the value columns per program (a 128 x 512 fp32
            # accumulator does not fit the register file)
            assert cfg.block_m in (16, 32, 64) or (cfg.block_m == 128 and cfg.dv_split == 2), (family, bucket, cfg)
            assert cfg.num_warps in (4, 8) and cfg.dv_split in (1, 2), (family, bucket, cfg)
            assert cfg.smem_bytes() <= limits[family], (family, bucket, cfg, cfg.smem_bytes())


@pytest.mark.parametrize("capability,family", [((9, 0), "sm90"), ((8, 0), "sm80"), ((8, 9), "sm86"),
                                               ((8, 6), "sm86"), ((10, 0), triton_configs.DEFAULT_FAMILY)])
def test_family_of(capability, family):
    assert triton_configs.family_of(capability) == family


@pytest.mark.parametrize("batch,h_kv,row_tiles,max_pages", [
    (1, 1, 1, 64), (1, 1, 2, 512), (128, 1, 1, 64), (128, 1, 4, 128), (32, 1, 2, 512), (3, 8, 1, 5),
    (1, 1, 1, 1), (200, 2, 1, 300), (132, 1, 2, 64), (66, 2, 4, 100)])
def test_plan_splits_covers_every_page(batch, h_kv, row_tiles, max_pages):
    cfg = triton_configs.config_for("sm90", 64)
    splits, per_split = triton_decode.plan_splits(batch, h_kv, row_tiles, max_pages, 132, cfg, 64)
    assert 1 <= splits <= triton_decode.MAX_SPLITS
    assert splits * per_split >= max_pages > (splits - 1) * per_split  # no empty trailing split
    slots = 132 * cfg.ctas_per_sm
    if batch * h_kv * row_tiles % slots == 0:
        assert splits == 1  # whole waves already: partials would only add traffic


def test_launch_plan_checks_inputs_every_time():
    """The kernels' own input checks run in the cached launch plan: a bad signature raises on every
    call (lru_cache keeps no exceptions), naming the problem; a good one is planned once."""
    cpu = torch.device("cpu")
    good = dict(device=cpu, dtype=torch.bfloat16, q_shape=(2, 1, 16, 576), q_strides=(9216, 9216, 576, 1),
                k_dtype=torch.bfloat16, k_shape=(9, 64, 1, 576), k_strides=(36864, 576, 576, 1),
                bt_dtype=torch.int32, bt_shape=(2, 4), seqlens_dtype=torch.int32, causal=False,
                config=triton_configs.INTERPRETER_CONFIG, pages_per_split=None, metadata_shape=None,
                num_splits_shape=None, combine_tiles=None)
    plan = triton_decode._launch_plan(*good.values())
    assert triton_decode._launch_plan(*good.values()) is plan
    for change, error, words in [(dict(k_dtype=torch.float16), TypeError, "k_cache must have q's dtype"),
                                 (dict(bt_dtype=torch.int64), TypeError, "must be int32"),
                                 (dict(k_shape=(9, 32, 1, 576)), ValueError, "page size"),
                                 (dict(q_shape=(2, 1, 16, 512)), ValueError, "head dim"),
                                 (dict(combine_tiles=(4, 96, 2)), ValueError, "combine_tiles")]:
        for _ in range(2):
            with pytest.raises(error, match=words):
                triton_decode._launch_plan(*{**good, **change}.values())


def test_interpreter_set_too_late_is_reported(monkeypatch):
    if triton_decode._imported_for_interpreter():
        pytest.skip("this pytest process imported triton with TRITON_INTERPRET=1 already")
    if triton_decode._interpreter_numpy_problem():
        pytest.skip(triton_decode._interpreter_numpy_problem())  # the interpreter tests fail on it
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    ok, reason = triton_decode.is_available(torch.device("cpu"))
    assert not ok and "after triton was imported" in reason


def test_unavailable_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    ok, reason = triton_decode.is_available(torch.device("cpu"))
    assert not ok and "TRITON_INTERPRET" in reason


# --------------------------------------------------------------------------- interpreter (CPU)
# The interpreter must be on when triton is first imported (triton.language's own functions are
# wrapped then), and the GPU tests of this file must not run under it. So the kernels run in one
# child process started with TRITON_INTERPRET=1 (``_interpreter_worker`` below), which rebuilds
# each case's inputs from its seed and saves (out, lse); the checks run here.

# name -> (seqlens, s_q, h_q, h_kv, causal, plan, dtype, seed). Tiny odd shapes that still cover
# zero-length requests, partial pages, several row tiles, GQA, causal rows with nothing to attend
# (seqlen < s_q), one and several chunks, and the combine kernel. plan: "auto" (own plan, as
# planned), an int (own plan with that many pages per chunk), or "md<N>" (the scheduler metadata
# of get_mla_metadata planned for N SMs: small N cuts requests into several chunks).
_INTERPRETER_SHAPES = [
    ([70, 0, 1], 1, 3, 1, False, "auto"),
    ([129, 5], 2, 5, 1, True, "auto"),
    ([65, 3, 64], 2, 4, 2, True, 1),
    ([200, 2], 4, 3, 1, True, 1),
    ([150, 0, 1], 2, 9, 1, False, 2),
    ([1, 130], 4, 2, 2, True, 2),
    ([200, 0, 70, 1], 2, 3, 1, True, "md3"),
    ([0, 129, 64, 5], 1, 4, 2, False, "md4"),
    ([260, 17], 4, 5, 1, True, "md16"),
    # dv_split=2 (two programs per row tile, 256 value columns each): the direct store, the
    # partials + combine, and the metadata plan; odd rows so the lse-owning half is masked too.
    ([70, 0, 131], 2, 5, 1, True, "auto+dv2"),
    ([150, 0, 1], 2, 9, 1, False, "2+dv2"),
    ([200, 0, 70, 1], 2, 3, 1, True, "md3+dv2"),
    # The combine with its value columns split across programs and fewer chunks per step than a
    # request has (the small-batch tiles of _combine_tiles): 4-row tiles over 6 or 9 rows.
    ([200, 0, 70, 1], 2, 3, 1, True, "md3+c4x64x2"),
    ([150, 0, 1], 2, 9, 1, False, "1+c4x128x2"),
]
INTERPRETER_CASES = {
    f"L{'-'.join(map(str, c[0]))}_sq{c[1]}_hq{c[2]}_hkv{c[3]}_{'causal' if c[4] else 'full'}"
    f"_plan{c[5]}_{dname}": (*c, dtype, 100 * i + j)
    for i, c in enumerate(_INTERPRETER_SHAPES)
    for j, (dname, dtype) in enumerate([("bf16", torch.bfloat16), ("fp16", torch.float16)])
}
SOFTMAX_SCALE = 576 ** -0.5 * 1.3


def _split_variant(plan):
    """'<plan>+dv2' -> (plan, {'dv_split': 2}, None); '<plan>+c<R>x<DV>x<C>' -> (plan, {}, (R, DV, C)),
    the combine's tiles forced (rows, value columns, chunks per step); an int plan may be written
    as a string."""
    if not isinstance(plan, str) or "+" not in plan:
        return plan, {}, None
    plan, variant = plan.split("+")
    plan = int(plan) if plan.isdigit() else plan
    if variant.startswith("c"):
        return plan, {}, tuple(int(x) for x in variant[1:].split("x"))
    assert variant == "dv2", variant
    return plan, {"dv_split": 2}, None


def _interpreter_case_inputs(name):
    seqlens, s_q, h_q, h_kv, causal, splits, dtype, seed = INTERPRETER_CASES[name]
    return make_inputs(seqlens, s_q, h_q, h_kv, dtype, "cpu", seed), causal, splits


def _strided_q_inputs():
    q, k, bt, sl = make_inputs([77, 20], 2, 3, 1, torch.float16, "cpu", seed=11)
    wide = torch.zeros(2, 2, 5, 576, dtype=q.dtype)
    wide[:, :, 1:4] = q
    return wide[:, :, 1:4], k, bt, sl


def _api_inputs():
    return make_inputs([90, 33], 2, 4, 1, torch.float16, "cpu", seed=7)


def _interpreter_worker(out_path):
    """Runs in the child process (TRITON_INTERPRET=1): every CPU case, results saved to a file."""
    import traceback
    import flashmla
    results = {}

    def run(name, fn):
        try:
            results[name] = fn()
        except Exception:  # reported by the test of that case
            results[name] = traceback.format_exc()

    ok, reason = triton_decode.is_available(torch.device("cpu"))
    results["available"] = (ok, reason)
    for name in INTERPRETER_CASES:
        def case(name=name):
            (q, k, bt, sl), causal, plan = _interpreter_case_inputs(name)
            plan, variant, combine_tiles = _split_variant(plan)
            if isinstance(plan, str) and plan.startswith("md"):
                h_kv = k.shape[2]
                md, ns = flashmla.get_mla_metadata(sl, q.shape[1] * q.shape[2] // h_kv, h_kv, num_sms=int(plan[2:]))
                config = dataclasses.replace(triton_configs.INTERPRETER_CONFIG, plan="metadata", **variant)
                return triton_decode.decode_with_config(q, k, bt, sl, SOFTMAX_SCALE, causal, config=config,
                                                        tile_scheduler_metadata=md, num_splits=ns,
                                                        combine_tiles=combine_tiles)
            config = dataclasses.replace(triton_configs.INTERPRETER_CONFIG, plan="own", **variant) if variant else None
            return triton_decode.decode_with_config(q, k, bt, sl, SOFTMAX_SCALE, causal, config=config,
                                                    pages_per_split=None if plan == "auto" else plan,
                                                    combine_tiles=combine_tiles)
        run(name, case)

    def strided():
        q, k, bt, sl = _strided_q_inputs()
        assert not q.is_contiguous()
        return triton_decode.decode(q, k, bt, sl, 0.05, True, None, None)
    run("strided_q", strided)

    def api():
        q, k, bt, sl = _api_inputs()
        md, ns = flashmla.get_mla_metadata(sl, 2 * 4 // 1, 1)
        return flashmla.flash_mla_with_kvcache(q, k, bt, sl, 512, md, ns, causal=True, backend="triton")
    run("public_api", api)
    torch.save(results, out_path)


@pytest.fixture(scope="module")
def interpreter_results(tmp_path_factory):
    import subprocess
    import sys
    out_path = tmp_path_factory.mktemp("triton_interpreter") / "results.pt"
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TRITON_INTERPRET="1",
               PYTHONPATH=os.pathsep.join([repo_root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--interpreter-worker", str(out_path)],
                          env=env, cwd=repo_root, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"interpreter worker failed:\n{proc.stdout}\n{proc.stderr}"
    results = torch.load(out_path, weights_only=False)
    ok, reason = results["available"]
    assert ok, f"Triton backend unavailable under TRITON_INTERPRET=1: {reason}"
    return results


def _result(results, name):
    value = results[name]
    if isinstance(value, str):
        pytest.fail(f"{name} raised in the interpreter:\n{value}")
    return value


@pytest.mark.parametrize("name", list(INTERPRETER_CASES))
def test_interpreter_matches_reference(interpreter_results, name):
    (q, k, bt, sl), causal, _ = _interpreter_case_inputs(name)
    out, lse = _result(interpreter_results, name)
    b, s_q, h_q, _ = q.shape
    assert out.dtype == q.dtype and out.shape == (b, s_q, h_q, 512)
    assert lse.dtype == torch.float32 and lse.shape == (b, h_q, s_q)
    ref_out, ref_lse = reference_fp32(q, k, bt, sl, SOFTMAX_SCALE, causal)
    assert_matches_reference(out, lse, ref_out, ref_lse, name)


def test_interpreter_strided_q(interpreter_results):
    """q needs only a contiguous last dim: a slice of a wider tensor works."""
    out, lse = _result(interpreter_results, "strided_q")
    q, k, bt, sl = _strided_q_inputs()
    ref_out, ref_lse = reference_fp32(q, k, bt, sl, 0.05, True)
    assert_matches_reference(out, lse, ref_out, ref_lse)


def test_interpreter_through_public_api(interpreter_results):
    """backend="triton" on CPU tensors goes through flashmla's interface to this kernel."""
    out, lse = _result(interpreter_results, "public_api")
    q, k, bt, sl = _api_inputs()
    ref_out, ref_lse = reference_fp32(q, k, bt, sl, 576 ** -0.5, True)
    assert_matches_reference(out, lse, ref_out, ref_lse)


# --------------------------------------------------------------------------- GPU
def _cuda_device():
    return torch.device("cuda", torch.cuda.current_device())


FOUNDATION_SEQLENS = [0, 1, 63, 64, 65, 127, 200, 300, 5, 129]
FOUNDATION_HEADS = [(h_q, h_kv) for h_q in (1, 3, 16, 63, 128) for h_kv in (1, 2, 8) if h_q % h_kv == 0]


@pytest.mark.gpu
@pytest.mark.parametrize("plan", ["metadata", "own"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("s_q", [1, 2, 4])
@pytest.mark.parametrize("heads", FOUNDATION_HEADS, ids=lambda hk: f"hq{hk[0]}-hkv{hk[1]}")
def test_gpu_foundation_grid(heads, s_q, causal, dtype, plan):
    """The table's block sizes for these rows, with either split plan (the scheduler metadata is
    planned for few SMs so that requests are cut into several chunks)."""
    import flashmla
    h_q, h_kv = heads
    device = _cuda_device()
    seed = h_q * 1000 + h_kv * 100 + s_q * 10 + causal * 2 + (dtype == torch.float16)
    order = torch.randperm(len(FOUNDATION_SEQLENS), generator=torch.Generator().manual_seed(seed))
    seqlens = [FOUNDATION_SEQLENS[i] for i in order]
    q, k, bt, sl = make_inputs(seqlens, s_q, h_q, h_kv, dtype, device, seed)
    config = dataclasses.replace(triton_decode.kernel_config(device, s_q * h_q // h_kv, portable=True), plan=plan)
    md, ns = flashmla.get_mla_metadata(sl, s_q * h_q // h_kv, h_kv, num_sms=7)
    out, lse = triton_decode.decode_with_config(q, k, bt, sl, 576 ** -0.5, causal and s_q > 1, config=config,
                                                tile_scheduler_metadata=md, num_splits=ns)
    ref_out, ref_lse = reference_fp32(q, k, bt, sl, 576 ** -0.5, causal and s_q > 1)
    assert_matches_reference(out, lse, ref_out, ref_lse)


@pytest.mark.gpu
@pytest.mark.parametrize("pages_per_split", [1, 2, 5])
def test_gpu_forced_split_plans(pages_per_split):
    """The combine path and the direct path, whatever the planner would have chosen."""
    device = _cuda_device()
    q, k, bt, sl = make_inputs([300, 0, 64, 65, 1], 2, 16, 1, torch.bfloat16, device, seed=3, extra_table_cols=0)
    config = triton_decode.kernel_config(device, 2 * 16, portable=True)  # (the own plan is the portable kernel's)
    out, lse = triton_decode.decode_with_config(q, k, bt, sl, 576 ** -0.5, True, config=config,
                                                pages_per_split=pages_per_split)
    ref_out, ref_lse = reference_fp32(q, k, bt, sl, 576 ** -0.5, True)
    assert_matches_reference(out, lse, ref_out, ref_lse)


@pytest.mark.gpu
@pytest.mark.parametrize("plan", ["metadata", "own"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("heads_sq", [(128, 1, 1), (128, 1, 2), (63, 1, 2), (16, 2, 4), (3, 1, 1)],
                         ids=lambda h: f"hq{h[0]}-hkv{h[1]}-sq{h[2]}")
@pytest.mark.parametrize("variant", triton_configs.COMPUTE_VARIANTS, ids=lambda c: "bm{}-bn{}-w{}-st{}-dv{}".format(
    c.block_m, c.block_n, c.num_warps, c.num_stages, c.dv_split))
def test_gpu_compute_variants(variant, heads_sq, dtype, plan):
    """Every compute-bound variant the tuner may pick, whatever rows it is given (several row
    tiles, partial tiles, GQA), with both plans and split requests."""
    import flashmla
    h_q, h_kv, s_q = heads_sq
    device = _cuda_device()
    seed = 7000 + h_q * 10 + s_q + (dtype == torch.float16)
    q, k, bt, sl = make_inputs([300, 0, 1, 64, 65, 129, 777, 5], s_q, h_q, h_kv, dtype, device, seed)
    config = dataclasses.replace(variant, plan=plan)
    md, ns = flashmla.get_mla_metadata(sl, s_q * h_q // h_kv, h_kv, num_sms=5)
    causal = s_q > 1
    out, lse = triton_decode.decode_with_config(q, k, bt, sl, 576 ** -0.5, causal, config=config,
                                                tile_scheduler_metadata=md, num_splits=ns)
    ref_out, ref_lse = reference_fp32(q, k, bt, sl, 576 ** -0.5, causal)
    assert_matches_reference(out, lse, ref_out, ref_lse, str(config))


def _gluon_ready(device):
    from flashmla import triton_hopper
    ok, reason = triton_hopper.is_available(device)
    if not ok:
        pytest.skip(f"the Gluon Hopper kernel cannot run here: {reason}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("s_q", [1, 2, 4])
@pytest.mark.parametrize("heads", FOUNDATION_HEADS, ids=lambda hk: f"hq{hk[0]}-hkv{hk[1]}")
def test_gpu_gluon_foundation_grid(heads, s_q, causal, dtype):
    """The Gluon Hopper kernel (triton_hopper.py) on the foundation grid: zero-length, one-token
    and page-edge lengths, several row tiles and partial tiles, GQA, requests cut into several
    chunks by metadata planned for few SMs; NaN in the unused cache rows, garbage in the table."""
    import flashmla
    h_q, h_kv = heads
    device = _cuda_device()
    _gluon_ready(device)
    seed = 9000 + h_q * 1000 + h_kv * 100 + s_q * 10 + causal * 2 + (dtype == torch.float16)
    order = torch.randperm(len(FOUNDATION_SEQLENS), generator=torch.Generator().manual_seed(seed))
    seqlens = [FOUNDATION_SEQLENS[i] for i in order]
    q, k, bt, sl = make_inputs(seqlens, s_q, h_q, h_kv, dtype, device, seed)
    md, ns = flashmla.get_mla_metadata(sl, s_q * h_q // h_kv, h_kv, num_sms=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a silent fallback to the portable kernel would pass unnoticed
        out, lse = triton_decode.decode_with_config(q, k, bt, sl, 576 ** -0.5, causal and s_q > 1,
                                                    config=triton_configs.GLUON_CONFIG,
                                                    tile_scheduler_metadata=md, num_splits=ns)
    ref_out, ref_lse = reference_fp32(q, k, bt, sl, 576 ** -0.5, causal and s_q > 1)
    assert_matches_reference(out, lse, ref_out, ref_lse, f"gluon {heads} s_q={s_q}")


@pytest.mark.gpu
@pytest.mark.parametrize("shape", [(128, 2, 4096, 128, False), (128, 1, 4096, 64, True), (1, 1, 4096, 128, False),
                                   (32, 1, 32768, 128, False)],
                         ids=lambda s: "b{}-sq{}-L{}-hq{}-{}".format(*s[:4], "varied" if s[4] else "fixed"))
def test_gpu_gluon_benchmark_shapes(shape):
    import flashmla
    b, s_q, mean, h_q, varied = shape
    device = _cuda_device()
    _gluon_ready(device)
    seqlens = benchmark_seqlens(b, mean, s_q, varied)
    q, k, bt, sl = make_inputs(seqlens, s_q, h_q, 1, torch.bfloat16, device, seed=sum(shape), spare_pages=1)
    md, ns = flashmla.get_mla_metadata(sl, s_q * h_q, 1)
    out, lse = triton_decode.decode_with_config(q, k, bt, sl, 576 ** -0.5, s_q > 1, config=triton_configs.GLUON_CONFIG,
                                                tile_scheduler_metadata=md, num_splits=ns)
    ref_out, ref_lse = reference.decode(q, k, bt, sl, 576 ** -0.5, s_q > 1)
    assert_matches_reference(out, lse, ref_out, ref_lse, f"gluon {shape}")


@pytest.mark.gpu
def test_gpu_gluon_falls_back_loudly_on_a_misaligned_cache():
    """A cache view whose base is not 16-byte aligned (TMA cannot address it) runs the portable
    kernel with a warning, and the result is still right."""
    import flashmla
    device = _cuda_device()
    _gluon_ready(device)
    q, k, bt, sl = make_inputs([300, 0, 65], 1, 16, 1, torch.bfloat16, device, seed=6)
    flat = torch.empty(k.numel() + 1, dtype=k.dtype, device=device)
    k_odd = flat[1:].view_as(k)  # 2 bytes past an aligned address
    k_odd.copy_(k)
    md, ns = flashmla.get_mla_metadata(sl, 16, 1)
    with pytest.warns(UserWarning, match="not 16-byte aligned"):
        out, lse = triton_decode.decode_with_config(q, k_odd, bt, sl, 576 ** -0.5, False,
                                                    config=triton_configs.GLUON_CONFIG,
                                                    tile_scheduler_metadata=md, num_splits=ns)
    ref_out, ref_lse = reference_fp32(q, k, bt, sl, 576 ** -0.5, False)
    assert_matches_reference(out, lse, ref_out, ref_lse)


@pytest.mark.gpu
@pytest.mark.parametrize("kernel", ["portable", "gluon"])
def test_gpu_graph_of_a_padded_batch(kernel):
    """As vLLM replays a decode step: metadata of the real batch, num_splits padded with its last
    value, seqlens 0 for the padding. Graph replay equals eager, matches the reference, and the
    padded rows come out 0 / +inf."""
    import flashmla
    device = _cuda_device()
    b_real, b_pad, s_q, h_q = 5, 9, 2, 16
    if kernel == "gluon":
        _gluon_ready(device)
        config = triton_configs.GLUON_CONFIG
    else:
        config = triton_decode.kernel_config(device, s_q * h_q, portable=True)
    seqlens = [300, 64, 0, 1000, 65] + [0] * (b_pad - b_real)
    q, k, bt, sl = make_inputs(seqlens, s_q, h_q, 1, torch.bfloat16, device, seed=11)
    md, ns = flashmla.get_mla_metadata(sl[:b_real], s_q * h_q, 1)
    ns_pad = torch.cat([ns, ns[-1:].expand(b_pad - b_real)])

    def step():
        return triton_decode.decode_with_config(q, k, bt, sl, 576 ** -0.5, True, config=config,
                                                tile_scheduler_metadata=md, num_splits=ns_pad)
    eager_out, eager_lse = step()
    torch.cuda.synchronize()
    _graph, (g_out, g_lse) = testing.capture_graph(step)
    assert torch.equal(g_out, eager_out) and torch.equal(g_lse, eager_lse)
    ref_out, ref_lse = reference_fp32(q, k, bt, sl, 576 ** -0.5, True)
    assert_matches_reference(g_out, g_lse, ref_out, ref_lse, kernel)
    assert bool((g_out[b_real:] == 0).all()) and bool((g_lse[b_real:] == float("inf")).all())


@pytest.mark.gpu
def test_gpu_gluon_falls_back_loudly_without_metadata():
    device = _cuda_device()
    _gluon_ready(device)
    q, k, bt, sl = make_inputs([300, 0, 65], 1, 16, 1, torch.bfloat16, device, seed=5)
    with pytest.warns(UserWarning, match="Gluon Hopper kernel cannot run this call"):
        out, lse = triton_decode.decode_with_config(q, k, bt, sl, 576 ** -0.5, False,
                                                    config=triton_configs.GLUON_CONFIG)
    ref_out, ref_lse = reference_fp32(q, k, bt, sl, 576 ** -0.5, False)
    assert_matches_reference(out, lse, ref_out, ref_lse)


def benchmark_seqlens(b, mean, s_q, varied):
    """perf-targets.md's lengths: all at the mean, or FlashMLA's normal(mean, mean/2) draw."""
    return testing.flashmla_varied_lengths(b, mean, s_q) if varied else [mean] * b


# Benchmark shapes (b, s_q, mean seqlen, h_q, varied), h_kv = 1, causal; the 8192-long rows of
# the table are covered by their 4096 twins (same kernel paths, twice the pages).
GPU_BENCH_SHAPES = [(128, s_q, 4096, h_q, varied) for s_q in (1, 2) for h_q in (16, 32, 64, 128)
                    for varied in (False, True)] + [(1, 1, 4096, 16, False), (1, 1, 4096, 128, False),
                                                    (32, 1, 32768, 128, False)]


@pytest.mark.gpu
@pytest.mark.parametrize("shape", GPU_BENCH_SHAPES, ids=lambda s: "b{}-sq{}-L{}-hq{}-{}".format(
    *s[:4], "varied" if s[4] else "fixed"))
def test_gpu_benchmark_shapes(shape):
    b, s_q, mean, h_q, varied = shape
    device = _cuda_device()
    seqlens = benchmark_seqlens(b, mean, s_q, varied)
    q, k, bt, sl = make_inputs(seqlens, s_q, h_q, 1, torch.bfloat16, device, seed=sum(shape), spare_pages=1)
    import flashmla
    md, ns = flashmla.get_mla_metadata(sl, s_q * h_q, 1)
    out, lse = flashmla.flash_mla_with_kvcache(q, k, bt, sl, 512, md, ns, causal=s_q > 1, backend="triton")
    # bf16 inputs: the reference upcasts one request at a time (the whole cache in fp32 would not fit).
    ref_out, ref_lse = reference.decode(q, k, bt, sl, 576 ** -0.5, s_q > 1)
    assert_matches_reference(out, lse, ref_out, ref_lse, str(shape))


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--interpreter-worker":
    _interpreter_worker(sys.argv[2])


# --------------------------------------------------------------------------- fast relaunch (CPU, fakes)
class _FakeCompiled:
    function, packed_metadata = "fn-handle", "packed"

    def __init__(self):
        self.runs = []

    def launch_metadata(self, grid, stream, *values):
        return None

    def run(self, g0, g1, g2, stream, function, packed, launch_metadata, enter, exit_, *values):
        self.runs.append(((g0, g1, g2), stream, values))


class _FakeJit:
    arg_names = ["a", "b", "n", "BLOCK", "FLAG"]

    def __init__(self):
        self.compiled, self.jit_calls = _FakeCompiled(), []

    def __getitem__(self, grid):
        def call(*args, **consts):
            self.jit_calls.append((grid, args, consts))
            return self.compiled
        return call


def _fake_fast_launch(monkeypatch, stream):
    """_launch as on a GPU host with Triton 3.6 and fast launch on, the stream handle faked."""
    monkeypatch.setattr(triton_decode, "_interpreting", lambda: False)
    monkeypatch.setattr(triton_decode, "_current_stream", lambda device: stream)
    monkeypatch.setattr(triton_decode, "_COMPILED", {})
    monkeypatch.setattr(triton_decode, "FAST_LAUNCH", True)
    monkeypatch.setattr(triton_decode.triton, "__version__", "3.6.0")


def test_fast_relaunch_reuses_the_compiled_kernel_only_when_safe(monkeypatch):
    """First launch of a plan goes through Triton and keeps the compiled kernel; the next one
    calls its launcher with every argument in signature order (constexprs by name, options such
    as num_warps left out) and a 3-d grid; a misaligned pointer or FLASHMLA_TRITON_FAST_LAUNCH=0
    takes Triton's own path."""
    _fake_fast_launch(monkeypatch, stream=1234)
    jit = _FakeJit()
    a, b = torch.zeros(64), torch.zeros(64)
    consts = dict(BLOCK=64, FLAG=True, num_warps=8)
    args = (a, b, 7)
    triton_decode._launch(jit, ("plan", "k"), (3, 2), True, args, consts, torch.device("cpu"))
    assert len(jit.jit_calls) == 1 and jit.compiled.runs == []
    triton_decode._launch(jit, ("plan", "k"), (3, 2), True, args, consts, torch.device("cpu"))
    assert len(jit.jit_calls) == 1
    assert jit.compiled.runs == [((3, 2, 1), 1234, (a, b, 7, 64, True))]
    misaligned = torch.zeros(65)[1:]  # 4-byte offset
    triton_decode._launch(jit, ("plan", "k"), (3, 2), triton_decode._aligned((misaligned, b)), (misaligned, b, 7), consts, torch.device("cpu"))
    assert len(jit.jit_calls) == 2 and len(jit.compiled.runs) == 1
    triton_decode._launch(jit, ("other", "k"), (1,), True, args, consts, torch.device("cpu"))
    assert len(jit.jit_calls) == 3  # a new plan compiles (or looks up) through Triton first
    monkeypatch.setattr(triton_decode, "FAST_LAUNCH", False)
    triton_decode._launch(jit, ("plan", "k"), (3, 2), True, args, consts, torch.device("cpu"))
    assert len(jit.jit_calls) == 4 and len(jit.compiled.runs) == 1


class _FakeLauncher:
    """Triton 3.6's CudaLauncher as _launch sees it: attributes and the C ``launch`` function."""
    launch_cooperative_grid, launch_pdl = False, True
    global_scratch_size = profile_scratch_size = 0

    def __init__(self):
        self.launches = []

    def launch(self, *args):
        self.launches.append(args)

    def __call__(self, *args):
        raise AssertionError("the wrapper should be skipped when it would allocate nothing")


def test_fast_relaunch_calls_the_c_launcher_without_empty_hooks(monkeypatch):
    """With Triton's hook chains empty, a relaunch calls the launcher's C function with the
    arguments Triton's own wrapper would pass (no scratch, no metadata, no hooks); with a hook
    installed it goes through the wrapper with launch metadata."""
    _fake_fast_launch(monkeypatch, stream=99)
    jit = _FakeJit()
    jit.compiled.run = launcher = _FakeLauncher()
    a = torch.zeros(64)
    consts = dict(BLOCK=32, FLAG=False, num_warps=4)
    for _ in range(2):
        triton_decode._launch(jit, ("plan", "k"), (5,), True, (a, a, 3), consts, torch.device("cpu"))
    assert len(jit.jit_calls) == 1
    assert launcher.launches == [(5, 1, 1, 99, "fn-handle", False, True, None, None, "packed", None, None, None,
                                  a, a, 3, 32, False)]
    assert triton_decode._launch_hooks() == (None, None)
    if not hasattr(triton_decode.triton.knobs.runtime.launch_enter_hook, "add"):
        pytest.skip(f"Triton {triton_decode.triton.__version__} keeps no HookChain: hook half not checked")
    hook = lambda metadata: None  # noqa: E731
    triton_decode.triton.knobs.runtime.launch_enter_hook.add(hook)
    try:
        assert triton_decode._launch_hooks()[0] is triton_decode.triton.knobs.runtime.launch_enter_hook
        with pytest.raises(AssertionError, match="wrapper should be skipped"):
            triton_decode._launch(jit, ("plan", "k"), (5,), True, (a, a, 3), consts, torch.device("cpu"))
    finally:
        triton_decode.triton.knobs.runtime.launch_enter_hook.remove(hook)


def test_gluon_kernel_compiles_for_sm90a_without_a_gpu():
    """The Hopper kernel through Triton's compiler and the ptxas Triton ships (as on a GPU host):
    fits shared memory, three register budgets (loader 24, warpgroup 1 WG1_REGS, warpgroup 0 the
    rest = 256), and no wgmma that ptxas had to serialise (C7510/C7511/C7517/C7520)."""
    from flashmla import triton_hopper
    if triton_hopper.gluon is None:
        pytest.skip(triton_hopper._IMPORT_ERROR)
    for dtype in ("bf16", "fp16"):
        res = triton_hopper.offline_resources(dtype)
        assert res["shared_bytes"] <= 227 * 1024, res
        budgets = {int(n) for _, n in res["setmaxnreg"]}
        assert {24, triton_hopper._int(triton_hopper.WG1_REGS), 256} <= budgets, res["setmaxnreg"]
        assert not res["warnings"], res["warnings"]
        print(f"gluon kernel {dtype}: {res['shared_bytes']} B shared, {res['n_spills']} spilled words")


def test_gluon_offline_compile_under_the_interpreter(monkeypatch, tmp_path):
    """The notebooks set TRITON_INTERPRET=1 on a CPU; the offline sm_90a compile must still work
    there (it runs in a child process without the variable). A warm Triton cache once hid its
    failure: the cache is pointed at an empty folder here."""
    from flashmla import triton_hopper
    if triton_hopper.gluon is None:
        pytest.skip(triton_hopper._IMPORT_ERROR)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    res = triton_hopper.offline_resources("bf16")
    assert "compiled" not in res
    assert 0 < res["shared_bytes"] <= 227 * 1024, res
    assert {24, 256} <= {int(n) for _, n in res["setmaxnreg"]}, res["setmaxnreg"]


def test_gluon_kernel_only_on_the_tested_triton(monkeypatch):
    """Gluon's API moves between Triton releases: another version gets the portable kernel, with
    the reason (what kernel_config and the benchmark's skip line report)."""
    from flashmla import triton_hopper
    if triton_hopper.gluon is None:
        pytest.skip(triton_hopper._IMPORT_ERROR)
    monkeypatch.setattr(triton_hopper.triton, "__version__", "3.7.0")
    ok, why = triton_hopper.is_available(torch.device("cuda", 0))
    assert not ok and "3.7.0" in why and "portable" in why


def test_kept_tensor_descriptor_is_spliced_as_tritons_wrapper_does():
    """The Gluon kernel's relaunch calls the C launcher under Triton's tensor-descriptor wrapper
    with the descriptor's launch arguments built once: same call as the wrapper's."""
    from types import SimpleNamespace
    driver = pytest.importorskip("triton.backends.nvidia.driver")
    calls = []

    def c_launch(*args):
        calls.append(args)
    signature = {"q_ptr": "*bf16", "kv_desc": "tensordesc<bf16[64, 64],layout>", "n": "i32", "x": "fp32"}
    wrapped = driver.wrap_handle_tensordesc(c_launch, signature, None)
    raw, descriptors = triton_decode._unwrapped_launch(wrapped)
    assert raw is c_launch and list(descriptors) == [1]
    desc = SimpleNamespace(base="cache", shape=[6400, 576], strides=[576, 1], padding="zero")
    head = tuple(f"head{i}" for i in range(driver._BASE_ARGS_FORMAT_LEN))
    args = ("q", desc, 7, 0.5)
    wrapped(*head, *args)
    (index, meta), = descriptors.items()
    spliced = args[:index] + triton_decode._expanded_descriptor(desc, meta) + args[index + 1:]
    raw(*head, *spliced)
    assert calls[0] == calls[1] and "cache" in calls[1]
    assert triton_decode._expanded_descriptor(desc, meta) is desc._flashmla_launch_args  # built once
    assert triton_decode._unwrapped_launch(c_launch) == (c_launch, {})  # no wrapper: as it is


def test_no_fast_relaunch_on_an_unchecked_triton_version(monkeypatch):
    monkeypatch.setattr(triton_decode, "_interpreting", lambda: False)
    monkeypatch.setattr(triton_decode, "_COMPILED", {})
    monkeypatch.setattr(triton_decode.triton, "__version__", "3.1.0")
    jit = _FakeJit()
    a = torch.zeros(64)
    for _ in range(2):
        triton_decode._launch(jit, ("plan", "k"), (1,), True, (a, a, 1), dict(BLOCK=1, FLAG=0), torch.device("cpu"))
    assert len(jit.jit_calls) == 2 and triton_decode._COMPILED == {}


def test_no_fast_relaunch_under_the_interpreter(monkeypatch):
    monkeypatch.setattr(triton_decode, "_interpreting", lambda: True)
    monkeypatch.setattr(triton_decode, "_COMPILED", {})
    jit = _FakeJit()
    a = torch.zeros(64)
    for _ in range(2):
        triton_decode._launch(jit, ("plan", "k"), (1,), True, (a, a, 1), dict(BLOCK=1, FLAG=0), torch.device("cpu"))
    assert len(jit.jit_calls) == 2 and triton_decode._COMPILED == {}


@pytest.mark.gpu
@pytest.mark.parametrize("plan", ["metadata", "own", "gluon"])
def test_gpu_fast_relaunch_matches_reference(plan, monkeypatch):
    """Same launch plan, new data each time: the first call goes through Triton, the later ones
    through the kept kernels' launchers (asserted), inside and outside a CUDA graph; each output
    is checked against the reference, and the fast path gives the bits of the ordinary one.
    "gluon": the Hopper kernel, whose relaunch splices in the new cache's TMA descriptor."""
    import flashmla
    monkeypatch.setattr(triton_decode, "_COMPILED", {})
    monkeypatch.setattr(triton_decode, "FAST_LAUNCH", True)
    fast_launches = []
    real_stream = triton_decode._current_stream
    monkeypatch.setattr(triton_decode, "_current_stream", lambda d: fast_launches.append(1) or real_stream(d))
    device = _cuda_device()
    if plan == "gluon":
        _gluon_ready(device)
        config = triton_configs.GLUON_CONFIG
    else:
        config = dataclasses.replace(triton_decode.kernel_config(device, 2 * 16, portable=True), plan=plan)
    seqlens = [300, 0, 64, 65, 1, 700]
    for seed in range(3):
        q, k, bt, sl = make_inputs(seqlens, 2, 16, 1, torch.bfloat16, device, seed=40 + seed)
        md, ns = flashmla.get_mla_metadata(sl, 2 * 16, 1, num_sms=7)
        out, lse = triton_decode.decode_with_config(q, k, bt, sl, 576 ** -0.5, True, config=config,
                                                    tile_scheduler_metadata=md, num_splits=ns)
        ref_out, ref_lse = reference_fp32(q, k, bt, sl, 576 ** -0.5, True)
        assert_matches_reference(out, lse, ref_out, ref_lse, f"seed {seed}")
        assert len(triton_decode._COMPILED) >= 1, "the first launch kept no compiled kernel"
        assert (len(fast_launches) > 0) == (seed > 0), f"seed {seed}: {len(fast_launches)} direct launches"
    monkeypatch.setattr(triton_decode, "FAST_LAUNCH", False)
    slow_out, slow_lse = triton_decode.decode_with_config(q, k, bt, sl, 576 ** -0.5, True, config=config,
                                                          tile_scheduler_metadata=md, num_splits=ns)
    assert torch.equal(out, slow_out) and torch.equal(lse, slow_lse)
    monkeypatch.setattr(triton_decode, "FAST_LAUNCH", True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        g_out, g_lse = triton_decode.decode_with_config(q, k, bt, sl, 576 ** -0.5, True, config=config,
                                                        tile_scheduler_metadata=md, num_splits=ns)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(g_out, slow_out) and torch.equal(g_lse, slow_lse)
