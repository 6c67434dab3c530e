"""Helpers to drive the backend's classes through a real vLLM without a model or a GPU.

Used by tests/test_vllm_*.py and by notebooks: a ``VllmConfig`` of DeepSeek-V2-Lite built from
the shipped config.json, a stand-in for the MLA layer that vLLM's metadata builder reads its
dimensions from, and vLLM's ``CommonAttentionMetadata`` for a batch of decode requests laid
out the way vLLM's model runner lays it out (CUDA-graph padding included).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional, Sequence

import torch

V2_LITE_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "deepseek-v2-lite"
LAYER_NAME = "model.layers.0.self_attn.attn"


def prepare_cpu_environment() -> None:
    """vLLM cannot infer a platform on a CPU-only box with a CUDA wheel; give it its CPU platform.

    Call before anything imports vLLM's modules (they bind ``current_platform`` at import).
    vLLM >= 0.27 reads VLLM_TARGET_DEVICE=cpu; 0.26 only detects CPU builds, so the platform
    object is set directly there."""
    if torch.cuda.is_available():
        return
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    try:
        import vllm.platforms as platforms
    except ImportError:
        return
    current = getattr(platforms, "_current_platform", None)
    if current is None or not getattr(current, "device_type", ""):
        try:
            from vllm.platforms.cpu import CpuPlatform
        except ImportError:
            return
        platforms._current_platform = CpuPlatform()


def make_vllm_config(max_model_len: int = 4096, full_cuda_graphs: bool = False, max_num_seqs: int = 64,
                     num_speculative_tokens: int = 0):
    """A VllmConfig for DeepSeek-V2-Lite (dummy weights, no tokenizer), block size 64; with
    ``num_speculative_tokens`` > 0 an n-gram speculator (no draft model), so decode requests carry
    1 + k query tokens."""
    prepare_cpu_environment()
    from vllm.config import CacheConfig, LoadConfig, ModelConfig, VllmConfig
    from vllm.config.compilation import CUDAGraphMode

    model_config = ModelConfig(model=str(V2_LITE_CONFIG_DIR), dtype="bfloat16", max_model_len=max_model_len,
                               skip_tokenizer_init=True, enforce_eager=True)
    kwargs = dict(model_config=model_config, cache_config=CacheConfig(block_size=64),
                  load_config=LoadConfig(load_format="dummy"))
    config = VllmConfig(**kwargs)
    config.cache_config.block_size = 64  # the CPU platform resets it to 16 for its own backend
    config.scheduler_config.max_num_seqs = max_num_seqs
    if num_speculative_tokens:
        from vllm.config import SpeculativeConfig
        config.speculative_config = SpeculativeConfig(
            method="ngram", num_speculative_tokens=num_speculative_tokens, prompt_lookup_max=3,
            prompt_lookup_min=1, target_model_config=model_config, target_parallel_config=config.parallel_config)
    if full_cuda_graphs:
        # As on a GPU with CUDA graphs on; the builder then keeps persistent metadata buffers.
        config.compilation_config.cudagraph_mode = CUDAGraphMode.FULL_AND_PIECEWISE
        config.compilation_config.cudagraph_capture_sizes = [1, 2, 4, 8, 16, 32, 64]
    return config


class _PrefillBackendStandIn:
    """The builder clones the layer's prefill backend; decode-only batches never use it."""

    def clone(self):
        return self

    def prepare_metadata(self, *args, **kwargs):
        raise AssertionError("decode-only test batches must not build prefill metadata")


@dataclasses.dataclass
class MLALayerStandIn:
    """What MLACommonMetadataBuilder reads from the attention layer: DeepSeek-V2-Lite's dims."""
    q_lora_rank: Optional[int] = None
    kv_lora_rank: int = 512
    qk_nope_head_dim: int = 128
    qk_rope_head_dim: int = 64
    v_head_dim: int = 128
    num_heads: int = 16
    prefill_backend: object = dataclasses.field(default_factory=_PrefillBackendStandIn)


def kv_cache_spec(block_size: int = 64, dtype=torch.bfloat16):
    from vllm.v1.kv_cache_interface import MLAAttentionSpec
    return MLAAttentionSpec(block_size=block_size, num_kv_heads=1, head_size=576, dtype=dtype)


def make_builder(config, builder_cls=None, device="cpu"):
    """The backend's metadata builder, constructed as vLLM's runner constructs it."""
    if builder_cls is None:
        from .backend import FlashMLATutorialMetadataBuilder as builder_cls
    config.compilation_config.static_forward_context[LAYER_NAME] = MLALayerStandIn()
    from vllm.config import set_current_vllm_config
    with set_current_vllm_config(config):
        return builder_cls(kv_cache_spec(), [LAYER_NAME], config, torch.device(device))


def common_decode_metadata(seq_lens: Sequence[int], query_len: int, block_table: torch.Tensor,
                           num_padded: int = 0, device="cpu"):
    """CommonAttentionMetadata of a uniform decode batch (each request brings ``query_len`` new
    tokens; ``seq_lens`` count them). ``num_padded`` extra rows imitate CUDA-graph padding as
    vLLM 0.26's gpu_model_runner lays it out: seqlen 0, query_start_loc repeating the last value
    (query length 0), block-table row NULL_BLOCK_ID (0), token count padded to the graph size."""
    from vllm.v1.attention.backend import CommonAttentionMetadata
    real = len(seq_lens)
    lengths = list(seq_lens) + [0] * num_padded
    query_lens = [query_len] * real + [0] * num_padded
    starts = [0]
    for n in query_lens:
        starts.append(starts[-1] + n)
    # A padded graph batch still runs query_len token rows per padded request (the graph was
    # captured for num_reqs_padded * query_len tokens); their query length reads as 0.
    num_tokens = (real + num_padded) * query_len
    table = block_table.clone()
    if num_padded:
        table[real:] = 0
    slot_mapping = torch.zeros(num_tokens, dtype=torch.int64, device=device)
    fields = {f.name for f in dataclasses.fields(CommonAttentionMetadata)}
    kwargs = dict(
        query_start_loc=torch.tensor(starts, dtype=torch.int32, device=device),
        query_start_loc_cpu=torch.tensor(starts, dtype=torch.int32),
        seq_lens=torch.tensor(lengths, dtype=torch.int32, device=device),
        num_reqs=real + num_padded, num_actual_tokens=num_tokens, max_query_len=query_len,
        max_seq_len=max(lengths), block_table_tensor=table, slot_mapping=slot_mapping, causal=True)
    if "seq_lens_cpu_upper_bound" in fields:
        kwargs["seq_lens_cpu_upper_bound"] = torch.tensor(lengths, dtype=torch.int32)
    if "_seq_lens_cpu" in fields:
        kwargs["_seq_lens_cpu"] = torch.tensor(lengths, dtype=torch.int32)
    if "_num_computed_tokens_cpu" in fields:
        kwargs["_num_computed_tokens_cpu"] = torch.tensor(
            [max(l - q, 0) for l, q in zip(lengths, query_lens)], dtype=torch.int32)
    return CommonAttentionMetadata(**kwargs)


def make_impl(config, num_heads: int = 16, scale: Optional[float] = None, impl_cls=None):
    """The backend's Impl with DeepSeek-V2-Lite's MLA arguments (no weights needed for decode)."""
    if impl_cls is None:
        from .backend import FlashMLATutorialImpl as impl_cls
    from vllm.config import set_current_vllm_config
    if scale is None:
        scale = deepseek_v2_lite_softmax_scale()
    with set_current_vllm_config(config):
        return impl_cls(num_heads=num_heads, head_size=576, scale=scale, num_kv_heads=1, alibi_slopes=None,
                        sliding_window=None, kv_cache_dtype="auto", logits_soft_cap=None, attn_type="decoder",
                        kv_sharing_target_layer_name=None, q_lora_rank=None, kv_lora_rank=512,
                        qk_nope_head_dim=128, qk_rope_head_dim=64, qk_head_dim=192, v_head_dim=128,
                        kv_b_proj=None)


def deepseek_v2_lite_softmax_scale() -> float:
    """qk_head_dim ** -0.5 * mscale ** 2 with YaRN's mscale (factor 40, mscale_all_dim 0.707),
    as vLLM's deepseek_v2.py computes it."""
    import math
    mscale = 0.1 * 0.707 * math.log(40) + 1.0
    return 192 ** -0.5 * mscale * mscale
