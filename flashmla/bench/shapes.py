"""Benchmark shapes, their inputs and their FLOP / byte counts.

A :class:`Shape` is one decode problem: batch ``b``, ``s_q`` new tokens per request, ``h_q`` query
heads over ``h_kv`` latent kv heads, and a mean cache length that is either every request's
length (fixed) or the mean of FlashMLA's length generator (varied). Named suites group shapes:

* ``table``: the 35 rows of shared/perf-targets.md (FlashMLA's own table, plus b=1 and
  b=32 x 32K), which carry anchor and target times (``targets.csv``);
* ``sweep``: b=128, s_q=1, fixed lengths 1K ... 32K, h_q in {16, 128} (the bandwidth plot);
* ``small``: small batches (latency; CUDA-graph time is reported for them);
* ``long``: long contexts;
* ``quick``: a few rows of each, for a short run; ``tiny``: CPU-sized shapes for CI.

Inputs follow perf-targets.md exactly: values ``randn / 10`` clamped to +-1, pages in a random
permutation of the cache, the unused tail of every last page (and every spare page) NaN, and
garbage page ids in block-table slots past a sequence's end.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import math
import re
from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch

from .. import testing

PAGE_SIZE = 64
HEAD_DIM_QK = 576
HEAD_DIM_V = 512
# Block-table slots past a sequence's end hold these (out of range, even negative): a kernel
# that reads them faults or gives wrong results instead of silently passing.
GARBAGE_PAGE_IDS = (2147480000, -7, 123456789)
TARGETS_CSV = Path(__file__).with_name("targets.csv")


@dataclasses.dataclass(frozen=True)
class Shape:
    b: int
    s_q: int
    seqlen: int  # every request's length (fixed) or the generator's mean (varied)
    h_q: int
    varlen: bool = False
    h_kv: int = 1
    causal: bool = True
    dtype: str = "bf16"

    def __post_init__(self):
        for name in ("b", "s_q", "seqlen", "h_q", "h_kv"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"Shape.{name} must be a positive int, got {value!r}")
        if self.h_q % self.h_kv:
            raise ValueError(f"Shape.h_q ({self.h_q}) must be a multiple of h_kv ({self.h_kv})")
        if self.dtype not in DTYPES:
            raise ValueError(f"Shape.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")

    @property
    def key(self) -> str:
        """A stable, readable identifier, also accepted by :func:`parse_shape`."""
        return (f"b={self.b},s_q={self.s_q},seqlen={self.seqlen},h_q={self.h_q},varlen={int(self.varlen)}"
                f",h_kv={self.h_kv},causal={int(self.causal)},dtype={self.dtype}")

    @property
    def label(self) -> str:
        """Short label for plots and tables."""
        lens = "var" if self.varlen else "fix"
        return f"b{self.b} s{self.s_q} {_k(self.seqlen)} h{self.h_q} {lens}"

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def seqlens(self) -> list[int]:
        """Every request's cache length, the s_q new tokens included."""
        if self.varlen:
            return flashmla_varied_lengths(self.b, self.seqlen, self.s_q)
        return [self.seqlen] * self.b


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _k(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def flashmla_varied_lengths(batch: int, mean: int, s_q: int) -> list[int]:
    """FlashMLA's length generator, exactly as perf-targets.md states it:
    ``random.seed(0); L_i = max(int(random.normalvariate(mean, mean/2)), s_q)``.

    ``flashmla.testing.flashmla_varied_lengths`` with seed 0: a private ``random.Random(0)``
    draws the same sequence as the seeded global generator, so the lengths are the ones the
    anchor figures were taken with, and the caller's global ``random`` state is left alone.
    """
    return testing.flashmla_varied_lengths(batch, mean, s_q, seed=0)


# --------------------------------------------------------------------------- FLOPs and bytes
def flops(shape: Shape, seqlens: Sequence[int]) -> float:
    """FlashMLA's count: 2 * s_q * sum(seqlen) * h_q * (576 + 512). Causal savings not subtracted."""
    return 2.0 * shape.s_q * sum(seqlens) * shape.h_q * (HEAD_DIM_QK + HEAD_DIM_V)


def bytes_moved(shape: Shape, seqlens: Sequence[int]) -> float:
    """FlashMLA's count: the cache read once per kv head, q read and out written once.
    2 bytes * (sum(seqlen) * h_kv * 576 + b * s_q * h_q * (576 + 512))."""
    elem = torch.finfo(shape.torch_dtype).bits // 8
    return float(elem * (sum(seqlens) * shape.h_kv * HEAD_DIM_QK
                         + shape.b * shape.s_q * shape.h_q * (HEAD_DIM_QK + HEAD_DIM_V)))


# --------------------------------------------------------------------------- inputs
@dataclasses.dataclass
class BenchInputs:
    """The tensors every provider receives (views of these, never copies)."""
    shape: Shape
    q: torch.Tensor  # [b, s_q, h_q, 576]
    k_cache: torch.Tensor  # [num_blocks, 64, h_kv, 576]
    block_table: torch.Tensor  # [b, max_blocks] int32, garbage past each sequence
    cache_seqlens: torch.Tensor  # [b] int32
    seqlens: list[int]
    softmax_scale: float

    @property
    def device(self) -> torch.device:
        return self.q.device


def make_inputs(shape: Shape, device: str | torch.device = "cuda", seed: int = 0,
                spare_pages: int = 3) -> BenchInputs:
    """Random paged-cache inputs for ``shape``, generated on ``device`` (no host round trip, so
    a 5 GB cache takes milliseconds on a GPU). Deterministic for a given seed and device."""
    device = torch.device(device)
    dtype = shape.torch_dtype
    seqlens = shape.seqlens()
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)

    pages = torch.tensor([math.ceil(n / PAGE_SIZE) for n in seqlens], dtype=torch.int64, device=device)
    used_pages = int(pages.sum())
    num_blocks = used_pages + spare_pages
    max_blocks = int(pages.max()) + 1  # one more column than needed: garbage a kernel must not read

    def randn(*size):
        # randn / 10 clamped to +-1, drawn directly in the benchmark dtype (as perf-targets.md).
        return torch.randn(*size, generator=gen, device=device, dtype=dtype).div_(10).clamp_(-1, 1)

    k_cache = randn(num_blocks, PAGE_SIZE, shape.h_kv, HEAD_DIM_QK)
    q = randn(shape.b, shape.s_q, shape.h_q, HEAD_DIM_QK)

    # Pages of all requests are a random permutation of the cache.
    perm = torch.randperm(num_blocks, generator=gen, device=device)
    starts = torch.cumsum(pages, 0) - pages
    col = torch.arange(max_blocks, device=device)
    in_use = col[None, :] < pages[:, None]
    garbage = torch.tensor(GARBAGE_PAGE_IDS, dtype=torch.int64, device=device)[col % len(GARBAGE_PAGE_IDS)]
    block_table = torch.where(in_use, perm[(starts[:, None] + col[None, :]).clamp_max(num_blocks - 1)],
                              garbage[None, :].expand(shape.b, -1))

    # NaN in the unused tail of each last page and in the spare pages nobody owns.
    lens = torch.tensor(seqlens, dtype=torch.int64, device=device)
    tail_start = lens % PAGE_SIZE
    has_tail = (tail_start > 0) & (pages > 0)
    last_page = perm[(starts + pages - 1).clamp_min(0)]
    rows = torch.arange(PAGE_SIZE, device=device)
    tail_mask = has_tail[:, None] & (rows[None, :] >= tail_start[:, None])
    nan = float("nan")
    k_cache[last_page[:, None].expand(-1, PAGE_SIZE)[tail_mask], rows[None, :].expand(shape.b, -1)[tail_mask]] = nan
    if spare_pages:
        k_cache[perm[used_pages:]] = nan

    return BenchInputs(shape=shape, q=q, k_cache=k_cache, block_table=block_table.to(torch.int32).contiguous(),
                       cache_seqlens=lens.to(torch.int32), seqlens=seqlens,
                       softmax_scale=HEAD_DIM_QK ** -0.5)


# --------------------------------------------------------------------------- suites
def _table_shapes() -> list[Shape]:
    seen, out = set(), []
    for row in load_targets():
        s = Shape(b=row["b"], s_q=row["s_q"], seqlen=row["mean_seqlen"], h_q=row["h_q"], varlen=row["varlen"])
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


SWEEP_SEQLENS = (1024, 2048, 4096, 8192, 16384, 32768)
SWEEP_HEADS = (16, 128)


def suite(name: str) -> list[Shape]:
    """The shapes of a named suite (see the module docstring); ``all`` = table + sweep + small + long."""
    name = name.strip().lower()
    if name == "table":
        return _table_shapes()
    if name == "sweep":
        return [Shape(128, 1, n, h) for h in SWEEP_HEADS for n in SWEEP_SEQLENS]
    if name == "small":
        return [Shape(b, 1, n, 128) for b in (1, 8) for n in (1024, 4096, 16384)] + [Shape(1, 2, 4096, 128)]
    if name == "long":
        return [Shape(32, 1, 32768, 128), Shape(32, 1, 32768, 16), Shape(32, 2, 32768, 128),
                Shape(8, 1, 65536, 128), Shape(128, 1, 32768, 128, varlen=True)]
    if name == "quick":
        return [Shape(1, 1, 4096, 128), Shape(32, 1, 32768, 128),
                Shape(128, 1, 4096, 16), Shape(128, 1, 8192, 128), Shape(128, 2, 8192, 128),
                Shape(128, 1, 8192, 128, varlen=True), Shape(128, 2, 4096, 64, varlen=True),
                Shape(128, 1, 1024, 16), Shape(128, 1, 32768, 16), Shape(128, 1, 16384, 128)]
    if name == "tiny":  # CPU: the torch reference and the Triton interpreter, in seconds
        return [Shape(2, 1, 128, 16), Shape(2, 1, 320, 16), Shape(2, 1, 128, 32), Shape(2, 2, 100, 16, varlen=True)]
    if name == "all":
        return dedupe(suite("table") + suite("sweep") + suite("small") + suite("long"))
    raise ValueError(f"unknown suite {name!r}; choose from {', '.join(SUITES)}")


SUITES = ("table", "sweep", "small", "long", "quick", "tiny", "all")


def dedupe(shapes: Iterable[Shape]) -> list[Shape]:
    """Drop repeats, keeping the first occurrence's order."""
    seen, out = set(), []
    for s in shapes:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def suites_of(shape: Shape) -> list[str]:
    """Which named suites (of table/sweep/small/long/tiny) contain ``shape``."""
    return [n for n in ("table", "sweep", "small", "long", "tiny") if shape in _suite_set(n)]


@functools.lru_cache(maxsize=None)
def _suite_set(name: str) -> frozenset:
    return frozenset(suite(name))


_ALIASES = {"seqlen": "seqlen", "mean_seqlen": "seqlen", "s_k": "seqlen", "l": "seqlen", "len": "seqlen",
            "b": "b", "batch": "b", "s_q": "s_q", "sq": "s_q", "h_q": "h_q", "hq": "h_q", "heads": "h_q",
            "h_kv": "h_kv", "hkv": "h_kv", "varlen": "varlen", "varied": "varlen", "causal": "causal",
            "dtype": "dtype"}


def parse_shape(text: str) -> Shape:
    """Parse ``"b=128,s_q=2,seqlen=8192,h_q=64,varlen=1"`` (also ``8K``; any order; h_kv,
    causal and dtype optional) or the positional form ``"128,2,8192,64[,varlen]"``."""
    text = text.strip()
    if "=" not in text:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if len(parts) not in (4, 5):
            raise ValueError(f"shape {text!r}: expected 'b,s_q,seqlen,h_q[,varlen]' or key=value pairs")
        keys = ["b", "s_q", "seqlen", "h_q", "varlen"][:len(parts)]
        pairs = list(zip(keys, parts))
    else:
        pairs = []
        for item in re.split(r"[,\s]+", text):
            if not item:
                continue
            if "=" not in item:
                raise ValueError(f"shape {text!r}: {item!r} is not key=value")
            k, v = item.split("=", 1)
            if k.strip().lower() not in _ALIASES:
                raise ValueError(f"shape {text!r}: unknown key {k!r} (known: {', '.join(sorted(set(_ALIASES)))})")
            pairs.append((_ALIASES[k.strip().lower()], v.strip()))
    fields: dict = {}
    for k, v in pairs:
        if k in ("varlen", "causal"):
            if v.lower() not in ("0", "1", "true", "false", "yes", "no"):
                raise ValueError(f"shape {text!r}: {k} must be 0/1/true/false, got {v!r}")
            fields[k] = v.lower() in ("1", "true", "yes")
        elif k == "dtype":
            fields[k] = v.lower()
        else:
            m = re.fullmatch(r"(\d+)([kK]?)", v)
            if not m:
                raise ValueError(f"shape {text!r}: {k} must be an integer (8192 or 8K), got {v!r}")
            fields[k] = int(m.group(1)) * (1024 if m.group(2) else 1)
    missing = [k for k in ("b", "s_q", "seqlen", "h_q") if k not in fields]
    if missing:
        raise ValueError(f"shape {text!r}: missing {', '.join(missing)}")
    return Shape(**fields)


def select_shapes(suites: Sequence[str] = (), shapes: Sequence[str | Shape] = ()) -> list[Shape]:
    """Union of named suites and explicit shapes, without repeats."""
    out: list[Shape] = []
    for name in suites:
        out += suite(name)
    for s in shapes:
        out.append(s if isinstance(s, Shape) else parse_shape(s))
    return dedupe(out)


# --------------------------------------------------------------------------- targets
def load_targets(path: Path | str = TARGETS_CSV) -> list[dict]:
    """Rows of targets.csv (copied from shared/perf-targets.md), typed (fresh dicts per call)."""
    return [dict(r) for r in _load_targets_cached(str(path))]


@functools.lru_cache(maxsize=4)
def _load_targets_cached(path: str) -> tuple:
    rows = []
    with open(path, newline="") as f:
        lines = [line for line in f if not line.startswith("#")]
    for r in csv.DictReader(lines):
        rows.append({"gpu": r["gpu"], "b": int(r["b"]), "s_q": int(r["s_q"]), "mean_seqlen": int(r["mean_seqlen"]),
                     "h_q": int(r["h_q"]), "varlen": r["varlen"] == "1",
                     **{k: float(r[k]) for k in ("flashmla_ms", "flashinfer_fa3_ms", "vllm_triton_ms",
                                                  "best_ms", "target_ms")}})
    return tuple(rows)


def target_table_for(gpu_name: Optional[str]) -> Optional[str]:
    """Which anchor table applies to a GPU: 'H200', 'H100' or None (no anchors for this card)."""
    if not gpu_name:
        return None
    name = gpu_name.upper()
    if "H200" in name:
        return "H200"
    if "H100" in name:
        return "H100"
    return None


def anchors(shape: Shape, table: Optional[str]) -> Optional[dict]:
    """The perf-targets.md row for ``shape`` on ``table`` ('H100'/'H200'), or None."""
    if table is None or shape.h_kv != 1 or not shape.causal or shape.dtype != "bf16":
        return None
    for row in load_targets():
        if (row["gpu"], row["b"], row["s_q"], row["mean_seqlen"], row["h_q"], row["varlen"]) == \
                (table, shape.b, shape.s_q, shape.seqlen, shape.h_q, shape.varlen):
            return row
    return None
