"""flashmla as a vLLM attention backend, loaded as a general plugin.

vLLM calls :func:`register` (entry point ``vllm.general_plugins: flashmla``) in every process it
starts: the front end, the engine core and each worker. It puts our backend class into vLLM's
attention-backend registry, so the backend is chosen with::

    vllm serve MODEL --attention-backend CUSTOM
    LLM(model=..., attention_config={"backend": "CUSTOM"})
    LLM(model=..., attention_config={"backend": "FLASHMLA_TUTORIAL"})   # vLLM >= 0.32

Nothing is copied into site-packages; uninstalling flashmla removes the backend. See
docs/vllm-backend.md for the classes and the CUDA-graph contract, and ``compat`` for versions.
"""
from __future__ import annotations

import logging
import os

from . import compat

BACKEND_NAME = "FLASHMLA_TUTORIAL"  # the named registry entry on vLLM >= 0.32
CUSTOM_CLASS_PATH = "flashmla.vllm_backend.backend.FlashMLATutorialBackend"
NAMED_CLASS_PATH = "flashmla.vllm_backend.backend.FlashMLATutorialNamedBackend"

logger = logging.getLogger("flashmla.vllm_backend")

# Outcome of the last register() call in this process (tests and diagnostics read it).
last_registration: dict = {}


def _vllm_logger():
    try:
        from vllm.logger import init_logger
        return init_logger("flashmla.vllm_backend")
    except Exception:  # vLLM's logger is only cosmetic here
        return logger


def register() -> dict:
    """Register the backend with vLLM (idempotent; safe to call in every process).

    Returns a dict describing what happened (``registered``: the registry names now pointing at
    us; ``problem``: why nothing was registered, if so). Never raises for an unsupported vLLM:
    a plugin that raises would break every vLLM model in the environment, not just ours. The
    backend itself refuses to be selected with the reason instead (see ``compat``).
    """
    global last_registration
    log = _vllm_logger()
    version = compat.installed_vllm_version()
    if version is None:
        last_registration = {"registered": [], "problem": "vLLM is not installed"}
        return last_registration
    level, message = compat.version_problem(version)
    problem = compat.api_problem() if compat.parse_version(version) >= compat.API_MIN else message
    if problem is not None:
        log.error("flashmla: not registering the vLLM attention backend: %s", problem)
        last_registration = {"registered": [], "problem": problem, "vllm": version}
        return last_registration
    if level != "ok":
        # "error" here means: registered, but the backend will refuse selection with this message.
        (log.warning if level == "warn" else log.error)("flashmla: %s", message)

    from vllm.v1.attention.backends.registry import AttentionBackendEnum, register_backend

    registered = []
    custom = AttentionBackendEnum.CUSTOM
    current = custom.get_path() if custom.is_overridden() else None
    if current not in (None, CUSTOM_CLASS_PATH) and os.environ.get("FLASHMLA_VLLM_TAKE_CUSTOM", "0") != "1":
        log.warning("flashmla: the CUSTOM attention backend slot already holds %s; leaving it alone "
                    "(set FLASHMLA_VLLM_TAKE_CUSTOM=1 to take it%s).", current,
                    f", or select {BACKEND_NAME}" if hasattr(AttentionBackendEnum, "register") else "")
    else:
        register_backend(custom, CUSTOM_CLASS_PATH)
        registered.append("CUSTOM")

    if hasattr(AttentionBackendEnum, "register"):  # vLLM >= 0.32: backends by their own name
        members = AttentionBackendEnum.__members__
        if BACKEND_NAME not in members:
            AttentionBackendEnum.register(BACKEND_NAME, NAMED_CLASS_PATH)
            registered.append(BACKEND_NAME)
        elif members[BACKEND_NAME].get_path() == NAMED_CLASS_PATH:
            registered.append(BACKEND_NAME)  # an earlier call in this process did it
        else:
            log.warning("flashmla: an attention backend named %s already exists (%s); not replacing it",
                        BACKEND_NAME, members[BACKEND_NAME].get_path())
    last_registration = {"registered": registered, "problem": None, "vllm": version, "level": level}
    return last_registration


__all__ = ["BACKEND_NAME", "CUSTOM_CLASS_PATH", "NAMED_CLASS_PATH", "register", "compat"]
