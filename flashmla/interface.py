"""Public API, compatible with DeepSeek's FlashMLA: validation, metadata and backend dispatch.

Code written against ``flash_mla`` runs unchanged::

    tile_md, num_splits = get_mla_metadata(cache_seqlens, s_q * h_q // h_kv, h_kv)
    out, lse = flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, 512,
                                      tile_md, num_splits, causal=True)

All three generations of DeepSeek's metadata call are accepted (see ``get_mla_metadata``).
Every check raises a Python exception that names the argument and the expected and actual
values; nothing here can terminate the process.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import os
from typing import Optional

import torch

from . import scheduler
from .scheduler import BLOCK_SIZE, METADATA_WIDTH

HEAD_DIM_QK = 576  # 512 latent (c_kv) + 64 decoupled RoPE
HEAD_DIM_V = 512
SUPPORTED_DTYPES = (torch.bfloat16, torch.float16)
BACKENDS = ("cuda", "triton", "reference")
_BACKEND_MODULES = {
    "cuda": "flashmla.cuda_backend",
    "triton": "flashmla.triton_decode",
    "reference": "flashmla.reference",
}


# --------------------------------------------------------------------------- backends
def _load_backend(name: str):
    """Import a backend module; returns (module or None, reason it is unusable)."""
    try:
        return _backend_module(name), ""
    except ImportError as exc:  # e.g. Triton not installed, extension not built
        return None, f"cannot import {_BACKEND_MODULES[name]}: {exc}"


@functools.lru_cache(maxsize=None)
def _backend_module(name: str):
    """The imported backend module (cached: importlib's lookup cost ~2 us per decode call)."""
    return importlib.import_module(_BACKEND_MODULES[name])


@functools.lru_cache(maxsize=None)
def _availability(name: str, device: torch.device) -> tuple[bool, str]:
    """Whether a backend can run on a device; cached: neither changes within a process, and the
    check (imports, device queries) would otherwise cost microseconds on every decode call."""
    module, reason = _load_backend(name)
    return module.is_available(device) if module is not None else (False, reason)


def backend_status(device: torch.device | str = "cpu") -> dict[str, tuple[bool, str]]:
    """For each backend: (usable on ``device``, reason when not)."""
    device = torch.device(device)
    return {name: _availability(name, device) for name in BACKENDS}


def resolve_backend(backend: Optional[str], device: torch.device) -> str:
    """Pick the backend: the argument, else $FLASHMLA_BACKEND, else "auto".

    auto = the sm90 CUDA kernel on Hopper when it is built, else Triton on any CUDA GPU, else
    the torch reference. Asking for a backend that cannot run raises with the reason.
    """
    choice = backend if backend is not None else os.environ.get("FLASHMLA_BACKEND", "auto")
    choice = choice.strip().lower()
    if choice not in BACKENDS + ("auto",):
        raise ValueError(f"backend must be one of 'auto', 'cuda', 'triton', 'reference'; got {choice!r}"
                         + (" (from $FLASHMLA_BACKEND)" if backend is None else ""))
    if choice != "auto":
        ok, why = _availability(choice, device)
        if not ok:
            raise RuntimeError(f"backend {choice!r} is not available on {device}: {why}")
        return choice
    candidates = ("cuda", "triton") if device.type == "cuda" else ()
    for name in candidates:
        if _availability(name, device)[0]:
            return name
    return "reference"


# --------------------------------------------------------------------------- validation
def _shape(t: torch.Tensor) -> tuple:
    return tuple(t.shape)


def _require_tensor(name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _require_int32_vector_like(name: str, t: torch.Tensor, ndim: int) -> None:
    if t.dtype != torch.int32:
        raise TypeError(f"{name} must have dtype torch.int32, got {t.dtype}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {_shape(t)}")
    if not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous, got strides {t.stride()} for shape {_shape(t)}")


def _values_checks_enabled(device: torch.device, check_values: Optional[bool]) -> bool:
    """Value checks read tensors on the host. On a GPU that is a synchronisation per call (and
    impossible inside CUDA-graph capture), so there they are opt-in: ``check_values=True`` or
    FLASHMLA_CHECK_VALUES=1. On the CPU they always run."""
    if check_values is None:
        check_values = device.type != "cuda" or os.environ.get("FLASHMLA_CHECK_VALUES", "0") == "1"
    if check_values and device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return False
    return bool(check_values)


def validate_decode_inputs(q, k_cache, block_table, cache_seqlens, head_dim_v,
                           check_values: Optional[bool] = None) -> None:
    """Check the kernel inputs against the contract; raise TypeError/ValueError naming the argument."""
    q = _require_tensor("q", q)
    k_cache = _require_tensor("k_cache", k_cache)
    block_table = _require_tensor("block_table", block_table)
    cache_seqlens = _require_tensor("cache_seqlens", cache_seqlens)

    if q.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"q must have dtype torch.bfloat16 or torch.float16, got {q.dtype}")
    if k_cache.dtype != q.dtype:
        raise TypeError(f"k_cache must have the same dtype as q ({q.dtype}), got {k_cache.dtype}")
    if q.dim() != 4:
        raise ValueError(f"q must have shape [batch, s_q, h_q, {HEAD_DIM_QK}], got {_shape(q)}")
    if k_cache.dim() != 4:
        raise ValueError(f"k_cache must have shape [num_blocks, {BLOCK_SIZE}, h_kv, {HEAD_DIM_QK}], "
                         f"got {_shape(k_cache)}")
    b, s_q, h_q, d = q.shape
    num_blocks, page_size, h_kv, d_k = k_cache.shape
    if d != HEAD_DIM_QK:
        raise ValueError(f"q.shape[-1] (head dim) must be {HEAD_DIM_QK}, got {d}")
    if d_k != HEAD_DIM_QK:
        raise ValueError(f"k_cache.shape[-1] (head dim) must be {HEAD_DIM_QK}, got {d_k}")
    if head_dim_v != HEAD_DIM_V:
        raise ValueError(f"head_dim_v must be {HEAD_DIM_V}, got {head_dim_v}")
    if page_size != BLOCK_SIZE:
        raise ValueError(f"k_cache.shape[1] (page block size) must be {BLOCK_SIZE}, got {page_size}")
    if b == 0:
        raise ValueError(f"q.shape[0] (batch size) must be > 0, got 0")
    if s_q == 0 or h_q == 0:
        raise ValueError(f"q must have s_q > 0 and h_q > 0, got shape {_shape(q)}")
    if h_kv == 0 or h_q % h_kv != 0:
        raise ValueError(f"h_q ({h_q}, q.shape[2]) must be a multiple of h_kv ({h_kv}, k_cache.shape[2])")
    if q.stride(-1) != 1:
        raise ValueError(f"q must have a contiguous last dimension, got stride {q.stride(-1)}")
    if k_cache.stride(-1) != 1:
        raise ValueError(f"k_cache must have a contiguous last dimension, got stride {k_cache.stride(-1)}")

    _require_int32_vector_like("block_table", block_table, 2)
    _require_int32_vector_like("cache_seqlens", cache_seqlens, 1)
    if block_table.shape[0] != b:
        raise ValueError(f"block_table.shape[0] must equal the batch size {b} (q.shape[0]), "
                         f"got shape {_shape(block_table)}")
    if cache_seqlens.shape[0] != b:
        raise ValueError(f"cache_seqlens must have shape ({b},) to match q.shape[0], got {_shape(cache_seqlens)}")
    for name, t in (("k_cache", k_cache), ("block_table", block_table), ("cache_seqlens", cache_seqlens)):
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}; all inputs must share a device")

    if _values_checks_enabled(q.device, check_values):
        validate_decode_values(block_table, cache_seqlens, num_blocks)


def validate_decode_values(block_table: torch.Tensor, cache_seqlens: torch.Tensor, num_blocks: int) -> None:
    """Checks that read tensor values (host sync on a GPU): lengths and used block-table entries."""
    seqlens = cache_seqlens.to("cpu", torch.int64)
    if bool((seqlens < 0).any()):
        i = int(torch.nonzero(seqlens < 0)[0])
        raise ValueError(f"cache_seqlens must be >= 0, got cache_seqlens[{i}] = {int(seqlens[i])}")
    capacity = block_table.shape[1] * BLOCK_SIZE
    if bool((seqlens > capacity).any()):
        i = int(torch.nonzero(seqlens > capacity)[0])
        raise ValueError(f"cache_seqlens[{i}] = {int(seqlens[i])} exceeds what block_table can hold "
                         f"({block_table.shape[1]} blocks x {BLOCK_SIZE} = {capacity} tokens)")
    used = torch.arange(block_table.shape[1])[None, :] < ((seqlens + BLOCK_SIZE - 1) // BLOCK_SIZE)[:, None]
    table = block_table.to("cpu", torch.int64)
    bad = used & ((table < 0) | (table >= num_blocks))
    if bool(bad.any()):
        i, j = (int(x) for x in torch.nonzero(bad)[0])
        raise ValueError(f"block_table[{i}, {j}] = {int(table[i, j])} is out of range [0, {num_blocks}) "
                         f"for a block in use (cache_seqlens[{i}] = {int(seqlens[i])})")


# --------------------------------------------------------------------------- metadata
@dataclasses.dataclass(frozen=True)
class MetadataConfig:
    """What a schedule was computed for; a schedule is valid only for the same values."""
    batch_size: int
    num_q_tokens_per_head_k: int
    num_heads_k: int
    num_sm_parts: int


@dataclasses.dataclass
class FlashMLASchedMeta:
    """Lazy schedule (DeepSeek's 2026 API): ``get_mla_metadata()`` returns an empty one, and the
    first ``flash_mla_with_kvcache`` call of a decode step fills it; the other layers of the
    step reuse it. Create a new one whenever ``cache_seqlens`` changes (every step)."""
    have_initialized: bool = False
    config: Optional[dict] = None
    tile_scheduler_metadata: Optional[torch.Tensor] = None
    num_splits: Optional[torch.Tensor] = None


def get_mla_metadata(cache_seqlens: Optional[torch.Tensor] = None,
                     num_q_tokens_per_head_k: Optional[int] = None,
                     num_heads_k: Optional[int] = None,
                     num_heads_q: Optional[int] = None,
                     is_fp8_kvcache: bool = False,
                     topk: Optional[int] = None,
                     *, num_sms: Optional[int] = None):
    """Compute the split-KV tile schedule for one decode step (shared by all layers).

    Call styles (all of DeepSeek's generations):
      * ``get_mla_metadata(cache_seqlens, s_q*h_q//h_kv, h_kv)`` → ``(tile_scheduler_metadata,
        num_splits)``: int32 ``[num_sm_parts, 8]`` and int32 ``[b + 1]`` on cache_seqlens' device.
      * the same with ``num_heads_q=..., is_fp8_kvcache=False, topk=None`` (Sep 2025 API);
        only dense bf16/fp16 decode is supported, so fp8 and ``topk`` raise.
      * ``get_mla_metadata()`` → ``(FlashMLASchedMeta(), None)``: computed lazily by the first
        ``flash_mla_with_kvcache`` call that receives it.

    Args:
        cache_seqlens: int32 ``[b]``, tokens per request including the new ones.
        num_q_tokens_per_head_k: s_q * h_q / h_kv.
        num_heads_k: h_kv.
        num_sms: plan for this many SMs instead of the device's (132 off-GPU).
    """
    if is_fp8_kvcache:
        raise ValueError("is_fp8_kvcache=True is not supported: flashmla implements dense bf16/fp16 decode")
    if topk is not None:
        raise ValueError(f"topk must be None (sparse attention is not supported), got {topk}")
    if cache_seqlens is None:
        return FlashMLASchedMeta(), None
    cache_seqlens = _require_tensor("cache_seqlens", cache_seqlens)
    _require_int32_vector_like("cache_seqlens", cache_seqlens, 1)
    if cache_seqlens.shape[0] == 0:
        raise ValueError("cache_seqlens must hold at least one request (batch size b > 0), got shape (0,)")
    if not isinstance(num_q_tokens_per_head_k, int) or num_q_tokens_per_head_k <= 0:
        raise ValueError(f"num_q_tokens_per_head_k must be a positive int (s_q * h_q // h_kv), "
                         f"got {num_q_tokens_per_head_k!r}")
    if not isinstance(num_heads_k, int) or num_heads_k <= 0:
        raise ValueError(f"num_heads_k must be a positive int, got {num_heads_k!r}")
    if num_heads_q is not None and num_heads_q % num_heads_k != 0:
        raise ValueError(f"num_heads_q ({num_heads_q}) must be a multiple of num_heads_k ({num_heads_k})")
    if num_sms is None:
        num_sms = scheduler.device_num_sms(cache_seqlens.device)

    metadata = num_splits = None
    if cache_seqlens.is_cuda and _availability("cuda", cache_seqlens.device)[0]:
        module, _ = _load_backend("cuda")
        metadata, num_splits = module.get_mla_metadata_gpu(
            cache_seqlens, num_q_tokens_per_head_k, num_heads_k, num_sms)
    if metadata is None:
        metadata, num_splits = scheduler.compute_tile_scheduler_metadata(
            cache_seqlens, num_q_tokens_per_head_k, num_heads_k, num_sms)
    # Remember what the schedule was made for, so a mismatched reuse is caught (vLLM #27368).
    metadata._flashmla_config = MetadataConfig(cache_seqlens.shape[0], num_q_tokens_per_head_k,
                                               num_heads_k, metadata.shape[0])
    return metadata, num_splits


def _check_metadata(tile_scheduler_metadata, num_splits, q, h_kv) -> None:
    b, s_q, h_q, _ = q.shape
    rows = s_q * h_q // h_kv
    tile_scheduler_metadata = _require_tensor("tile_scheduler_metadata", tile_scheduler_metadata)
    num_splits = _require_tensor("num_splits", num_splits)
    _require_int32_vector_like("tile_scheduler_metadata", tile_scheduler_metadata, 2)
    _require_int32_vector_like("num_splits", num_splits, 1)
    for name, t in (("tile_scheduler_metadata", tile_scheduler_metadata), ("num_splits", num_splits)):
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}")
    if tile_scheduler_metadata.shape[1] != METADATA_WIDTH:
        raise ValueError(f"tile_scheduler_metadata must have shape [num_sm_parts, {METADATA_WIDTH}], "
                         f"got {_shape(tile_scheduler_metadata)}")
    config = getattr(tile_scheduler_metadata, "_flashmla_config", None)
    if config is not None:
        if (config.num_q_tokens_per_head_k, config.num_heads_k) != (rows, h_kv):
            raise ValueError(
                "tile_scheduler_metadata was computed for num_q_tokens_per_head_k="
                f"{config.num_q_tokens_per_head_k}, num_heads_k={config.num_heads_k}, but this call has "
                f"s_q*h_q/h_kv = {rows}, h_kv = {h_kv}: call get_mla_metadata(cache_seqlens, {rows}, {h_kv})")
        if config.batch_size != b:
            raise ValueError(f"tile_scheduler_metadata was computed for batch size {config.batch_size}, "
                             f"but q.shape[0] is {b}")
    else:
        # A copy (e.g. a persistent CUDA-graph buffer): only the shape can be checked.
        expected = scheduler.num_sm_parts(scheduler.device_num_sms(q.device), rows, h_kv)
        if tile_scheduler_metadata.shape[0] != expected:
            raise ValueError(
                f"tile_scheduler_metadata has {tile_scheduler_metadata.shape[0]} rows but this call needs "
                f"num_sm_parts = {expected} (s_q*h_q/h_kv = {rows}, h_kv = {h_kv}): it was computed for "
                f"another configuration")
    if num_splits.shape[0] != b + 1:
        raise ValueError(f"num_splits must have shape ({b + 1},) (batch size + 1), got {_shape(num_splits)}: "
                         f"it was computed for another batch size")


def _resolve_schedule(sched, num_splits, q, cache_seqlens, h_kv, causal):
    """Return (tile_scheduler_metadata, num_splits) tensors for any of the three call styles."""
    b, s_q, h_q, _ = q.shape
    rows = s_q * h_q // h_kv
    if isinstance(sched, FlashMLASchedMeta):
        if num_splits is not None:
            raise ValueError("num_splits must be None when tile_scheduler_metadata is a FlashMLASchedMeta")
        config = dict(b=b, s_q=s_q, h_q=h_q, h_kv=h_kv, causal=causal)
        if not sched.have_initialized:
            sched.tile_scheduler_metadata, sched.num_splits = get_mla_metadata(cache_seqlens, rows, h_kv)
            sched.config, sched.have_initialized = config, True
        else:
            for key, value in config.items():
                if sched.config[key] != value:
                    raise ValueError(
                        f"sched_meta.config.{key} must be equal to {value} (it was initialised with "
                        f"{sched.config[key]}): your input arguments are inconsistent with sched_meta; "
                        "use a new get_mla_metadata() object for a different configuration")
        return sched.tile_scheduler_metadata, sched.num_splits
    if sched is None and num_splits is None:
        return get_mla_metadata(cache_seqlens, rows, h_kv)
    _check_metadata(sched, num_splits, q, h_kv)
    return sched, num_splits


# --------------------------------------------------------------------------- the kernel call
def flash_mla_with_kvcache(q: torch.Tensor,
                           k_cache: torch.Tensor,
                           block_table: torch.Tensor,
                           cache_seqlens: torch.Tensor,
                           head_dim_v: int,
                           tile_scheduler_metadata=None,
                           num_splits: Optional[torch.Tensor] = None,
                           softmax_scale: Optional[float] = None,
                           causal: bool = False,
                           is_fp8_kvcache: bool = False,
                           indices: Optional[torch.Tensor] = None,
                           *, backend: Optional[str] = None,
                           check_values: Optional[bool] = None):
    """Paged MLA decode attention (FlashMLA-compatible).

    Args:
        q: ``[b, s_q, h_q, 576]`` bf16 or fp16; rows are ``[q_nope @ W_UK (512) | q_rope (64)]``.
        k_cache: ``[num_blocks, 64, h_kv, 576]``, q's dtype; rows ``[c_kv (512) | k_rope (64)]``.
            V is ``k_cache[..., :512]``. Rows past a sequence's length may hold anything (NaN).
        block_table: int32 ``[b, max_blocks_per_seq]``; entry ``[i, j]`` is the page holding
            tokens ``64j .. 64j+63`` of request ``i``. Entries past ``ceil(seqlen/64)`` are ignored.
        cache_seqlens: int32 ``[b]``; tokens in the cache per request, the s_q new ones included.
        head_dim_v: must be 512.
        tile_scheduler_metadata, num_splits: from ``get_mla_metadata`` (tensors), or a lazy
            ``FlashMLASchedMeta`` with ``num_splits=None``, or both None (computed here).
        softmax_scale: defaults to ``576 ** -0.5``; DeepSeek models pass their own.
        causal: bottom-right aligned causal mask over the s_q new tokens (no-op for s_q = 1).
        is_fp8_kvcache, indices: DeepSeek's fp8 / sparse modes; not supported (must be False/None).
        backend: "auto" (default, or $FLASHMLA_BACKEND), "cuda", "triton" or "reference".
        check_values: also check values (seqlens in range, used block-table entries valid);
            default on for CPU tensors, opt-in on a GPU (it synchronises) or FLASHMLA_CHECK_VALUES=1.

    Returns:
        ``out [b, s_q, h_q, 512]`` in q's dtype, ``lse [b, h_q, s_q]`` float32 (natural log;
        +inf with out = 0 for a row that has nothing to attend).
    """
    if is_fp8_kvcache:
        raise ValueError("is_fp8_kvcache=True is not supported: flashmla implements dense bf16/fp16 decode")
    if indices is not None:
        raise ValueError("indices must be None: sparse attention is not supported")
    validate_decode_inputs(q, k_cache, block_table, cache_seqlens, head_dim_v, check_values)
    if softmax_scale is None:
        softmax_scale = HEAD_DIM_QK ** -0.5
    s_q, h_kv = q.shape[1], k_cache.shape[2]
    causal = bool(causal) and s_q > 1  # one query token sees the whole cache either way
    name = resolve_backend(backend, q.device)
    metadata, splits = _resolve_schedule(tile_scheduler_metadata, num_splits, q, cache_seqlens, h_kv, causal)
    module = _backend_module(name)
    return module.decode(q, k_cache, block_table, cache_seqlens, float(softmax_scale), causal, metadata, splits)
