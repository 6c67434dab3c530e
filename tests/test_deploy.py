"""flashmla.deploy on CPU: the shipped V2-Lite config, errors explained, log parsing, outputs."""
import json
import os
import sys
import types
from pathlib import Path

import pytest

from flashmla import deploy


def test_shipped_config_is_deepseek_v2_lite():
    transformers = pytest.importorskip("transformers", reason="transformers not installed (vLLM pulls it in)")
    config = transformers.AutoConfig.from_pretrained(str(deploy.OFFLINE_CONFIG_DIR))
    assert config.model_type == "deepseek_v2"
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (27, 2048, 16)
    assert (config.kv_lora_rank, config.qk_rope_head_dim, config.qk_nope_head_dim, config.v_head_dim) == (512, 64, 128, 128)
    assert config.q_lora_rank is None
    assert (config.n_routed_experts, config.n_shared_experts, config.num_experts_per_tok) == (64, 2, 6)
    assert (config.moe_intermediate_size, config.intermediate_size, config.first_k_dense_replace) == (1408, 10944, 1)
    assert config.vocab_size == 102400
    # MLA row = latent + rope = 576, the kernel's head dim; 15.7 B parameters = 31.4 GB in bf16
    assert config.kv_lora_rank + config.qk_rope_head_dim == 576


def test_parameter_count_matches_the_published_size():
    cfg = json.loads((deploy.OFFLINE_CONFIG_DIR / "config.json").read_text())
    h, layers, heads = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    qk = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
    attn = (h * heads * qk + h * (cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"]) + cfg["kv_lora_rank"]
            + cfg["kv_lora_rank"] * heads * (cfg["qk_nope_head_dim"] + cfg["v_head_dim"])
            + heads * cfg["v_head_dim"] * h)
    expert = 3 * h * cfg["moe_intermediate_size"]
    moe = (cfg["n_routed_experts"] + cfg["n_shared_experts"]) * expert + h * cfg["n_routed_experts"]
    dense = 3 * h * cfg["intermediate_size"]
    total = (layers * (attn + 2 * h) + dense + (layers - 1) * moe + 2 * cfg["vocab_size"] * h + h)
    assert abs(total / 1e9 - 15.7) < 0.1, total
    assert abs(total * 2 / 1e9 - deploy.MODEL_SIZE_GB) < 0.2


def test_no_gpu_is_explained(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(deploy.DeployError, match="no CUDA GPU"):
        deploy.check_gpu(30)
    assert deploy.main(["compare", "--offline", "--out", "/tmp/flashmla-deploy-test"]) == 2


def test_too_little_gpu_memory_is_explained(monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (10 * 2**30, 24 * 2**30))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda: "NVIDIA L4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda: (8, 9))
    with pytest.raises(deploy.DeployError, match=r"10.0 GiB free .* 29.3 GiB"):
        deploy.check_gpu(33)


def test_missing_or_unsupported_vllm_is_explained(monkeypatch):
    from flashmla.vllm_backend import compat
    monkeypatch.setattr(compat, "installed_vllm_version", lambda: None)
    with pytest.raises(deploy.DeployError, match="vLLM is not installed"):
        deploy.check_vllm()
    monkeypatch.setattr(compat, "installed_vllm_version", lambda: "0.7.3")
    with pytest.raises(deploy.DeployError, match="too old"):
        deploy.check_vllm()


def test_unregistered_backend_is_explained(monkeypatch):
    from flashmla.vllm_backend import compat
    import importlib.metadata
    monkeypatch.setattr(compat, "installed_vllm_version", lambda: "0.26.0")
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group=None: [])
    with pytest.raises(deploy.DeployError, match="plugin is not installed"):
        deploy.check_vllm("CUSTOM")
    assert deploy.check_vllm("TRITON_MLA") == "0.26.0"  # built-in backends need no plugin


def _fake_modelscope(monkeypatch, behaviour):
    module = types.ModuleType("modelscope")
    module.snapshot_download = behaviour
    monkeypatch.setitem(sys.modules, "modelscope", module)


def test_modelscope_unreachable_is_explained(monkeypatch, tmp_path, capsys):
    def offline(*args, **kwargs):
        raise ConnectionError("HTTPSConnectionPool(host='www.modelscope.cn', port=443): Max retries exceeded")
    _fake_modelscope(monkeypatch, offline)
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path))
    with pytest.raises(deploy.DeployError, match="ModelScope is unreachable.*--offline"):
        deploy.download_model()
    printed = capsys.readouterr().out
    assert "31 GB" in printed and str(tmp_path) in printed  # size and destination announced first


def test_download_passes_cache_and_returns_the_path(monkeypatch, tmp_path):
    calls = {}

    def fake(model_id, **kwargs):
        calls.update(kwargs, model_id=model_id)
        return str(tmp_path / "snap")
    _fake_modelscope(monkeypatch, fake)
    path = deploy.download_model(cache_dir=str(tmp_path))
    assert path == tmp_path / "snap"
    assert calls["model_id"] == deploy.MODEL_ID and calls["cache_dir"] == str(tmp_path)
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "c"))
    assert deploy.modelscope_cache_dir() == tmp_path / "c"


def test_missing_modelscope_is_explained(monkeypatch):
    monkeypatch.setitem(sys.modules, "modelscope", None)
    with pytest.raises(deploy.DeployError, match="pip install modelscope"):
        deploy.download_model()


def test_local_model_dir_needs_a_config(tmp_path):
    with pytest.raises(deploy.DeployError, match="no config.json"):
        deploy.resolve_model(str(tmp_path), offline=False)
    (tmp_path / "config.json").write_text("{}")
    assert deploy.resolve_model(str(tmp_path), offline=False) == tmp_path
    assert deploy.resolve_model(None, offline=True) == deploy.OFFLINE_CONFIG_DIR


@pytest.mark.parametrize("log, expected", [
    ("INFO 11-22 [cuda.py:422] Using AttentionBackendEnum.CUSTOM backend.\n"
     "flashmla vLLM backend active: kernel=cuda on cuda:0 (FLASHMLA_VLLM_KERNEL=auto)\n", "CUSTOM (flashmla kernel=cuda)"),
    ("(EngineCore pid=1) INFO [cuda.py:422] Using AttentionBackendEnum.TRITON_MLA backend.\n", "TRITON_MLA"),
    ("INFO Using FLASHMLA attention backend out of potential backends: [FLASHMLA, TRITON_MLA].\n", "FLASHMLA"),
    ("nothing here", "unknown"),
])
def test_backend_used_is_read_from_the_log(log, expected):
    assert deploy.backend_used(log) == expected


def test_random_prompts_are_deterministic_token_ids():
    a = deploy.random_prompt_ids(3, 17, seed=1)
    assert a == deploy.random_prompt_ids(3, 17, seed=1) != deploy.random_prompt_ids(3, 17, seed=2)
    assert all(len(p) == 17 and all(1000 <= t < 102400 for t in p) for p in a)


def test_outputs_table_csv_json_plot(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib not installed")
    records = []
    for label, ms in [("ours", 8.1), ("triton_mla", 13.0), ("flashmla", 8.5)]:
        results = [dict(scenario=s, backend=label, prompts=p, prompt_tokens=p * n, generated_tokens=65 * p,
                        wall_s=1.0 + ms / 10, output_tok_s=65 * p / (1 + ms / 10), ttft_s=0.05, decode_ms_per_step=ms,
                        decode_ms_wall=ms * 1.01, decode_method="engine timestamps", decode_clean=True,
                        decode_steps=128, lead_in_steps=17, repetitions=3, per_repetition=[])
                   for s, p, n in [("single", 1, 512), ("batch", 64, 3072)]]
        records.append({"label": label, "backend_used": label.upper(), "results": results})
    written = deploy.write_outputs(records, tmp_path, "t", {"x": 1})
    assert len(written["rows"]) == 6
    for suffix in ("json", "csv", "md", "png"):
        assert (tmp_path / f"t.{suffix}").stat().st_size > 0
    md = (tmp_path / "t.md").read_text()
    assert "decode_ms_per_step" in md and "| ours | OURS | batch | 64 |" in md
    assert "decode_ms_wall" in md and "| True | 3 |" in md and "engine-core timestamps" in md
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert [r["decode_ms_per_step"] for r in rows if r["scenario"] == "batch"] == [8.1, 13.0, 8.5]


def test_table_reads_records_written_before_the_decode_only_method(tmp_path):
    """The committed 2026-11-23 JSON has no decode_ms_wall / decode_clean: the table still renders."""
    old = dict(scenario="batch", backend="x", prompts=64, prompt_tokens=196608, generated_tokens=4160, wall_s=2.9,
               output_tok_s=1420.8, ttft_s=1.4, decode_ms_per_step=22.7, repetitions=3, per_repetition=[])
    rows = deploy.results_table([{"label": "flashmla", "backend_used": "FLASHMLA", "results": [old]}])
    assert rows[0]["decode_clean"] is None and rows[0]["decode_ms_wall"] != rows[0]["decode_ms_wall"]  # NaN


def test_failure_in_a_worker_is_reported_not_hidden(tmp_path, monkeypatch):
    """A worker that dies leaves its explanation in the record (no silent missing row)."""
    import subprocess as sp

    def fake_run(cmd, stdout, **kwargs):
        stdout.write("DeployError: the GPU ran out of memory building the engine\n")
        return types.SimpleNamespace(returncode=2)
    monkeypatch.setattr(sp, "run", fake_run)
    args = deploy.build_parser().parse_args(["compare", "--offline", "--out", str(tmp_path)])
    record = deploy.run_backend_process("ours", args, tmp_path)
    assert record["rc"] == 2 and "out of memory" in record["error"]


# --------------------------------------------------------------------------- decode-step measurement
class FakeClock:
    def __init__(self):
        self.now = 100.0

    def read(self):
        return self.now


class FakeEngine:
    """A stand-in for ``vllm.LLM`` with vLLM's chunked-prefill scheduling on a simulated clock:
    each engine step first gives one token to every decoding request, then fills the rest of the
    token budget with prefill chunks in arrival order; a request's first token comes with its last
    prefill chunk. A step costs ``decode_ms(batch)`` for its decoding requests plus
    ``prefill_ms_per_token`` per prefill token (times a random jitter, so prefill time varies from
    call to call as on a GPU) plus host time in ``generate()`` outside the engine. Outputs carry
    vLLM's ``RequestStateStats`` fields with engine timestamps."""

    def __init__(self, clock, budget=16384, decode_ms=lambda batch: 2.0 + 0.1 * batch, prefill_ms_per_token=0.01,
                 jitter=0.05, host_s=0.02, metrics=True, seed=0):
        import random
        self.clock, self.budget, self.decode_ms = clock, budget, decode_ms
        self.prefill_ms_per_token, self.jitter = prefill_ms_per_token, jitter
        self.host_s, self.metrics = host_s, metrics
        self.rng = random.Random(seed)
        self.calls = []

    def generate(self, prompts, params, use_tqdm=True):
        assert use_tqdm is False
        self.calls.append(params.max_tokens)
        start = self.clock.now
        self.clock.now += self.host_s * self.rng.random()
        reqs = [dict(left=len(p["prompt_token_ids"]), n=0, first=0.0, last=0.0, ttft=0.0) for p in prompts]
        while any(r["n"] < params.max_tokens for r in reqs):
            decoding = [r for r in reqs if r["left"] == 0 and 0 < r["n"] < params.max_tokens]
            budget = self.budget - len(decoding)
            prefilled, prefill_tokens = [], 0
            for r in reqs:
                if r["left"] > 0 and budget > 0:
                    take = min(r["left"], budget)
                    r["left"] -= take
                    budget -= take
                    prefill_tokens += take
                    if r["left"] == 0:
                        prefilled.append(r)
            cost_ms = self.prefill_ms_per_token * prefill_tokens * (1 + self.jitter * self.rng.random())
            cost_ms += self.decode_ms(len(decoding)) if decoding else 0.0
            self.clock.now += cost_ms / 1e3
            for r in decoding:
                r["n"] += 1
                r["last"] = self.clock.now
            for r in prefilled:
                r["n"], r["first"], r["last"], r["ttft"] = 1, self.clock.now, self.clock.now, self.clock.now - start
        self.clock.now += self.host_s * self.rng.random()
        return [types.SimpleNamespace(
            outputs=[types.SimpleNamespace(token_ids=list(range(r["n"])))],
            metrics=types.SimpleNamespace(first_token_latency=r["ttft"], num_generation_tokens=r["n"],
                                          first_token_ts=r["first"], last_token_ts=r["last"]) if self.metrics else None)
            for r in reqs]


@pytest.fixture
def fake_vllm(monkeypatch):
    """deploy's clock and SamplingParams replaced; returns the clock."""
    clock = FakeClock()
    monkeypatch.setattr(deploy, "time", types.SimpleNamespace(perf_counter=clock.read))
    monkeypatch.setattr(deploy, "_sampling_params", lambda max_tokens: types.SimpleNamespace(max_tokens=max_tokens))
    return clock


@pytest.mark.parametrize("prompts, length, budget", [(64, 3072, 16384), (64, 3072, 8192), (16, 700, 4096),
                                                    (1, 512, 16384)])
def test_decode_step_is_a_pure_decode_step_at_full_batch(fake_vllm, prompts, length, budget):
    engine = FakeEngine(fake_vllm, budget=budget)
    options = deploy.EngineOptions(max_model_len=4096, max_num_seqs=64, max_num_batched_tokens=budget)
    scenario = deploy.Scenario("batch", prompts, length, decode_steps=32, repetitions=3)
    ids = deploy.random_prompt_ids(prompts, length, seed=3)
    result = deploy.run_scenario(engine, ids, scenario, "FAKE", options)
    truth = engine.decode_ms(prompts)
    assert result.decode_method == "engine timestamps" and result.decode_clean is True
    assert result.decode_ms_per_step == pytest.approx(truth, rel=1e-6)
    # the wall-clock cross-check also holds prefill jitter and host time, so it is only close
    assert result.decode_ms_wall == pytest.approx(truth, rel=0.25)
    lead_in = deploy.lead_in_steps([length] * prompts, budget)
    assert result.lead_in_steps == lead_in
    # warm-up, then (short, long) per repetition
    assert engine.calls == [4] + [1 + lead_in, 1 + lead_in + 32] * 3
    assert result.generated_tokens == prompts * (1 + lead_in + 32)
    assert result.output_tok_s == pytest.approx(result.generated_tokens / result.wall_s)
    assert result.ttft_s > 0 and result.repetitions == 3 and len(result.per_repetition) == 3
    json.dumps(deploy.asdict(result))  # the worker prints it as JSON


def test_the_old_per_request_figure_was_dominated_by_prefill(fake_vllm):
    """Why the method changed: (last - first) / (n - 1) per request mixes in other requests'
    prefill chunks (2026-11-23: 23 ms for every backend); the new figure does not."""
    engine = FakeEngine(fake_vllm, prefill_ms_per_token=0.012)
    options = deploy.EngineOptions(max_num_batched_tokens=16384)
    result = deploy.run_scenario(engine, deploy.random_prompt_ids(64, 3072, seed=0),
                                 deploy.Scenario("batch", 64, 3072, decode_steps=48, repetitions=1), "FAKE", options)
    truth = engine.decode_ms(64)
    assert result.decode_ms_per_step == pytest.approx(truth, rel=1e-6)
    assert result.per_repetition[0]["request_itl_ms"] > 2 * truth


def test_a_lead_in_shorter_than_prefill_is_reported(fake_vllm, monkeypatch, capsys):
    monkeypatch.setattr(deploy, "lead_in_steps", lambda lengths, batched_tokens: 1)
    engine = FakeEngine(fake_vllm)
    result = deploy.run_scenario(engine, deploy.random_prompt_ids(64, 3072, seed=0),
                                 deploy.Scenario("batch", 64, 3072, decode_steps=32, repetitions=2), "FAKE",
                                 deploy.EngineOptions())
    assert result.decode_clean is False
    assert all(not r["clean"] and "lead-in too short" in " ".join(r["problems"]) for r in result.per_repetition)
    assert "lead-in too short" in capsys.readouterr().err


def test_lead_in_bound_covers_the_prefill_steps():
    assert deploy.prefill_steps_bound([3072] * 64, 16384) == 13     # 196608 / (16384 - 64), rounded up
    assert deploy.prefill_steps_bound([512], 16384) == 1
    assert deploy.lead_in_steps([512], 16384) == 1 + deploy.LEAD_IN_MARGIN
    with pytest.raises(deploy.DeployError, match="max_num_batched_tokens=64"):
        deploy.prefill_steps_bound([10] * 64, 64)


def test_without_engine_timestamps_the_wall_clock_figure_is_used(fake_vllm):
    engine = FakeEngine(fake_vllm, metrics=False, jitter=0.0, host_s=0.0)
    result = deploy.run_scenario(engine, deploy.random_prompt_ids(8, 1000, seed=0),
                                 deploy.Scenario("batch", 8, 1000, decode_steps=16, repetitions=3), "FAKE",
                                 deploy.EngineOptions(max_num_batched_tokens=2048, max_model_len=2048))
    assert result.decode_method == "wall clock" and result.decode_clean is None
    # no jitter and no host time: the wall difference is exactly N full-batch steps
    assert result.decode_ms_per_step == pytest.approx(engine.decode_ms(8), rel=1e-6)
    assert result.ttft_s != result.ttft_s  # NaN: nothing to read it from


def test_every_prompt_must_fit_in_one_batch_and_the_model_length(fake_vllm):
    engine = FakeEngine(fake_vllm)
    with pytest.raises(deploy.DeployError, match="65 prompts but --max-num-seqs is 64"):
        deploy.run_scenario(engine, deploy.random_prompt_ids(65, 8, seed=0), deploy.Scenario("b", 65, 8, 16),
                            "FAKE", deploy.EngineOptions(max_num_seqs=64))
    with pytest.raises(deploy.DeployError, match="exceeds --max-model-len 3200"):
        deploy.run_scenario(engine, deploy.random_prompt_ids(64, 3072, seed=0), deploy.Scenario("b", 64, 3072, 128),
                            "FAKE", deploy.EngineOptions(max_model_len=3200))
    assert engine.calls == []  # refused before generating anything


def test_incomplete_requests_and_a_shrinking_window_are_flagged():
    def run(wall, first, last, earliest_end, complete=True):
        return deploy.GenerateRun(wall_s=wall, tokens=10, max_tokens=5, complete=complete, ttft_s=0.1,
                                  prefill_end_ts=first, end_ts=last, first_finish_ts=earliest_end,
                                  request_itl_ms=1.0)
    good = deploy.decode_step_from_pair(run(1.0, 10.0, 10.2, 10.1), run(1.8, 10.0, 11.0, 10.9), 100)
    assert good["clean"] is True and not good["problems"]
    assert good["decode_ms_engine"] == pytest.approx(8.0) and good["decode_ms_wall"] == pytest.approx(8.0)
    cut = deploy.decode_step_from_pair(run(1.0, 10.0, 10.2, 10.1), run(1.8, 10.0, 11.0, 10.9, complete=False), 100)
    assert cut["clean"] is False and "stopped before 5 tokens" in cut["problems"][0]
    backwards = deploy.decode_step_from_pair(run(1.0, 10.0, 10.5, 10.1), run(1.8, 10.0, 10.4, 10.3), 100)
    assert backwards["clean"] is False and backwards["decode_ms_engine"] != backwards["decode_ms_engine"]
    untimed = deploy.decode_step_from_pair(run(1.0, None, None, None), run(1.8, None, None, None), 100)
    assert untimed["clean"] is None and untimed["decode_ms_wall"] == pytest.approx(8.0)


def test_untimed_pass_generates_once(fake_vllm):
    engine = FakeEngine(fake_vllm)
    result = deploy.run_untimed(engine, deploy.random_prompt_ids(4, 100, seed=0), deploy.Scenario("b", 4, 100, 0),
                                "CUSTOM", 17)
    assert engine.calls == [17] and result.generated_tokens == 4 * 17
    assert result.decode_method == "untimed" and result.decode_ms_per_step != result.decode_ms_per_step


def test_compare_passes_decode_steps_and_runs_the_check_untimed(tmp_path, monkeypatch):
    import subprocess as sp
    commands = []

    def fake_run(cmd, stdout, env=None, **kwargs):
        if len(commands) == 2:  # the last backend starts: the first one's row is already on disk
            written = json.loads((tmp_path / "deploy_compare.json").read_text())
            assert [r["label"] for r in written["records"]] == ["ours_verify", "ours"]
        commands.append((cmd, env))
        verify_log = (env or {}).get("FLASHMLA_VLLM_VERIFY_LOG")
        if verify_log:
            Path(verify_log).write_text(json.dumps({"checked_calls": 10, "passed": True}))
        stdout.write(deploy.RESULT_PREFIX + json.dumps({"results": []}) + "\n")
        return types.SimpleNamespace(returncode=0)
    monkeypatch.setattr(sp, "run", fake_run)
    monkeypatch.setattr(deploy, "preflight", lambda backends: None)
    monkeypatch.setattr(deploy, "_meta", lambda args: {})
    rc = deploy.main(["compare", "--offline", "--out", str(tmp_path), "--backends", "ours", "flashmla",
                      "--decode-steps", "96", "--verify-steps", "5", "--verify-tokens", "9"])
    assert rc == 0 and len(commands) == 3
    verify_cmd, verify_env = commands[0]
    assert verify_env["FLASHMLA_VLLM_VERIFY"] == "5"
    assert verify_cmd[verify_cmd.index("--untimed") + 1] == "9"
    for cmd, env in commands[1:]:
        assert "--untimed" not in cmd and cmd[cmd.index("--decode-steps") + 1] == "96"
        assert env.get("FLASHMLA_VLLM_VERIFY") == os.environ.get("FLASHMLA_VLLM_VERIFY")  # the switch stays off
    args = deploy.build_parser().parse_args(["worker", "--backend", "X", "--max-tokens", "64"])
    assert deploy.decode_steps_of(args) == 64 and args.untimed == 0   # older callers' --max-tokens
    args = deploy.build_parser().parse_args(["worker", "--backend", "X"])
    assert deploy.decode_steps_of(args) == deploy.DEFAULT_DECODE_STEPS


@pytest.mark.parametrize("extra, method", [([], "engine timestamps"), (["--untimed", "5"], "untimed")])
def test_worker_runs_both_offline_scenarios_and_prints_one_result(fake_vllm, monkeypatch, capsys, extra, method):
    engines = []

    def fake_build(model, options):
        assert options.max_model_len == 4096 and options.max_num_seqs == 64 and options.cuda_graphs
        engines.append(FakeEngine(fake_vllm, budget=options.batched_tokens))
        return engines[-1]
    monkeypatch.setattr(deploy, "check_gpu", lambda min_free_gib: {"gpu": "fake"})
    monkeypatch.setattr(deploy, "check_vllm", lambda backend: "0.26.0")
    monkeypatch.setattr(deploy, "build_llm", fake_build)
    rc = deploy.main(["worker", "--backend", "FAKE", "--offline", "--decode-steps", "8", "--repetitions", "1", *extra])
    assert rc == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith(deploy.RESULT_PREFIX))
    record = json.loads(line[len(deploy.RESULT_PREFIX):])
    results = {r["scenario"]: r for r in record["results"]}
    assert set(results) == {"single", "batch"} and {r["decode_method"] for r in results.values()} == {method}
    assert (results["single"]["prompts"], results["batch"]["prompts"]) == (1, 64)
    assert results["batch"]["prompt_tokens"] == 64 * 3072
    if not extra:
        assert results["batch"]["decode_ms_per_step"] == pytest.approx(engines[0].decode_ms(64), rel=1e-6)
        assert results["single"]["decode_ms_per_step"] == pytest.approx(engines[0].decode_ms(1), rel=1e-6)
        assert results["batch"]["decode_clean"] is True
