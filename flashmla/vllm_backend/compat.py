"""Which vLLM releases the plugin supports, and the checks that keep an unsupported one loud.

The backend subclasses vLLM's MLA classes, whose API moved between releases (see
docs/vllm-backend.md). We test two ends of one API generation:

* ``0.26.0``: the newest release built for torch 2.11 / CUDA 13 (run on an H100);
* ``0.32.0``: the newest release that pins torch 2.13 (CPU tests in CI), and
* ``0.33.0``: the newest release at the time of writing (import + CPU tests, no GPU run).

Releases in between share the API (``forward_mqa``, keyword ``_build_decode``, the
``vllm.v1.attention.backends.registry`` module). Older releases down to 0.16 *may* work but
were never run, so the backend refuses them unless FLASHMLA_VLLM_ALLOW_UNTESTED=1; releases
before 0.16 lack the API entirely (``patches/`` has the legacy file-patch route for 0.7.3).
Newer releases than the tested ones are allowed with a warning, after a structural check that
every hook we override still exists with the arguments we pass.
"""
from __future__ import annotations

import importlib.metadata
import inspect
import os
import re
from typing import Optional

TESTED_MIN = (0, 26, 0)
TESTED_MAX = (0, 33, 0)
API_MIN = (0, 16, 0)  # forward_mqa + mla_attention.py + registry with CUSTOM
NAMED_BACKENDS_MIN = (0, 32, 0)  # AttentionBackendEnum.register(name, path)
ALLOW_UNTESTED_ENV = "FLASHMLA_VLLM_ALLOW_UNTESTED"


def parse_version(text: str) -> tuple[int, int, int]:
    """'0.26.0', '0.33.0rc1', '0.27.1.dev5+gabc' -> (major, minor, patch)."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        raise ValueError(f"cannot parse a vLLM version from {text!r}")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def fmt(version: tuple[int, int, int]) -> str:
    return ".".join(str(v) for v in version)


def installed_vllm_version() -> Optional[str]:
    """The installed vLLM's version string, or None when vLLM is not installed."""
    try:
        return importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return None


def supported_range_text() -> str:
    return f"vLLM {fmt(TESTED_MIN)} .. {fmt(TESTED_MAX)}"


def version_problem(version: str) -> tuple[str, str]:
    """Classify a vLLM version: ("ok" | "warn" | "error", message)."""
    v = parse_version(version)
    if v < API_MIN:
        return "error", (
            f"vLLM {version} is too old for the flashmla attention plugin (it needs the MLA backend API "
            f"of vLLM >= {fmt(API_MIN)}; tested: {supported_range_text()}). Install a supported vLLM, e.g. "
            f"`pip install vllm=={fmt(TESTED_MIN)}` (torch 2.11 / CUDA 13) or `pip install vllm=={fmt(TESTED_MAX)}`; "
            "for vLLM 0.7.3 only, see patches/README.md (legacy file patches).")
    if v < TESTED_MIN:
        if os.environ.get(ALLOW_UNTESTED_ENV, "0") == "1":
            return "warn", (f"vLLM {version} is older than the tested range ({supported_range_text()}); "
                            f"running anyway because {ALLOW_UNTESTED_ENV}=1.")
        return "error", (
            f"vLLM {version} is older than the tested range ({supported_range_text()}). The MLA API "
            f"exists since {fmt(API_MIN)} but this release was never run with flashmla; set "
            f"{ALLOW_UNTESTED_ENV}=1 to try it anyway, or install vllm=={fmt(TESTED_MIN)}.")
    if v[:2] > TESTED_MAX[:2]:
        return "warn", (f"vLLM {version} is newer than the tested range ({supported_range_text()}); "
                        "the hooks flashmla overrides were found with the expected arguments, but check "
                        "the output (FLASHMLA_VLLM_VERIFY=8 compares every layer with the reference).")
    return "ok", f"vLLM {version} is in the tested range ({supported_range_text()})."


def api_problem() -> Optional[str]:
    """Check that the vLLM hooks we subclass exist with the arguments we rely on.

    Returns None when they do, else a sentence saying what is missing. Imports vLLM.
    """
    try:
        from vllm.model_executor.layers.attention import mla_attention as mla
        from vllm.v1.attention.backends import registry
    except ImportError as exc:
        return f"vLLM's MLA backend API is missing ({exc})"
    for name in ("MLACommonBackend", "MLACommonMetadataBuilder", "MLACommonImpl", "MLACommonMetadata",
                 "MLACommonDecodeMetadata", "QueryLenSupport"):
        if not hasattr(mla, name):
            return f"vllm.model_executor.layers.attention.mla_attention has no {name}"
    if not hasattr(mla.MLACommonImpl, "forward_mqa"):
        return "MLACommonImpl has no forward_mqa (vLLM < 0.16 used _forward_decode)"
    params = inspect.signature(mla.MLACommonMetadataBuilder._build_decode).parameters
    for needed in ("block_table_tensor", "seq_lens_device", "query_start_loc_cpu", "num_decode_tokens"):
        if needed not in params:
            return f"MLACommonMetadataBuilder._build_decode no longer takes {needed!r}"
    if not hasattr(registry.AttentionBackendEnum, "CUSTOM"):
        return "AttentionBackendEnum has no CUSTOM slot"
    return None
