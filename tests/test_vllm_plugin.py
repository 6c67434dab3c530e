"""The vLLM plugin against a real installed vLLM (CPU): entry point, registration, vLLM's own
backend validation for DeepSeek-V2-Lite's shapes, and the version gate."""
import importlib.metadata
import os
import subprocess
import sys

import pytest

from flashmla.vllm_backend import testing as vt

vt.prepare_cpu_environment()  # before anything imports vLLM
pytest.importorskip("vllm", reason="vLLM is not installed (CI installs it: see scripts/test.sh)")

import torch  # noqa: E402

import flashmla.vllm_backend as plugin  # noqa: E402
from flashmla.vllm_backend import compat  # noqa: E402


@pytest.fixture(scope="module")
def registry():
    plugin.register()
    from vllm.v1.attention.backends import registry as reg
    return reg


@pytest.fixture(scope="module")
def v2_lite_config():
    return vt.make_vllm_config()


def test_entry_point_is_installed():
    eps = [ep for ep in importlib.metadata.entry_points(group="vllm.general_plugins") if ep.name == "flashmla"]
    assert len(eps) == 1, "flashmla must be pip-installed (pip install -e .) so vLLM finds its entry point"
    assert eps[0].value == "flashmla.vllm_backend:register"
    assert eps[0].load() is plugin.register


def test_vllm_loads_the_plugin_in_a_fresh_process_idempotently():
    # vLLM loads general plugins in every process it starts; loading twice must be harmless.
    code = (
        "from vllm.plugins import load_general_plugins\n"
        "load_general_plugins(); load_general_plugins()\n"
        "import flashmla.vllm_backend as p; p.register()\n"
        "from vllm.v1.attention.backends.registry import AttentionBackendEnum as E\n"
        "print('CLASS', E.CUSTOM.get_class().__module__, E.CUSTOM.get_class().__name__)\n"
        "print('REGISTERED', p.last_registration['registered'])\n")
    env = dict(os.environ)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "CLASS flashmla.vllm_backend.backend FlashMLATutorialBackend" in result.stdout
    assert "'CUSTOM'" in result.stdout.split("REGISTERED", 1)[1]


def test_register_points_custom_at_our_backend(registry):
    from flashmla.vllm_backend.backend import FlashMLATutorialBackend
    E = registry.AttentionBackendEnum
    assert E.CUSTOM.get_class() is FlashMLATutorialBackend
    again = plugin.register()
    assert "CUSTOM" in again["registered"] and again["problem"] is None
    assert E.CUSTOM.get_class() is FlashMLATutorialBackend


def test_named_backend_on_new_vllm(registry):
    E = registry.AttentionBackendEnum
    version = compat.parse_version(compat.installed_vllm_version())
    if version < compat.NAMED_BACKENDS_MIN:
        assert plugin.BACKEND_NAME not in E.__members__
        return
    from flashmla.vllm_backend.backend import FlashMLATutorialNamedBackend
    assert E[plugin.BACKEND_NAME].get_class() is FlashMLATutorialNamedBackend
    assert FlashMLATutorialNamedBackend.get_name() == plugin.BACKEND_NAME


@pytest.mark.parametrize("name", ["CUSTOM", "custom", plugin.BACKEND_NAME])
def test_attention_config_accepts_the_backend(registry, name):
    from vllm.config import AttentionConfig
    E = registry.AttentionBackendEnum
    if name == plugin.BACKEND_NAME and plugin.BACKEND_NAME not in E.__members__:
        with pytest.raises(Exception):
            AttentionConfig(backend=name)
        return
    config = AttentionConfig(backend=name)
    assert config.backend is E[name.upper()]


def _selector_config(model_config, **overrides):
    from vllm.v1.attention.selector import AttentionSelectorConfig
    values = dict(head_size=model_config.get_head_size(), dtype=model_config.dtype, kv_cache_dtype="auto",
                  block_size=64, use_mla=model_config.use_mla)
    values.update(overrides)
    return AttentionSelectorConfig(**values)


def _validate_as_cuda_platform_does(backend_enum, selector_config, capability=(9, 0)):
    """What vLLM's CudaPlatform.get_attn_backend_cls does with an explicitly selected backend:
    resolve the registry entry to a class and run the class's validate_configuration (vllm's
    cuda platform module itself needs libcuda, so it cannot be imported on a CPU box)."""
    from vllm.platforms.interface import DeviceCapability
    backend_class = backend_enum.get_class()
    return backend_class, backend_class.validate_configuration(
        device_capability=DeviceCapability(*capability), **selector_config._asdict())


def test_vllm_validation_accepts_deepseek_v2_lite(registry, v2_lite_config):
    model_config = v2_lite_config.model_config
    assert model_config.use_mla and model_config.get_head_size() == 576
    backend_class, reasons = _validate_as_cuda_platform_does(registry.AttentionBackendEnum.CUSTOM,
                                                             _selector_config(model_config))
    assert backend_class.__name__ == "FlashMLATutorialBackend"
    assert reasons == []


def test_block_size_defaults_to_64(registry):
    from flashmla.vllm_backend.backend import FlashMLATutorialBackend
    assert FlashMLATutorialBackend.get_preferred_block_size(16) == 64
    assert FlashMLATutorialBackend.supports_block_size(64)
    assert FlashMLATutorialBackend.supports_block_size(128)  # split into 64-token kernel blocks
    assert not FlashMLATutorialBackend.supports_block_size(16)


@pytest.mark.parametrize("overrides, capability, reason", [
    (dict(block_size=16), (9, 0), "block_size"),
    (dict(kv_cache_dtype="fp8"), (9, 0), "kv_cache_dtype"),
    (dict(dtype=torch.float32), (9, 0), "dtype"),
    (dict(head_size=320), (9, 0), "head_size"),
    (dict(use_mla=False), (9, 0), "MLA"),
    (dict(), (7, 5), "compute capability"),
])
def test_vllm_validation_rejects_what_we_cannot_run(registry, v2_lite_config, overrides, capability, reason):
    from vllm.platforms.interface import DeviceCapability
    from flashmla.vllm_backend.backend import FlashMLATutorialBackend
    config = _selector_config(v2_lite_config.model_config, **overrides)
    reasons = FlashMLATutorialBackend.validate_configuration(device_capability=DeviceCapability(*capability),
                                                             **config._asdict())
    assert any(reason in r for r in reasons), reasons


def test_triton_capable_gpus_are_accepted(registry, v2_lite_config):
    from vllm.platforms.interface import DeviceCapability
    from flashmla.vllm_backend.backend import FlashMLATutorialBackend
    config = _selector_config(v2_lite_config.model_config)
    for capability in [(8, 0), (8, 9), (9, 0), (10, 0)]:
        assert FlashMLATutorialBackend.validate_configuration(device_capability=DeviceCapability(*capability),
                                                              **config._asdict()) == []


@pytest.mark.parametrize("version, level", [
    ("0.7.3", "error"), ("0.15.1", "error"), ("0.20.0", "error"), ("0.26.0", "ok"), ("0.32.0", "ok"),
    ("0.33.0", "ok"), ("0.33.2", "ok"), ("0.34.0", "warn"), ("1.0.0rc1", "warn")])
def test_version_gate(version, level, monkeypatch):
    monkeypatch.delenv(compat.ALLOW_UNTESTED_ENV, raising=False)
    got, message = compat.version_problem(version)
    assert got == level, message
    assert version in message


def test_untested_old_version_can_be_forced(monkeypatch):
    monkeypatch.setenv(compat.ALLOW_UNTESTED_ENV, "1")
    assert compat.version_problem("0.20.0")[0] == "warn"
    assert compat.version_problem("0.15.1")[0] == "error"  # the API does not exist there


def test_backend_refuses_selection_outside_the_range(registry, v2_lite_config, monkeypatch):
    """An unsupported vLLM makes the backend invalid with a reason naming the tested range;
    vLLM turns that into 'Selected backend ... is not valid ... Reason: [...]'."""
    monkeypatch.delenv(compat.ALLOW_UNTESTED_ENV, raising=False)
    monkeypatch.setattr(compat, "installed_vllm_version", lambda: "0.20.0")
    _, reasons = _validate_as_cuda_platform_does(registry.AttentionBackendEnum.CUSTOM,
                                                 _selector_config(v2_lite_config.model_config))
    assert any("older than the tested range" in r and "0.26.0" in r for r in reasons), reasons


def test_register_without_vllm_is_harmless(monkeypatch):
    monkeypatch.setattr(compat, "installed_vllm_version", lambda: None)
    result = plugin.register()
    assert result["registered"] == [] and "not installed" in result["problem"]
    monkeypatch.setattr(compat, "installed_vllm_version", lambda: "0.7.3")
    result = plugin.register()
    assert result["registered"] == [] and "patches/README.md" in result["problem"]


def test_api_check_passes_on_the_installed_vllm():
    assert compat.api_problem() is None
