"""flashmla.deploy on CPU: the shipped V2-Lite config, errors explained, log parsing, outputs."""
import json
import sys
import types

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
                        repetitions=3, per_repetition=[]) for s, p, n in [("single", 1, 512), ("batch", 64, 3072)]]
        records.append({"label": label, "backend_used": label.upper(), "results": results})
    written = deploy.write_outputs(records, tmp_path, "t", {"x": 1})
    assert len(written["rows"]) == 6
    for suffix in ("json", "csv", "md", "png"):
        assert (tmp_path / f"t.{suffix}").stat().st_size > 0
    md = (tmp_path / "t.md").read_text()
    assert "decode_ms_per_step" in md and "| ours | OURS | batch | 64 |" in md


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
