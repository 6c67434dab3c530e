"""flashmla: Multi-head Latent Attention decode for Hopper GPUs, built step by step.

``get_mla_metadata`` and ``flash_mla_with_kvcache`` follow DeepSeek FlashMLA's API, so code
written for it runs unchanged. Backends: the sm90a CUDA kernel (``flashmla._C``), a portable
Triton kernel, and the float32 torch reference; see ``backend_status()``.
"""
from .interface import (FlashMLASchedMeta, backend_status, flash_mla_with_kvcache, get_mla_metadata,
                        resolve_backend)

__version__ = "0.1.0"

__all__ = ["FlashMLASchedMeta", "backend_status", "flash_mla_with_kvcache", "get_mla_metadata",
           "resolve_backend", "__version__"]
