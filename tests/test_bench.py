"""flashmla.bench on the CPU: data generation, counts, the fp32 reference, the vLLM file loader,
and the whole pipeline (torch reference + our Triton kernel in the Triton interpreter on tiny
shapes -> CSV, markdown, plots, skip reasons), including recovery from a crashing provider.

The pipeline runs in child processes (``python -m flashmla.bench``) because the Triton
interpreter must be switched on before triton is first imported.
"""
from __future__ import annotations

import csv
import importlib.util
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flashmla.bench import providers as P
from flashmla.bench import report, runner
from flashmla.bench import shapes as S

REPO = Path(__file__).resolve().parents[1]
INTERPRETER_BROKEN = "0-dimensional arrays"  # Triton 3.6's interpreter with numpy >= 2.4


# --------------------------------------------------------------------------- shapes and data
def test_varied_lengths_are_flashmlas_generator():
    random.seed(0)
    expected = [max(int(random.normalvariate(4096, 2048)), 2) for _ in range(128)]
    random.seed(12345)
    state = random.getstate()
    assert S.flashmla_varied_lengths(128, 4096, 2) == expected
    assert random.getstate() == state, "the generator must not disturb the caller's random state"
    assert S.Shape(128, 2, 4096, 64, varlen=True).seqlens() == expected
    assert S.Shape(4, 1, 100, 16).seqlens() == [100] * 4


def test_inputs_follow_perf_targets():
    shape = S.Shape(3, 2, 150, 16, varlen=True)
    x = S.make_inputs(shape, "cpu", seed=1, spare_pages=2)
    lens = x.seqlens
    assert x.cache_seqlens.tolist() == lens and x.cache_seqlens.dtype == torch.int32
    assert x.q.shape == (3, 2, 16, 576) and x.q.dtype == torch.bfloat16
    assert x.block_table.dtype == torch.int32 and x.block_table.is_contiguous()
    assert bool(torch.isfinite(x.q).all()) and float(x.q.abs().max()) <= 1.0 and float(x.q.float().std()) > 0.05
    pages = [math.ceil(n / 64) for n in lens]
    used = [int(p) for i, n in enumerate(pages) for p in x.block_table[i, :n]]
    assert sorted(used + []) == sorted(set(used)), "a page is shared between requests"
    assert x.k_cache.shape[0] == len(used) + 2
    assert used != sorted(used), "pages should be a random permutation, not in order"
    for i, n in enumerate(pages):
        tail = x.block_table[i, n:].tolist()
        assert tail and all(v < 0 or v >= x.k_cache.shape[0] for v in tail), "unused slots must hold garbage"
    # Rows in use are finite, randn/10 clamped; the unused tail of each last page and spare pages are NaN.
    for i, n in enumerate(lens):
        rows = x.k_cache[x.block_table[i, :pages[i]].long()].reshape(-1, 1, 576)
        assert bool(torch.isfinite(rows[:n]).all()) and float(rows[:n].abs().max()) <= 1.0
        assert bool(torch.isnan(rows[n:]).all())
    spare = sorted(set(range(x.k_cache.shape[0])) - set(used))
    assert len(spare) == 2 and bool(torch.isnan(x.k_cache[spare]).all())
    # Deterministic for a seed.
    y = S.make_inputs(shape, "cpu", seed=1, spare_pages=2)
    assert torch.equal(x.block_table, y.block_table) and torch.equal(x.q, y.q)


def test_flops_and_bytes_match_flashmlas_counts():
    shape = S.Shape(128, 2, 8192, 128)
    lens = shape.seqlens()
    assert S.flops(shape, lens) == 2 * 2 * (128 * 8192) * 128 * (576 + 512)
    assert S.bytes_moved(shape, lens) == 2 * (128 * 8192 * 576 + 128 * 2 * 128 * (576 + 512))
    # perf-targets.md: FlashMLA 0.8759 ms on this row = 667 TFLOPS
    assert round(S.flops(shape, lens) / 0.8759e-3 / 1e12) == 667


def test_targets_csv_is_perf_targets_table():
    rows = S.load_targets()
    for gpu in ("H100", "H200"):
        mine = [r for r in rows if r["gpu"] == gpu]
        assert len(mine) == 35
        for r in mine:
            assert r["best_ms"] == min(r["flashmla_ms"], r["flashinfer_fa3_ms"])
            assert abs(r["target_ms"] - r["best_ms"] / 0.9) <= 1e-4  # 4 decimals, rounded either way
    table = S.suite("table")
    assert len(table) == 35 and S.Shape(32, 1, 32768, 128) in table
    assert S.anchors(S.Shape(128, 2, 8192, 128), "H100")["target_ms"] == 0.9732
    assert S.anchors(S.Shape(128, 2, 8192, 128), None) is None
    assert S.target_table_for("NVIDIA H100 80GB HBM3") == "H100"
    assert S.target_table_for("NVIDIA H200") == "H200"
    assert S.target_table_for("NVIDIA A100-SXM4-80GB") is None


def test_suites_and_parsing():
    sweep = S.suite("sweep")
    assert {s.seqlen for s in sweep} == {1024, 2048, 4096, 8192, 16384, 32768}
    assert {s.h_q for s in sweep} == {16, 128} and all(s.b == 128 for s in sweep)
    everything = S.suite("all")
    assert len(everything) == len(set(everything))
    assert set(S.suite("table")) <= set(everything)
    s = S.parse_shape("b=128,s_q=2,seqlen=8K,h_q=64,varlen=1")
    assert s == S.Shape(128, 2, 8192, 64, varlen=True)
    assert S.parse_shape("128,2,8192,64,1") == s
    assert S.parse_shape(s.key) == s
    for bad in ("b=1,s_q=1,seqlen=64", "b=1,s_q=1,seqlen=64,h_q=16,bogus=3", "1,2,3", "b=0,s_q=1,seqlen=64,h_q=16"):
        with pytest.raises(ValueError):
            S.parse_shape(bad)
    with pytest.raises(ValueError, match="unknown suite"):
        S.suite("nope")
    with pytest.raises(ValueError, match="unknown provider"):
        P.get_providers(["flashmla-cuda", "nope"])
    assert [p.name for p in P.get_providers(["flashinfer"])] == ["flashinfer-fa3", "flashinfer-fa2"]


# --------------------------------------------------------------------------- reference
@pytest.mark.parametrize("seqlens,s_q,h_q,h_kv,causal", [
    ([70, 129], 1, 16, 1, True),
    ([200, 3, 64], 2, 8, 1, True),
    ([150, 0], 3, 4, 2, True),
    ([90, 90], 2, 16, 1, False),
])
def test_bench_reference_matches_the_oracle(seqlens, s_q, h_q, h_kv, causal):
    from flashmla import reference
    from flashmla.testing import make_decode_inputs
    gen = torch.Generator().manual_seed(7)
    x = make_decode_inputs(seqlens, s_q, h_q, h_kv, generator=gen)
    scale = 576 ** -0.5
    out, lse = P.reference_decode(x.q, x.k_cache, x.block_table, x.cache_seqlens, scale, causal)
    ref_out, ref_lse = reference.decode(x.q, x.k_cache, x.block_table, x.cache_seqlens, scale, causal)
    assert out.dtype == ref_out.dtype and lse.shape == ref_lse.shape
    assert torch.allclose(out.float(), ref_out.float(), atol=2e-3, rtol=1e-2)
    assert torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    fin = torch.isfinite(ref_lse)
    assert torch.allclose(lse[fin], ref_lse[fin], atol=1e-5, rtol=1e-5)


def test_compare_and_check():
    ref = torch.randn(2, 1, 4, 512)
    lse = torch.randn(2, 4, 1)
    err = runner.compare(ref.to(torch.bfloat16), lse, ref, lse)
    assert runner.check_passes(err)[0] and err["err_rel_l2"] < 5e-3 and err["err_lse"] == 0
    bad = ref.clone()
    bad[0, 0, 0, 0] = float("nan")
    ok, why = runner.check_passes(runner.compare(bad, lse, ref, lse))
    assert not ok and "NaN" in why
    ok, why = runner.check_passes(runner.compare(ref * 1.1, lse, ref, lse))
    assert not ok and "relative L2" in why
    ok, why = runner.check_passes(runner.compare(ref, lse + 0.1, ref, lse))
    assert not ok and "lse" in why


# --------------------------------------------------------------------------- vLLM file loading
FAKE_TRITON_OP = '''"""stand-in for vLLM's file, same two vLLM imports"""
import torch

from vllm.platforms import current_platform
from vllm.triton_utils import tl, triton

is_hip_ = current_platform.is_rocm()


def decode_attention_fwd(*args, **kwargs):
    return "called"
'''


def _fake_vllm_tree(root: Path, text: str) -> Path:
    f = root / "vllm" / "v1" / "attention" / "ops" / "triton_decode_attention.py"
    f.parent.mkdir(parents=True)
    f.write_text(text)
    (root / "vllm" / "_version.py").write_text("__version__ = version = '9.8.7'\n")
    return f


def test_vllm_triton_file_loads_without_vllm(tmp_path, monkeypatch):
    pytest.importorskip("triton", reason="Triton is not installed (the vllm-triton provider needs it)")
    monkeypatch.setenv(P.VLLM_KERNELS_ENV, str(tmp_path))
    monkeypatch.setenv("FLASHMLA_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delitem(sys.modules, "flashmla_bench_vllm_triton_decode", raising=False)
    _fake_vllm_tree(tmp_path, FAKE_TRITON_OP)
    vllm_was_imported = "vllm.platforms" in sys.modules  # other tests of the session may import vLLM
    prov = P.VllmTritonMLA()
    module = prov._load()
    assert module is not None, prov._error
    assert module.decode_attention_fwd() == "called" and module.is_hip_ is False
    assert vllm_was_imported or "vllm.platforms" not in sys.modules, "the loader must not import vLLM"
    assert prov.version() == "vllm 9.8.7 triton_decode_attention"
    ok, why = prov.availability(torch.device("cpu"))
    assert not ok and "CUDA" in why
    monkeypatch.delitem(sys.modules, "flashmla_bench_vllm_triton_decode", raising=False)


def test_vllm_file_changed_upstream_is_a_skip_reason(tmp_path, monkeypatch):
    monkeypatch.setenv(P.VLLM_KERNELS_ENV, str(tmp_path))
    monkeypatch.setenv("FLASHMLA_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delitem(sys.modules, "flashmla_bench_vllm_triton_decode", raising=False)
    _fake_vllm_tree(tmp_path, FAKE_TRITON_OP.replace("from vllm.triton_utils import tl, triton", "import triton"))
    prov = P.VllmTritonMLA()
    assert prov._load() is None
    assert "changed upstream" in prov._error or "triton is not importable" in prov._error


def test_missing_vllm_kernels_are_a_skip_reason(tmp_path, monkeypatch):
    monkeypatch.setenv(P.VLLM_KERNELS_ENV, str(tmp_path / "nowhere"))
    find_spec = importlib.util.find_spec  # hide an installed vLLM (CI installs one for the plugin tests)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: None if name == "vllm" else find_spec(name, *a, **k))
    path, why = P.find_vllm_file("_flashmla_C.abi3.so")
    assert path is None and "nowhere" in why
    assert P._vllm_num_kv_splits(32768, 132) == 64  # vLLM 0.26: next_pow2(32768 // 512), cap 264
    assert P._vllm_num_kv_splits(100, 132) == 1 and P._vllm_num_kv_splits(1 << 20, 4) == 8


def test_missing_flashmla_head_build_says_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.setenv(P.FLASHMLA_HEAD_ENV, str(tmp_path / "libflashmla_head.so"))
    prov = P.FlashMLAHead()
    assert prov._load() is None and "build_flashmla_head.sh" in prov._error
    ok, why = prov.availability(torch.device("cpu"))
    assert not ok and "CUDA" in why
    fp16 = S.Shape(b=1, s_q=1, seqlen=64, h_q=16, dtype="fp16")
    assert not prov.supports(fp16)[0] and not prov.supports(S.Shape(b=1, s_q=1, seqlen=64, h_q=16, h_kv=2))[0]


def _timed_row(provider, ms, key="k"):
    return {"key": key, "shape": key, "provider": provider, "status": "ok", "ms": ms}


def test_same_run_bar_uses_the_faster_rival_measured_beside_ours():
    rows = [_timed_row("flashmla-cuda", 1.00), _timed_row("flashmla-head", 0.95), _timed_row("flashinfer-fa3", 1.10),
            _timed_row("flash_mla", 0.50),  # not a rival of the bar: only FlashMLA at the pinned commit and fa3
            _timed_row("flashmla-cuda", 1.00, "slow"), _timed_row("flashmla-head", 0.85, "slow"),
            _timed_row("flashinfer-fa3", 0.99, "slow"),
            _timed_row("flashmla-cuda", 1.00, "no-head"), _timed_row("flashinfer-fa3", 0.50, "no-head")]
    report.add_comparisons(rows)
    ours = {r["key"]: r for r in rows if r["provider"] == "flashmla-cuda"}
    assert ours["k"]["same_run_best"] == "flashmla-head" and ours["k"]["same_run_target_ms"] == pytest.approx(0.95 / 0.9)
    assert ours["k"]["same_run_met"] is True and ours["k"]["best_other"] == "flash_mla"
    assert ours["slow"]["same_run_met"] is False and ours["slow"]["same_run_target_ms"] == pytest.approx(0.85 / 0.9)
    assert "same_run_met" not in ours["no-head"], "no bar without both rivals timed in the same run"
    table = report.results_table(rows)
    assert "same-run bar ms" in table and "| 1.0556 | yes |" in table and "| 0.9444 | NO |" in table


# --------------------------------------------------------------------------- the pipeline
def _run_cli(args, tmp, extra_env=None, timeout=240):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FLASHMLA_BENCH_CACHE": str(tmp / "cache"), **(extra_env or {})}
    env.pop("TRITON_INTERPRET", None)
    env.pop(P.VLLM_KERNELS_ENV, None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.run([sys.executable, "-m", "flashmla.bench", *args], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "out"
    proc = _run_cli(["--device", "cpu", "--suite", "tiny", "--out", str(out), "--cpu-reps", "1", "--no-e2e",
                     "--providers", "torch,flashmla-triton,flashmla-triton-portable,flashmla-cuda,flashinfer,"
                     "flashmla-head,flash_mla,vllm-triton"], tmp)
    assert proc.returncode in (0, 1), f"bench CLI crashed:\n{proc.stdout}\n{proc.stderr}"
    with open(out / "bench.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return proc, out, rows


def test_pipeline_writes_every_row_and_column(cpu_run):
    proc, out, rows = cpu_run
    with open(out / "bench.csv", newline="") as f:
        assert next(csv.reader(f)) == report.COLUMNS
    tiny = S.suite("tiny")
    expected = {(s.key, p) for s in tiny for p in P.PROVIDER_NAMES}
    assert {(r["key"], r["provider"]) for r in rows} == expected and len(rows) == len(expected)
    for r in rows:
        assert r["status"] in ("ok", "skipped", "failed", "mismatch"), r
        assert r["gpu"] == "cpu" and r["date"] and r["torch"] == torch.__version__
        if r["status"] != "ok":
            assert r["reason"], f"{r['provider']} on {r['shape']}: status {r['status']} without a reason"
    for r in (r for r in rows if r["provider"] == "torch"):
        assert r["status"] == "ok" and float(r["ms"]) > 0 and float(r["gbps"]) > 0 and float(r["tflops"]) > 0
    # No GPU here: these must be skipped, each with its reason, and the run still completes.
    for name, words in (("flashinfer-fa3", "CUDA"), ("flashinfer-fa2", "CUDA"), ("flash_mla", "CUDA"),
                        ("flashmla-head", "CUDA"), ("vllm-triton", "CUDA")):
        mine = [r for r in rows if r["provider"] == name]
        assert all(r["status"] == "skipped" and words in r["reason"] for r in mine), mine[0]
    cuda_rows = [r for r in rows if r["provider"] == "flashmla-cuda"]
    assert all(r["status"] == "skipped" and r["reason"] for r in cuda_rows)
    md = (out / "bench.md").read_text()
    assert "## Providers" in md and "skipped:" in md and "| b2 s1 128 h16 fix |" in md
    assert "shape (b s_q len h_q)" in proc.stdout, "the results table is printed last"


def test_pipeline_plots(cpu_run):
    _, out, rows = cpu_run
    for name in ("gbps_vs_seqlen.png", "tflops_vs_heads.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    ok = [r for r in rows if r["status"] == "ok" and r["provider"] != "torch"]
    if ok:
        assert (out / "speedup_vs_best_other.png").read_bytes()[:4] == b"\x89PNG"
        assert all(r["best_other"] and float(r["speedup_vs_best_other"]) > 0 for r in ok)


def test_pipeline_runs_our_triton_kernel_in_the_interpreter(cpu_run):
    pytest.importorskip("triton", reason="Triton is not installed: the flashmla-triton provider cannot run")
    if not (REPO / "flashmla" / "triton_decode.py").exists():
        pytest.skip("flashmla/triton_decode.py does not exist yet")
    _, _, rows = cpu_run
    mine = [r for r in rows if r["provider"] == "flashmla-triton"]
    broken = [r for r in mine if INTERPRETER_BROKEN in r["reason"]
              or (r["status"] == "skipped" and "interpreter" in r["reason"])]
    if broken:
        pytest.skip(f"Triton's interpreter is broken in this environment (Triton 3.6 needs numpy < 2.4): "
                    f"{broken[0]['reason']}")
    assert len(mine) == len(S.suite("tiny"))
    for r in mine:
        assert r["status"] == "ok", f"{r['shape']}: {r['status']}: {r['reason']}"
        assert float(r["err_rel_l2"]) < runner.OUT_TOLERANCE and float(r["ms"]) > 0


def test_supervisor_survives_a_crashing_provider(tmp_path):
    out = tmp_path / "out"
    proc = _run_cli(["--device", "cpu", "--isolate", "--suite", "tiny", "--providers", "torch", "--cpu-reps", "1",
                     "--out", str(out), "--no-plots", "--table", "none"], tmp_path,
                    extra_env={"FLASHMLA_BENCH_INJECT_CRASH": "torch|seqlen=320"})
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "restarting" in proc.stdout
    rows = report.read_csv(out / "bench.csv")
    by_len = {(r["mean_seqlen"], r["h_q"]): r for r in rows}
    assert len(rows) == len(S.suite("tiny"))
    assert by_len[("320", "16")]["status"] == "crashed" and "worker process" in by_len[("320", "16")]["reason"]
    others = [r for r in rows if r["mean_seqlen"] != "320"]
    assert others and all(r["status"] == "ok" and float(r["ms"]) > 0 for r in others)


# --------------------------------------------------------------------------- on a GPU
@pytest.mark.gpu
def test_gpu_providers_agree_on_small_shapes(tmp_path):
    """Every provider available on this GPU (FlashInfer left out: its JIT takes ~50 s; the full
    benchmark covers it) matches the reference and gets a time; the others say why not."""
    from flashmla.bench import run_benchmark
    names = ["torch", "flashmla-cuda", "flashmla-triton", "flashmla-head", "flash_mla", "vllm-triton"]
    result, files = run_benchmark(shapes=["b=4,s_q=1,seqlen=700,h_q=16", "b=3,s_q=2,seqlen=300,h_q=128,varlen=1"],
                                  providers=names, device="cuda", out_dir=tmp_path, isolate=False,
                                  warmup_ms=5, rep_ms=10, ceilings=False, log=lambda msg: None)
    rows = result.rows
    assert len(rows) == 2 * len(names)
    for r in rows:
        info = result.providers[r["provider"]]
        if info["available"]:
            assert r["status"] == "ok", f"{r['provider']} on {r['shape']}: {r['status']}: {r['reason']}"
            assert r["ms"] > 0 and (r["provider"] == "torch" or r["err_rel_l2"] < runner.OUT_TOLERANCE)
        else:
            assert r["status"] == "skipped" and r["reason"]
    assert files["csv"].exists() and files["md"].exists()


def test_cli_shape_specs_keep_their_commas(capsys):
    """Each --shape is one spec (its fields are comma-separated); repeated flags add shapes."""
    from flashmla.bench.__main__ import main
    assert main(["--shape", "2,1,100,16", "--shape", "b=2,s_q=2,seqlen=300,h_q=32,varlen=1",
                 "--list-shapes", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "b=2,s_q=1,seqlen=100,h_q=16,varlen=0" in out
    assert "b=2,s_q=2,seqlen=300,h_q=32,varlen=1" in out
    assert "2 shapes" in out


def test_bench_summary_reads_the_recorded_run():
    """scripts/bench_summary.py (the README table and the numbers quoted from a run) agrees with the
    recorded CSV it reads: one table row per perf-targets.md row, each 'met' cell the CSV's flag."""
    repo = Path(__file__).resolve().parent.parent
    run = sorted((repo / "benchmarks" / "results").glob("bench_h100_*_session*/bench.csv"))[-1]
    spec = importlib.util.spec_from_file_location("bench_summary", repo / "scripts" / "bench_summary.py")
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)
    rows = summary.load(str(run))
    table = summary.readme_table(rows).splitlines()[2:]
    targets = [r for r in csv.DictReader(open(run)) if r["provider"] == "flashmla-cuda" and r["target_ms"]]
    assert len(table) == len(targets) == 35
    for line, r in zip(table, targets):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == r["shape"]
        assert cells[1].split()[0] == f"{float(r['ms']):.4f}"
        assert cells[10] == ("yes" if r["target_met"] == "1" else "**no**")
    met = sum(r["target_met"] == "1" for r in targets)
    assert summary.summary(rows).startswith(f"targets met: {met} of 35")


def test_settle_idles_before_every_timed_provider(monkeypatch, tmp_path):
    """--settle S: the same idle before each provider's timing (after its check), none for rows
    that are not timed; the report's timing line says so."""
    from flashmla.bench import runner
    sleeps = []
    monkeypatch.setattr(runner, "settle", lambda device, seconds: sleeps.append(seconds))
    config = runner.BenchConfig(shapes=[S.parse_shape("2,1,100,16")], providers=["torch", "flashmla-cuda"],
                                device="cpu", cpu_reps=1, e2e=False, ceilings=False, isolate=False, settle_s=0.25)
    monkeypatch.setenv("FLASHMLA_BENCH_CACHE", str(tmp_path / "cache"))
    result = runner.run_in_process(config, progress=False, log=lambda msg: None)
    timed = [r for r in result.rows if r["status"] == "ok"]
    assert timed and sleeps == [0.25] * len(timed), (sleeps, [(r["provider"], r["status"]) for r in result.rows])
    assert result.meta["settle_s"] == 0.25
    assert "each provider after 0.25 s idle" in "\n".join(report.environment_lines(result.meta, result.ceilings))
    assert runner.BenchConfig.from_json(config.to_json()).settle_s == 0.25  # the supervised child gets it


def test_power_transient_plot_draws_every_trace(tmp_path):
    """scripts/power_transient.py --plot (no GPU): one panel per shape from the traces' CSV."""
    rows = ["shape,variant,round,call,ms,t_ms,cold_ms,hot_ms"]
    for shape in ('"128,2,8192,128,fix"', '"32,1,32768,128,fix"'):
        for variant, base in (("auto", 0.9), ("head", 0.8)):
            for call in range(200):
                ms = base * (1.1 if call > 80 else 1.0)  # a step down of the clock, as on the H100
                rows.append(f"{shape},{variant},0,{call},{ms},{call * ms:.3f},{base},{base * 1.1}")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "power_transient.py"), "--plot",
                           str(tmp_path / "t.png"), str(tmp_path / "t.csv")], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = (tmp_path / "t.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
