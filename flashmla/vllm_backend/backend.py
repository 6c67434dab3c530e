"""The vLLM MLA decode backend on ``flashmla.flash_mla_with_kvcache``.

Four classes, as every vLLM MLA backend has them (vLLM's FlashMLA backend is the model):

* ``FlashMLATutorialBackend``: what vLLM's selector validates (dtypes, head size 576, kernel
  block size 64, compute capability) and where it finds the other three classes;
* ``FlashMLATutorialMetadataBuilder``: once per step on the host, turns vLLM's common metadata
  into our decode metadata: block table, lengths and the tile schedule of
  ``flashmla.get_mla_metadata``. Under full CUDA graphs the schedule is copied into persistent
  buffers so the captured kernels find it at a fixed address;
* ``FlashMLATutorialMetadata`` / ``...DecodeMetadata``: the dataclasses it fills;
* ``FlashMLATutorialImpl``: ``forward_mqa``, the decode attention on the absorbed query
  ``[ql_nope (512) | q_pe (64)]`` against the latent cache ``[c_kv (512) | k_pe (64)]``.

Prefill, the KV-cache write, weight absorption and the V up-projection are vLLM's
(``MLACommonImpl``); this file only replaces the decode kernel.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch

from vllm.model_executor.layers.attention.mla_attention import (MLACommonBackend, MLACommonDecodeMetadata,
                                                               MLACommonImpl, MLACommonMetadata,
                                                               MLACommonMetadataBuilder, QueryLenSupport)
from vllm.v1.attention.backend import AttentionCGSupport, AttentionType

import flashmla
from flashmla import scheduler

from . import BACKEND_NAME, compat, verify

logger = logging.getLogger("flashmla.vllm_backend")

KERNEL_BLOCK_SIZE = 64
HEAD_SIZE = 576          # kv_lora_rank 512 + qk_rope_head_dim 64
KERNEL_ENV = "FLASHMLA_VLLM_KERNEL"   # "auto" (default) | "cuda" | "triton" | "reference"


def _selection_problem() -> Optional[str]:
    """Why this vLLM must not use the backend (version outside the range, API changed), or None."""
    version = compat.installed_vllm_version() or "unknown"
    level, message = compat.version_problem(version) if version != "unknown" else ("ok", "")
    if level == "error":
        return message
    return compat.api_problem()


class FlashMLATutorialBackend(MLACommonBackend):
    supported_dtypes: ClassVar[list[torch.dtype]] = [torch.float16, torch.bfloat16]
    # Dense bf16/fp16 cache only: the kernels have no fp8 path.
    supported_kv_cache_dtypes: ClassVar[list[str]] = ["auto", "float16", "bfloat16"]

    @staticmethod
    def get_supported_kernel_block_sizes(*args, **kwargs) -> list:
        # One 64-token page per TMA load in the CUDA kernel; vLLM then sets block_size = 64
        # (or splits a larger framework block into 64-token kernel blocks).
        return [KERNEL_BLOCK_SIZE]

    @staticmethod
    def get_name() -> str:
        # Must name a registry member: vLLM looks backends up by this name in places.
        return "CUSTOM"

    @staticmethod
    def get_builder_cls() -> type["FlashMLATutorialMetadataBuilder"]:
        return FlashMLATutorialMetadataBuilder

    @staticmethod
    def get_impl_cls() -> type["FlashMLATutorialImpl"]:
        return FlashMLATutorialImpl

    @classmethod
    def get_supported_head_sizes(cls) -> list[int]:
        return [HEAD_SIZE]

    @classmethod
    def supports_compute_capability(cls, capability) -> bool:
        # sm90: the CUDA kernel (when built); sm80+: the Triton kernel.
        return capability.major >= 8

    @classmethod
    def supports_combination(cls, head_size, dtype, kv_cache_dtype, block_size, use_mla, has_sink,
                             use_sparse, *args, **kwargs) -> Optional[str]:
        problem = _selection_problem()
        if problem is not None:
            return f"flashmla: {problem}"
        if use_sparse:
            return "flashmla implements dense MLA decode only (no sparse/DSA attention)"
        return None


class FlashMLATutorialNamedBackend(FlashMLATutorialBackend):
    """The same backend under its own registry name (vLLM >= 0.32)."""

    @staticmethod
    def get_name() -> str:
        return BACKEND_NAME


@dataclass
class FlashMLATutorialDecodeMetadata(MLACommonDecodeMetadata):
    tile_scheduler_metadata: torch.Tensor   # int32 [num_sm_parts, 8] (docs/internals.md)
    num_splits: torch.Tensor                # int32 [num_decodes + 1]
    query_len: int                          # s_q: 1, or 1 + speculative tokens


@dataclass
class FlashMLATutorialMetadata(MLACommonMetadata[FlashMLATutorialDecodeMetadata]):
    pass


class FlashMLATutorialMetadataBuilder(MLACommonMetadataBuilder[FlashMLATutorialMetadata]):
    # Full CUDA graphs for batches whose requests all have the same query length (decode, and
    # speculative verification with 1 + k tokens, causal). The kernel takes any s_q.
    _cudagraph_support: ClassVar[AttentionCGSupport] = AttentionCGSupport.UNIFORM_BATCH
    query_len_support: ClassVar[QueryLenSupport] = QueryLenSupport.UNIFORM
    # Decode only; vLLM raises this to 1 + num_speculative_tokens when speculation is on.
    reorder_batch_threshold: int = 1

    def __init__(self, kv_cache_spec, layer_names, vllm_config, device, *args, **kwargs):
        super().__init__(kv_cache_spec, layer_names, vllm_config, device, FlashMLATutorialMetadata)
        # Heads per rank of these layers (vLLM sets num_heads; a draft model may differ from the target).
        self.num_q_heads = getattr(self, "num_heads", None) or \
            vllm_config.model_config.get_num_attention_heads(vllm_config.parallel_config)
        self.num_sms = scheduler.device_num_sms(torch.device(device))
        self.graph_tile_metadata: Optional[torch.Tensor] = None
        self.graph_num_splits: Optional[torch.Tensor] = None
        if self.compilation_config.cudagraph_mode.has_full_cudagraphs():
            # num_sm_parts <= num_sms, and a graph batch has at most max_num_seqs requests.
            max_requests = max(vllm_config.scheduler_config.max_num_seqs,
                               max(self.compilation_config.cudagraph_capture_sizes or [0]))
            self.graph_tile_metadata = torch.zeros((self.num_sms, scheduler.METADATA_WIDTH),
                                                   dtype=torch.int32, device=device)
            self.graph_num_splits = torch.zeros((max_requests + 1,), dtype=torch.int32, device=device)
        self.verifier = verify.setup(torch.device(device))

    def build(self, *args, **kwargs):
        if self.verifier is not None:
            self.verifier.poll()  # raises VerificationError after a mismatch in an earlier step
        return super().build(*args, **kwargs)

    def _build_decode(self, *, block_table_tensor: torch.Tensor, seq_lens_device: torch.Tensor,
                      query_start_loc_cpu: torch.Tensor, num_decode_tokens: int,
                      dcp_tot_seq_lens_device: Optional[torch.Tensor] = None,
                      **kwargs) -> FlashMLATutorialDecodeMetadata:
        num_decodes = seq_lens_device.shape[0]
        # Uniform batches: every decode request has the same query length (host tensor, no sync).
        query_len = int((query_start_loc_cpu[1:] - query_start_loc_cpu[:-1]).max())
        tile_metadata, num_splits = flashmla.get_mla_metadata(seq_lens_device, query_len * self.num_q_heads, 1)
        if self.graph_tile_metadata is not None:
            # Captured kernels read these addresses on every replay. Metadata for the real batch
            # is safe in a graph captured for a padded batch (docs/internals.md): padded rows have
            # seqlen 0, so they get 0 chunks and no part reads their block table.
            parts = tile_metadata.shape[0]
            if parts > self.graph_tile_metadata.shape[0] or num_decodes + 1 > self.graph_num_splits.shape[0]:
                raise RuntimeError(f"flashmla: metadata for {num_decodes} requests / {parts} SM parts does not fit "
                                   f"the CUDA-graph buffers ({self.graph_num_splits.shape[0] - 1} requests, "
                                   f"{self.graph_tile_metadata.shape[0]} parts)")
            self.graph_tile_metadata[:parts].copy_(tile_metadata)
            tile_metadata = self.graph_tile_metadata[:parts]
            self.graph_num_splits[:num_decodes + 1].copy_(num_splits)
            num_splits = self.graph_num_splits[:num_decodes + 1]
        return FlashMLATutorialDecodeMetadata(
            block_table=block_table_tensor,
            seq_lens=seq_lens_device,
            dcp_tot_seq_lens=dcp_tot_seq_lens_device,
            tile_scheduler_metadata=tile_metadata,
            num_splits=num_splits,
            query_len=query_len,
        )


class FlashMLATutorialImpl(MLACommonImpl[FlashMLATutorialMetadata]):
    can_return_lse_for_decode: bool = True

    def __init__(self, num_heads, head_size, scale, num_kv_heads, alibi_slopes, sliding_window,
                 kv_cache_dtype, logits_soft_cap, attn_type, kv_sharing_target_layer_name, **mla_args):
        super().__init__(num_heads, head_size, scale, num_kv_heads, alibi_slopes, sliding_window,
                         kv_cache_dtype, logits_soft_cap, attn_type, kv_sharing_target_layer_name, **mla_args)
        if any([alibi_slopes, sliding_window, logits_soft_cap]):
            raise NotImplementedError("flashmla's vLLM backend supports none of alibi_slopes, "
                                      "sliding_window, logits_soft_cap")
        if attn_type != AttentionType.DECODER:
            raise NotImplementedError(f"flashmla's vLLM backend supports decoder self-attention only, "
                                      f"got attn_type={attn_type}")
        if self.kv_lora_rank != flashmla.interface.HEAD_DIM_V:
            raise NotImplementedError(f"flashmla needs kv_lora_rank = {flashmla.interface.HEAD_DIM_V}, "
                                      f"got {self.kv_lora_rank}")
        # The query stays bf16/fp16: there is no fp8 query path.
        self.supports_quant_query_input = False
        self.kernel = os.environ.get(KERNEL_ENV, "auto").strip().lower() or "auto"
        self._announced = False

    def _announce(self, device: torch.device) -> None:
        # One line per process naming the kernel that really runs, for logs and benchmarks.
        if not self._announced:
            chosen = flashmla.resolve_backend(self.kernel, device)
            logger.warning("flashmla vLLM backend active: kernel=%s on %s (%s=%s)", chosen, device,
                           KERNEL_ENV, self.kernel)
            self._announced = True

    def forward_mqa(self, q, kv_c_and_k_pe_cache: torch.Tensor, attn_metadata: FlashMLATutorialMetadata,
                    layer) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        decode = attn_metadata.decode
        if decode is None:
            raise RuntimeError("flashmla forward_mqa was called without decode metadata")
        if isinstance(q, tuple):
            q = torch.cat(q, dim=-1)          # [tokens, heads, 512 + 64]
        if kv_c_and_k_pe_cache.dim() != 3 or kv_c_and_k_pe_cache.shape[1] != KERNEL_BLOCK_SIZE:
            raise RuntimeError(f"flashmla expects the MLA cache as [num_blocks, {KERNEL_BLOCK_SIZE}, {HEAD_SIZE}], "
                               f"got {tuple(kv_c_and_k_pe_cache.shape)}")
        num_decodes = attn_metadata.num_decodes
        # Uniform batch: tokens are grouped per request -> [b, s_q, heads, 576]
        q = q.reshape(num_decodes, -1, q.shape[-2], q.shape[-1])
        k_cache = kv_c_and_k_pe_cache.unsqueeze(-2)   # [num_blocks, 64, h_kv = 1, 576]
        if not self._announced:
            self._announce(q.device)
        backend = None if self.kernel == "auto" else self.kernel
        out, lse = flashmla.flash_mla_with_kvcache(
            q, k_cache, decode.block_table, decode.seq_lens, self.kv_lora_rank,
            decode.tile_scheduler_metadata, decode.num_splits,
            softmax_scale=self.scale, causal=True, backend=backend)
        verifier = verify.active()
        if verifier is not None:
            verifier.check(q, k_cache, decode.block_table, decode.seq_lens, self.scale,
                           q.shape[1] > 1, out, lse)
        out = out.reshape(-1, out.shape[-2], out.shape[-1])   # [b * s_q, heads, 512]
        if getattr(self, "need_to_return_lse_for_decode", False):
            # Context-parallel merging wants [tokens, heads]; ours is [b, heads, s_q].
            lse = lse.permute(0, 2, 1).reshape(-1, lse.shape[1]).contiguous()
        return out, lse
