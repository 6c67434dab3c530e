"""The arithmetic behind MLA decode, with DeepSeek-V2-Lite's numbers (notebook 01).

Three questions, each answered by small functions that the tests check:

1. **How big is the KV cache per token** for multi-head (MHA), grouped-query (GQA), multi-query
   (MQA) and multi-head latent attention (MLA)? (``kv_cache_bytes_per_token``, ``kv_cache_table``)
2. **Why can MLA attend over the compressed latent directly?** Weight absorption: the key
   up-projection ``W_UK`` folds into the query and the value up-projection ``W_UV`` into the
   output, so attention runs on the 512-wide latent plus the 64-wide RoPE key, which is exactly
   what ``flash_mla_with_kvcache`` computes. ``absorption_demo`` proves the two forms equal on
   random weights.
3. **Is decode memory- or compute-bound?** The roofline: FLOPs and bytes as FlashMLA counts
   them, arithmetic intensity ≈ 1.9 · s_q · h_q FLOP/byte for MLA against ≈ s_q · (h_q/h_kv) for
   MHA/GQA, and the GPU's ridge point. (``decode_flops``, ``decode_bytes``, ``roofline``)

Symbols follow the DeepSeek-V2 paper: ``d_c`` = kv_lora_rank (512), ``d_h`` = per-head dim of
the non-RoPE part (128), ``d_R`` = RoPE dim (64), ``n_h`` = heads, ``l`` = layers.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import torch

BLOCK_SIZE = 64  # KV-cache page size used by the kernels


# --------------------------------------------------------------------------- model shapes
@dataclasses.dataclass(frozen=True)
class MLAConfig:
    """The attention shapes of a DeepSeek MLA model (values from its config.json)."""
    name: str
    hidden_size: int
    num_heads: int
    num_layers: int
    kv_lora_rank: int  # d_c: width of the compressed latent c_kv
    qk_nope_head_dim: int  # d_h: per-head q/k width without position information
    qk_rope_head_dim: int  # d_R: width of the decoupled RoPE key, shared by all heads
    v_head_dim: int
    q_lora_rank: Optional[int] = None
    rope_theta: float = 10000.0
    yarn_factor: Optional[float] = None  # rope_scaling.factor when rope_scaling.type == "yarn"
    yarn_mscale_all_dim: Optional[float] = None

    @property
    def latent_dim(self) -> int:
        """Width of one cached MLA row: latent + RoPE key (576 for DeepSeek V2/V3)."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    def softmax_scale(self) -> float:
        """The scale the model applies to q·k: ``qk_head_dim ** -0.5`` (192, *not* 576, even
        though the absorbed dot product runs over 576 numbers), times YaRN's ``mscale**2`` when
        the model uses YaRN context extension (DeepSeek's modeling code does the same)."""
        scale = self.qk_head_dim ** -0.5
        if self.yarn_factor and self.yarn_mscale_all_dim:
            mscale = 0.1 * self.yarn_mscale_all_dim * math.log(self.yarn_factor) + 1.0
            scale *= mscale * mscale
        return scale


#: DeepSeek-V2-Lite(-Chat): config.json values (kv_lora_rank 512, 16 heads, 27 layers).
DEEPSEEK_V2_LITE = MLAConfig(name="DeepSeek-V2-Lite", hidden_size=2048, num_heads=16, num_layers=27,
                             kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
                             q_lora_rank=None, yarn_factor=40.0, yarn_mscale_all_dim=0.707)
#: DeepSeek-V3 / R1, for scale: 128 heads and 61 layers over the same 576-wide latent row.
DEEPSEEK_V3 = MLAConfig(name="DeepSeek-V3", hidden_size=7168, num_heads=128, num_layers=61,
                        kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
                        q_lora_rank=1536, yarn_factor=40.0, yarn_mscale_all_dim=1.0)


# --------------------------------------------------------------------------- KV-cache size
ATTENTION_KINDS = ("mha", "gqa", "mqa", "mla")


def kv_cache_elements_per_token_per_layer(kind: str, config: MLAConfig, num_kv_heads: Optional[int] = None) -> int:
    """Cached numbers per token and layer (the DeepSeek-V2 paper's Table 1).

    MHA caches a key and a value of ``d_h`` for each of ``n_h`` heads (2·n_h·d_h); GQA does so
    for ``n_g`` groups (2·n_g·d_h); MQA for one (2·d_h); MLA caches the latent and the shared
    RoPE key (d_c + d_R), whatever the number of heads. ``d_h`` is the model's per-head width
    (128 here), as in the paper.
    """
    kind = kind.lower()
    d_h = config.v_head_dim
    if kind == "mha":
        return 2 * config.num_heads * d_h
    if kind == "gqa":
        if num_kv_heads is None or not (1 <= num_kv_heads <= config.num_heads):
            raise ValueError(f"num_kv_heads must be in [1, {config.num_heads}] for GQA, got {num_kv_heads!r}")
        return 2 * num_kv_heads * d_h
    if kind == "mqa":
        return 2 * d_h
    if kind == "mla":
        return config.latent_dim
    raise ValueError(f"kind must be one of {ATTENTION_KINDS}, got {kind!r}")


def kv_cache_bytes_per_token(kind: str, config: MLAConfig = DEEPSEEK_V2_LITE, *,
                             num_kv_heads: Optional[int] = None, bytes_per_element: int = 2) -> int:
    """Bytes of KV cache one token costs across all layers (bf16 by default)."""
    return (kv_cache_elements_per_token_per_layer(kind, config, num_kv_heads)
            * config.num_layers * bytes_per_element)


@dataclasses.dataclass(frozen=True)
class KVCacheRow:
    label: str
    elements_per_token_per_layer: int
    bytes_per_token: int
    gib_at_context: float  # one sequence of `context` tokens
    max_tokens_in_budget: int  # tokens that fit in `budget_gib`
    ratio_to_mla: float


def kv_cache_table(config: MLAConfig = DEEPSEEK_V2_LITE, *, context: int = 32768, budget_gib: float = 40.0,
                   gqa_groups: Sequence[int] = (4,), bytes_per_element: int = 2) -> list[KVCacheRow]:
    """MHA, GQA (for each group count), MQA and MLA side by side for one model."""
    variants = [("MHA", "mha", None)] + [(f"GQA ({g} kv heads)", "gqa", g) for g in gqa_groups]
    variants += [("MQA", "mqa", None), ("MLA", "mla", None)]
    mla = kv_cache_bytes_per_token("mla", config, bytes_per_element=bytes_per_element)
    rows = []
    for label, kind, groups in variants:
        per_token = kv_cache_bytes_per_token(kind, config, num_kv_heads=groups, bytes_per_element=bytes_per_element)
        rows.append(KVCacheRow(
            label=label,
            elements_per_token_per_layer=kv_cache_elements_per_token_per_layer(kind, config, groups),
            bytes_per_token=per_token,
            gib_at_context=per_token * context / 2**30,
            max_tokens_in_budget=int(budget_gib * 2**30 // per_token),
            ratio_to_mla=per_token / mla,
        ))
    return rows


def format_kv_cache_table(rows: Sequence[KVCacheRow], *, context: int, budget_gib: float) -> str:
    head = (f"{'attention':<20} {'elem/token/layer':>16} {'bytes/token':>12} "
            f"{f'GiB @ {context} tok':>16} {f'tokens in {budget_gib:g} GiB':>18} {'x MLA':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.label:<20} {r.elements_per_token_per_layer:>16,} {r.bytes_per_token:>12,} "
                     f"{r.gib_at_context:>16.2f} {r.max_tokens_in_budget:>18,} {r.ratio_to_mla:>7.2f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- weight absorption
@dataclasses.dataclass
class MLAWeights:
    """Random weights of one MLA attention layer (no q LoRA, as in V2-Lite).

    Shapes (x is one hidden vector):
      ``w_q``   [hidden, n_h*(d_h+d_R)]  query, per head [nope | rope]
      ``w_dkv`` [hidden, d_c]            down-projection to the cached latent c_kv
      ``w_kr``  [hidden, d_R]            the decoupled RoPE key, shared by all heads
      ``w_uk``  [d_c, n_h*d_h]           latent -> per-head key (the "nope" part)
      ``w_uv``  [d_c, n_h*d_v]           latent -> per-head value
      ``w_o``   [n_h*d_v, hidden]        output projection
    """
    config: MLAConfig
    w_q: torch.Tensor
    w_dkv: torch.Tensor
    w_kr: torch.Tensor
    w_uk: torch.Tensor
    w_uv: torch.Tensor
    w_o: torch.Tensor

    @classmethod
    def random(cls, config: MLAConfig, *, seed: int = 0, dtype=torch.float64) -> "MLAWeights":
        g = torch.Generator().manual_seed(seed)
        h, dh, dr, dc, dv, hid = (config.num_heads, config.qk_nope_head_dim, config.qk_rope_head_dim,
                                  config.kv_lora_rank, config.v_head_dim, config.hidden_size)

        def w(rows, cols):  # 1/sqrt(fan_in) keeps activations O(1) so softmax is not saturated
            return torch.randn(rows, cols, generator=g, dtype=dtype) / math.sqrt(rows)
        return cls(config, w(hid, h * (dh + dr)), w(hid, dc), w(hid, dr), w(dc, h * dh), w(dc, h * dv),
                   w(h * dv, hid))


def apply_rope(x: torch.Tensor, positions: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding on the last dim (rotate-half form). x: [..., S, (heads,) d_R]
    with positions [S]; the rotation depends on the position, which is why the RoPE part cannot
    be absorbed into a weight matrix and MLA keeps it as a separate 64-wide key."""
    d = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]  # [S, d/2]
    while angles.dim() < x.dim():  # broadcast over a heads dim sitting between S and d
        angles = angles.unsqueeze(-2)
    cos, sin = torch.cat([angles.cos()] * 2, -1).to(x.dtype), torch.cat([angles.sin()] * 2, -1).to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


def mla_cache_rows(weights: MLAWeights, x_kv: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """What MLA caches per token: ``[c_kv (d_c) | rope(k_R) (d_R)]``, shape [S, 576]."""
    c_kv = x_kv @ weights.w_dkv
    k_rope = apply_rope(x_kv @ weights.w_kr, positions, weights.config.rope_theta)
    return torch.cat([c_kv, k_rope], dim=-1)


def _split_query(weights: MLAWeights, x_q: torch.Tensor, position: torch.Tensor):
    cfg = weights.config
    q = (x_q @ weights.w_q).view(x_q.shape[0], cfg.num_heads, cfg.qk_head_dim)  # [T, h, d_h + d_R]
    q_nope, q_rope = q[..., : cfg.qk_nope_head_dim], q[..., cfg.qk_nope_head_dim:]
    return q_nope, apply_rope(q_rope, position, cfg.rope_theta)


def mla_attention_expanded(weights: MLAWeights, x_q: torch.Tensor, q_positions: torch.Tensor,
                           cache_rows: torch.Tensor) -> torch.Tensor:
    """Textbook form: decompress the cache into per-head keys and values, then ordinary MHA.

    Per token and head: k = [c_kv @ W_UK | k_R], v = c_kv @ W_UV. Costs n_h·(d_h+d_v) numbers
    per cached token to materialise, every decode step. Returns the attention output before
    ``w_o``: [T, n_h, d_v]. Causal over absolute positions (query at p sees keys <= p).
    """
    cfg = weights.config
    c_kv, k_rope = cache_rows[:, : cfg.kv_lora_rank], cache_rows[:, cfg.kv_lora_rank:]
    seq = c_kv.shape[0]
    k_nope = (c_kv @ weights.w_uk).view(seq, cfg.num_heads, cfg.qk_nope_head_dim)
    v = (c_kv @ weights.w_uv).view(seq, cfg.num_heads, cfg.v_head_dim)
    k = torch.cat([k_nope, k_rope[:, None, :].expand(seq, cfg.num_heads, cfg.qk_rope_head_dim)], dim=-1)
    q_nope, q_rope = _split_query(weights, x_q, q_positions)
    q = torch.cat([q_nope, q_rope], dim=-1)  # [T, h, 192]
    scores = torch.einsum("thd,shd->hts", q, k) * cfg.softmax_scale()
    mask = torch.arange(seq)[None, :] <= q_positions[:, None]  # [T, S]
    scores = scores.masked_fill(~mask[None], -math.inf)
    return torch.einsum("hts,shd->thd", scores.softmax(-1), v)


def absorbed_query(weights: MLAWeights, x_q: torch.Tensor, q_positions: torch.Tensor) -> torch.Tensor:
    """The query in the cache's coordinates: ``[q_nope @ W_UK^T (d_c) | rope(q_R) (d_R)]`` per
    head, shape [T, n_h, 576]. Because q_nope·(c W_UK) = (q_nope W_UK^T)·c, the key
    up-projection moves onto the query side (once per query instead of once per cached token)."""
    cfg = weights.config
    q_nope, q_rope = _split_query(weights, x_q, q_positions)
    w_uk = weights.w_uk.view(cfg.kv_lora_rank, cfg.num_heads, cfg.qk_nope_head_dim)
    q_latent = torch.einsum("thd,chd->thc", q_nope, w_uk)
    return torch.cat([q_latent, q_rope], dim=-1)


def absorbed_output(weights: MLAWeights, latent_out: torch.Tensor) -> torch.Tensor:
    """Apply W_UV after attention: [T, n_h, d_c] latent outputs -> [T, n_h, d_v]. Since
    softmax(..)·(c W_UV) = (softmax(..)·c) W_UV, the value up-projection moves to the output."""
    cfg = weights.config
    w_uv = weights.w_uv.view(cfg.kv_lora_rank, cfg.num_heads, cfg.v_head_dim)
    return torch.einsum("thc,chd->thd", latent_out, w_uv)


def mla_attention_absorbed(weights: MLAWeights, x_q: torch.Tensor, q_positions: torch.Tensor,
                           cache_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absorbed form, i.e. what the decode kernel computes: every head attends over the same
    576-wide cache rows (one shared KV head, MQA-like), values are the first 512 numbers of each
    row. Returns (output [T, n_h, d_v], latent output [T, n_h, d_c])."""
    cfg = weights.config
    q = absorbed_query(weights, x_q, q_positions)  # [T, h, 576]
    scores = torch.einsum("thd,sd->hts", q, cache_rows) * cfg.softmax_scale()
    seq = cache_rows.shape[0]
    mask = torch.arange(seq)[None, :] <= q_positions[:, None]
    scores = scores.masked_fill(~mask[None], -math.inf)
    latent_out = torch.einsum("hts,sc->thc", scores.softmax(-1), cache_rows[:, : cfg.kv_lora_rank])
    return absorbed_output(weights, latent_out), latent_out


@dataclasses.dataclass
class AbsorptionResult:
    expanded: torch.Tensor
    absorbed: torch.Tensor
    max_abs_diff: float
    max_abs_value: float
    cached_numbers_per_token: int  # MLA row width
    expanded_numbers_per_token: int  # per-head K and V the textbook form materialises


def absorption_demo(config: MLAConfig = DEEPSEEK_V2_LITE, *, seq_len: int = 37, new_tokens: int = 1,
                    seed: int = 0) -> AbsorptionResult:
    """Random layer, random hidden states: compute attention for the last ``new_tokens`` tokens
    both ways in float64 and report the difference (round-off, ~1e-15)."""
    if not (1 <= new_tokens <= seq_len):
        raise ValueError(f"new_tokens must be in [1, seq_len={seq_len}], got {new_tokens}")
    weights = MLAWeights.random(config, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(seq_len, config.hidden_size, generator=g, dtype=torch.float64)
    positions = torch.arange(seq_len)
    cache = mla_cache_rows(weights, x, positions)
    q_pos = positions[-new_tokens:]
    expanded = mla_attention_expanded(weights, x[-new_tokens:], q_pos, cache)
    absorbed, _ = mla_attention_absorbed(weights, x[-new_tokens:], q_pos, cache)
    return AbsorptionResult(expanded=expanded, absorbed=absorbed,
                            max_abs_diff=float((expanded - absorbed).abs().max()),
                            max_abs_value=float(expanded.abs().max()),
                            cached_numbers_per_token=config.latent_dim,
                            expanded_numbers_per_token=config.num_heads * (config.qk_head_dim + config.v_head_dim))


# --------------------------------------------------------------------------- paged cache
def page_cache_rows(rows_per_request: Sequence[torch.Tensor], *, dtype=torch.bfloat16, device="cpu",
                    seed: int = 0, spare_blocks: int = 2, poison: bool = True):
    """Lay cache rows [S_i, h_kv, 576] of each request into 64-token pages the way a server does.

    Pages are handed out in a random order (a request's pages are not contiguous); with
    ``poison`` the unused tail of each last page is NaN and block-table slots past each request's
    pages hold out-of-range garbage, so a kernel that reads what it should not gets caught.
    Returns ``(k_cache [num_blocks, 64, h_kv, 576], block_table int32 [b, max_blocks],
    cache_seqlens int32 [b])``.
    """
    g = torch.Generator().manual_seed(seed)
    lengths = [int(r.shape[0]) for r in rows_per_request]
    h_kv, d = rows_per_request[0].shape[1:]
    pages_needed = [math.ceil(n / BLOCK_SIZE) for n in lengths]
    max_blocks = max(max(pages_needed), 1) + spare_blocks
    num_blocks = sum(pages_needed) + spare_blocks
    fill = float("nan") if poison else 0.0
    k_cache = torch.full((num_blocks, BLOCK_SIZE, h_kv, d), fill, dtype=torch.float32)
    order = torch.randperm(num_blocks, generator=g)
    if poison:  # out-of-range page ids in the unused slots, so reading them faults or shows up
        block_table = torch.randint(num_blocks, num_blocks + 1000, (len(lengths), max_blocks),
                                    generator=g, dtype=torch.int32)
    else:
        block_table = torch.zeros((len(lengths), max_blocks), dtype=torch.int32)
    used = 0
    for i, rows in enumerate(rows_per_request):
        for j in range(pages_needed[i]):
            page = int(order[used])
            used += 1
            chunk = rows[j * BLOCK_SIZE:(j + 1) * BLOCK_SIZE].to(torch.float32)
            k_cache[page, : chunk.shape[0]] = chunk
            block_table[i, j] = page
    cache_seqlens = torch.tensor(lengths, dtype=torch.int32)
    return k_cache.to(dtype=dtype, device=device), block_table.to(device), cache_seqlens.to(device)


# --------------------------------------------------------------------------- roofline
HEAD_DIM_QK, HEAD_DIM_V = 576, 512


def decode_flops(cache_seqlens: Sequence[int], s_q: int, h_q: int) -> int:
    """FLOPs of one MLA decode call as FlashMLA counts them: 2·s_q·Σseqlen·h_q·(576 + 512)
    (QK^T over 576 and PV over 512, a multiply and an add each)."""
    return 2 * s_q * int(sum(cache_seqlens)) * h_q * (HEAD_DIM_QK + HEAD_DIM_V)


def decode_bytes(cache_seqlens: Sequence[int], s_q: int, h_q: int, h_kv: int = 1, bytes_per_element: int = 2) -> int:
    """Bytes one call must move at least: the cache read once plus q read and out written."""
    b = len(cache_seqlens)
    return bytes_per_element * (int(sum(cache_seqlens)) * h_kv * HEAD_DIM_QK
                                + b * s_q * h_q * (HEAD_DIM_QK + HEAD_DIM_V))


def mla_intensity_limit(s_q: int, h_q: int, h_kv: int = 1) -> float:
    """Arithmetic intensity for long contexts (q/out traffic negligible):
    s_q·(h_q/h_kv)·(576+512)/576 ≈ 1.89·s_q·h_q FLOP/byte for one kv head."""
    return s_q * (h_q / h_kv) * (HEAD_DIM_QK + HEAD_DIM_V) / HEAD_DIM_QK


def mha_intensity_limit(s_q: int, group_size: int = 1) -> float:
    """MHA/GQA decode for long contexts: each cached K/V number is used by ``group_size`` query
    heads times s_q tokens, one multiply-add each: ≈ s_q·group_size FLOP/byte (bf16). MHA is
    group_size = 1: about 1 FLOP/byte, deep in memory-bound territory on every GPU."""
    return float(s_q * group_size)


@dataclasses.dataclass(frozen=True)
class GPUSpec:
    name: str
    peak_tflops: float  # dense bf16 tensor-core FLOP/s, in 1e12
    bandwidth_tbs: float  # HBM bandwidth, in 1e12 bytes/s
    source: str

    @property
    def ridge_point(self) -> float:
        """FLOP/byte where time(compute) == time(memory): below it a kernel is memory-bound."""
        return self.peak_tflops / self.bandwidth_tbs

    def mla_heads_at_ridge(self, s_q: int = 1) -> float:
        """h_q (with h_kv = 1) above which long-context MLA decode becomes compute-bound."""
        return self.ridge_point * HEAD_DIM_QK / ((HEAD_DIM_QK + HEAD_DIM_V) * s_q)


GPU_SPECS = {
    "H100 SXM (datasheet)": GPUSpec("H100 SXM (datasheet)", 989.4, 3.35, "NVIDIA H100 datasheet, dense BF16"),
    "H100 SXM (measured)": GPUSpec("H100 SXM (measured)", 700.0, 3.03,
                                   "perf-targets.md: 8192^3 bf16 matmul 687-722 TFLOPS, D2D copy 3027 GB/s"),
    "H800 SXM (DeepSeek)": GPUSpec("H800 SXM (DeepSeek)", 865.0, 3.35,
                                   "FlashMLA deep-dive: 990 nominal, ~865 at the throttled clock"),
    "H200 SXM (datasheet)": GPUSpec("H200 SXM (datasheet)", 989.4, 4.8, "NVIDIA H200 datasheet, dense BF16"),
    "H20 (datasheet)": GPUSpec("H20 (datasheet)", 148.0, 4.0, "NVIDIA H20 datasheet, dense BF16"),
}


@dataclasses.dataclass(frozen=True)
class RooflinePoint:
    flops: int
    bytes: int
    intensity: float
    time_s: float  # the roofline's lower bound on time
    bound: str  # "memory" or "compute"
    attainable_tflops: float


def roofline(cache_seqlens: Sequence[int], s_q: int, h_q: int, gpu: GPUSpec, h_kv: int = 1) -> RooflinePoint:
    """Lower bound on the time of one decode call on ``gpu`` and what bounds it."""
    flops = decode_flops(cache_seqlens, s_q, h_q)
    nbytes = decode_bytes(cache_seqlens, s_q, h_q, h_kv)
    t_compute = flops / (gpu.peak_tflops * 1e12)
    t_memory = nbytes / (gpu.bandwidth_tbs * 1e12)
    t = max(t_compute, t_memory)
    return RooflinePoint(flops, nbytes, flops / nbytes, t, "compute" if t_compute >= t_memory else "memory",
                         flops / t / 1e12)


# --------------------------------------------------------------------------- plots (notebook 01)
def plot_kv_cache(config: MLAConfig = DEEPSEEK_V2_LITE, *, max_context: int = 131072, gqa_groups=(4,), ax=None):
    """KV-cache GiB of one sequence against context length for MHA / GQA / MQA / MLA."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.0))
    contexts = [2 ** k for k in range(10, int(math.log2(max_context)) + 1)]
    for row in kv_cache_table(config, context=1, gqa_groups=gqa_groups):
        ax.plot(contexts, [row.bytes_per_token * c / 2**30 for c in contexts], marker="o", label=row.label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("KV cache of one sequence (GiB, bf16)")
    ax.set_title(f"{config.name}: KV cache per sequence ({config.num_layers} layers)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return ax.figure


def plot_roofline(gpu: GPUSpec, *, seqlen: int = 4096, batch: int = 128, head_counts=(16, 32, 64, 128),
                  s_q_values=(1, 2), ax=None):
    """Roofline of ``gpu`` with MLA decode points (h_q, s_q) and MHA/GQA decode for contrast."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.2))
    xs = [2 ** (k / 4) for k in range(0, 4 * 11)]  # 1 .. ~1500 FLOP/byte
    ax.plot(xs, [min(gpu.peak_tflops, x * gpu.bandwidth_tbs) for x in xs], color="black", label=f"{gpu.name} roofline")
    ax.axvline(gpu.ridge_point, color="gray", linestyle=":", label=f"ridge {gpu.ridge_point:.0f} FLOP/B")
    lengths = [seqlen] * batch
    markers = ("o", "^", "s", "D")
    for k, s_q in enumerate(s_q_values):
        pts = [roofline(lengths, s_q, h, gpu) for h in head_counts]
        ax.scatter([p.intensity for p in pts], [p.attainable_tflops for p in pts], zorder=3,
                   marker=markers[k % len(markers)], s=70 / (k + 1), label=f"MLA decode, s_q={s_q}")
        for h, p in zip(head_counts, pts):  # label each point with its head count
            ax.annotate(f"h{h}", (p.intensity, p.attainable_tflops), textcoords="offset points",
                        xytext=(-14, 6 - 14 * k), fontsize=7)
    mha = [(1, "MHA"), (8, "GQA group 8")]
    for group, label in mha:
        x = mha_intensity_limit(1, group)
        ax.scatter([x], [min(gpu.peak_tflops, x * gpu.bandwidth_tbs)], marker="x", s=60, zorder=3,
                   label=f"{label} decode (s_q=1)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("attainable TFLOP/s")
    ax.set_title(f"MLA decode on the {gpu.name} roofline (b={batch}, seqlen={seqlen})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return ax.figure


# --------------------------------------------------------------------------- serving budget (notebook 05)
#: DeepSeek-V2-Lite(-Chat) weights in bf16: 15.706 B parameters (embeddings, 27 attention layers,
#: one dense and 26 MoE MLP layers, lm_head), as vLLM loads them.
DEEPSEEK_V2_LITE_PARAMS = 15.706e9


@dataclasses.dataclass(frozen=True)
class ServingBudget:
    gpu_memory_gib: float
    utilization: float
    weights_gib: float
    overhead_gib: float
    kv_cache_gib: float
    bytes_per_token: int
    max_tokens: int
    concurrent_requests: int  # of `context` tokens each


def serving_budget(gpu_memory_gib: float, *, kind: str = "mla", config: MLAConfig = DEEPSEEK_V2_LITE,
                   num_params: float = DEEPSEEK_V2_LITE_PARAMS, utilization: float = 0.9,
                   overhead_gib: float = 2.0, context: int = 4096, num_kv_heads: Optional[int] = None) -> ServingBudget:
    """How much KV cache vLLM can allocate: ``utilization × GPU memory − weights − overhead``
    (activations, CUDA graphs, allocator slack), and how many tokens / requests fit in it."""
    if not 0 < utilization <= 1:
        raise ValueError(f"utilization must be in (0, 1], got {utilization}")
    weights_gib = num_params * 2 / 2**30
    kv_gib = gpu_memory_gib * utilization - weights_gib - overhead_gib
    if kv_gib <= 0:
        raise ValueError(f"{gpu_memory_gib} GiB x {utilization} cannot hold {weights_gib:.1f} GiB of weights "
                         f"plus {overhead_gib} GiB of overhead")
    per_token = kv_cache_bytes_per_token(kind, config, num_kv_heads=num_kv_heads)
    tokens = int(kv_gib * 2**30 // per_token)
    return ServingBudget(gpu_memory_gib, utilization, weights_gib, overhead_gib, kv_gib, per_token, tokens,
                         tokens // context)


# --------------------------------------------------------------------------- a decode batch (notebook 04)
@dataclasses.dataclass
class DecodeBatch:
    """A batch of requests of one random MLA layer, as vLLM's decode path sees it.

    ``queries[i]`` is request i's absorbed query ``[s_q, n_h, 576]`` (``[q_nope W_UKᵀ | q_pe]``),
    ``cache_rows[i]`` its cached rows ``[L_i, 576]``; ``expected[i]`` the textbook (expanded,
    float64) attention output ``[s_q, n_h, d_v]`` of its last ``s_q`` tokens."""
    weights: MLAWeights
    queries: list
    cache_rows: list
    expected: list


def decode_batch(config: MLAConfig = DEEPSEEK_V2_LITE, seq_lens: Sequence[int] = (37, 130), s_q: int = 1,
                 seed: int = 0) -> DecodeBatch:
    """Random hidden states for each request through one random MLA layer (float64): what a
    serving engine caches, the absorbed queries of the newest ``s_q`` tokens, and the expected
    outputs computed the long way, causal over those tokens."""
    if any(n < s_q for n in seq_lens):
        raise ValueError(f"every sequence must hold at least s_q={s_q} tokens, got {list(seq_lens)}")
    weights = MLAWeights.random(config, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    queries, rows, expected = [], [], []
    for n in seq_lens:
        x = torch.randn(n, config.hidden_size, generator=g, dtype=torch.float64)
        positions = torch.arange(n)
        cache = mla_cache_rows(weights, x, positions)
        q_pos = positions[n - s_q:]
        queries.append(absorbed_query(weights, x[n - s_q:], q_pos))
        rows.append(cache)
        expected.append(mla_attention_expanded(weights, x[n - s_q:], q_pos, cache))
    return DecodeBatch(weights, queries, rows, expected)
