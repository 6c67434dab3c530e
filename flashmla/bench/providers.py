"""The implementations the benchmark runs side by side, behind one small interface.

Each provider says whether it can run here (and why not), which shapes it supports, and
``prepare``s a call on the shared inputs: the tensors of :class:`~flashmla.bench.shapes.BenchInputs`
are passed as they are or as views (``q.view``, ``k_cache[..., :512]``), never copied, so every
provider reads the same bytes. Per-step metadata (FlashMLA's tile schedule, FlashInfer's plan,
vLLM's split count) is made in ``prepare``, outside the timed call, as perf-targets.md does.

Providers:
  torch            fp32 reference (the oracle the others are checked against)
  flashmla-cuda    our sm90a kernel, ``flashmla.flash_mla_with_kvcache(backend="cuda")``
  flashmla-triton  our Triton backend: on Hopper its Gluon kernel, elsewhere the portable kernel
                   (on the CPU: the Triton interpreter)
  flashmla-triton-portable  the portable kernel where flashmla-triton runs the Gluon one (Hopper)
  flashinfer-fa3   FlashInfer ``BatchMLAPagedAttentionWrapper(backend="fa3")`` (Hopper)
  flashinfer-fa2   the same, ``backend="fa2"``
  flashmla-head    DeepSeek's FlashMLA at a pinned commit (9241ae3, perf-targets.md's anchor), built
                   by scripts/build_flashmla_head.sh from a checkout you provide (C entry point, ctypes)
  flash_mla        DeepSeek's FlashMLA: the ``flash_mla`` package when installed, else vLLM's build
                   of it (``vllm/_flashmla_C.abi3.so`` + its ``flash_mla_interface.py``)
  vllm-triton      vLLM's Triton MLA decode op (``vllm/v1/attention/ops/triton_decode_attention.py``)

The two vLLM-derived providers load single files from a vLLM install or from an extracted
``vllm-kernels`` folder (``$FLASHMLA_BENCH_VLLM_KERNELS``) without importing vLLM itself.
"""
from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import importlib
import importlib.util
import math
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

import torch

from .shapes import HEAD_DIM_QK, HEAD_DIM_V, PAGE_SIZE, BenchInputs, Shape

HEAD_DIM_ROPE = HEAD_DIM_QK - HEAD_DIM_V
LN2 = math.log(2.0)
VLLM_KERNELS_ENV = "FLASHMLA_BENCH_VLLM_KERNELS"


@dataclasses.dataclass
class Prepared:
    """A ready-to-time call.

    ``run()`` is the timed call; ``outputs(result)`` turns its result into
    ``(out [b, s_q, h_q, 512], lse [b, h_q, s_q] natural log or None)`` for the check (outside
    the timed region). ``run_e2e`` (optional) also does the per-step metadata work.
    ``graph_note`` non-empty means: do not try a CUDA graph, for this reason.
    """
    run: Callable[[], object]
    outputs: Callable[[object], tuple[torch.Tensor, Optional[torch.Tensor]]]
    run_e2e: Optional[Callable[[], object]] = None
    graph_note: str = ""


class Provider:
    name: str = ""
    description: str = ""
    is_reference: bool = False

    def availability(self, device: torch.device) -> tuple[bool, str]:
        """(can run on ``device``, reason when not). Must never raise."""
        raise NotImplementedError

    def version(self) -> str:
        return ""

    def supports(self, shape: Shape) -> tuple[bool, str]:
        return True, ""

    def prepare(self, inputs: BenchInputs) -> Prepared:
        raise NotImplementedError


def _standard_outputs(result) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    out, lse = result
    return out, lse


# --------------------------------------------------------------------------- torch reference
def reference_decode(q: torch.Tensor, k_cache: torch.Tensor, block_table: torch.Tensor,
                     cache_seqlens: torch.Tensor, softmax_scale: float, causal: bool,
                     seqlens: Optional[list[int]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Paged MLA decode in fp32, one matmul pair per request and kv head.

    The same semantics as ``flashmla.reference.decode`` (the test oracle; ``tests/test_bench.py``
    checks the two agree), written to stay fast and small on big shapes: no ``repeat_interleave``
    of the cache over heads, so a 32K-token request costs [rows x 32K] fp32 scores, not a copy
    of the cache per head.
    """
    b, s_q, h_q, _ = q.shape
    h_kv = k_cache.shape[2]
    group = h_q // h_kv
    rows = s_q * group
    out = torch.zeros(b, s_q, h_q, HEAD_DIM_V, dtype=torch.float32, device=q.device)
    lse = torch.full((b, h_q, s_q), math.inf, dtype=torch.float32, device=q.device)
    if seqlens is None:
        seqlens = cache_seqlens.tolist()
    token_of_row = torch.arange(rows, device=q.device) // group  # row r = (token t, head in group)
    for i, n in enumerate(seqlens):
        if n <= 0:
            continue
        pages = block_table[i, :math.ceil(n / PAGE_SIZE)].long()
        kv = k_cache[pages].reshape(-1, h_kv, HEAD_DIM_QK)[:n].float().permute(1, 0, 2)  # [h_kv, n, 576]
        qi = q[i].float().view(s_q, h_kv, group, HEAD_DIM_QK).permute(1, 0, 2, 3).reshape(h_kv, rows, HEAD_DIM_QK)
        scores = torch.bmm(qi, kv.transpose(1, 2)) * softmax_scale  # [h_kv, rows, n]
        if causal and s_q > 1:
            # bottom-right aligned: token t sees keys [0, n - (s_q - 1 - t))
            limit = n - (s_q - 1 - token_of_row)
            allowed = torch.arange(n, device=q.device)[None, :] < limit[:, None]
            scores = scores.masked_fill(~allowed[None], -math.inf)
        row_lse = torch.logsumexp(scores, dim=-1)  # [h_kv, rows]
        probs = torch.exp(scores - row_lse[..., None]).nan_to_num_(0.0)
        o = torch.bmm(probs, kv[..., :HEAD_DIM_V])  # [h_kv, rows, 512]
        out[i] = o.view(h_kv, s_q, group, HEAD_DIM_V).permute(1, 0, 2, 3).reshape(s_q, h_q, HEAD_DIM_V)
        row_lse = torch.where(torch.isfinite(row_lse), row_lse, torch.full_like(row_lse, math.inf))
        lse[i] = row_lse.view(h_kv, s_q, group).permute(0, 2, 1).reshape(h_q, s_q)
    return out.to(q.dtype), lse


class TorchReference(Provider):
    name = "torch"
    description = "fp32 torch reference (the oracle)"
    is_reference = True

    def availability(self, device):
        return True, ""

    def version(self):
        return f"torch {torch.__version__}"

    def prepare(self, inputs):
        def run():
            # Full fp32: no TF32 in the oracle.
            prev = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False
            try:
                return reference_decode(inputs.q, inputs.k_cache, inputs.block_table, inputs.cache_seqlens,
                                        inputs.softmax_scale, inputs.shape.causal, inputs.seqlens)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = prev
        return Prepared(run=run, outputs=_standard_outputs,
                        graph_note="the reference loops over requests in Python; not graph-timed")


# --------------------------------------------------------------------------- ours
class FlashMLAOurs(Provider):
    """Our kernels through the public API, exactly as a user calls them."""

    def __init__(self, backend: str):
        self.backend = backend
        self.name = f"flashmla-{backend}"
        self.description = {"cuda": "flashmla sm90a CUDA kernel", "triton": "flashmla Triton kernel"}[backend]

    def availability(self, device):
        try:
            import flashmla
            ok, why = flashmla.backend_status(device).get(self.backend, (False, "unknown backend"))
            return bool(ok), why
        except Exception as exc:
            return False, f"import flashmla failed: {exc!r}"

    def version(self):
        try:
            import flashmla
            from flashmla import env
            commit = env.flashmla_git_commit()
            return f"flashmla {flashmla.__version__}" + (f" ({commit})" if commit else "")
        except Exception:
            return "flashmla"

    def prepare(self, inputs):
        import flashmla
        s = inputs.shape
        rows = s.s_q * s.h_q // s.h_kv

        def metadata():
            return flashmla.get_mla_metadata(inputs.cache_seqlens, rows, s.h_kv)

        md, num_splits = metadata()
        call = self._decode_call(inputs)
        return Prepared(run=lambda: call(md, num_splits), outputs=_standard_outputs,
                        run_e2e=lambda: call(*metadata()))

    def _decode_call(self, inputs):
        """call(metadata, num_splits) -> (out, lse): the public API with this provider's backend."""
        import flashmla
        s = inputs.shape

        def call(md, num_splits):
            return flashmla.flash_mla_with_kvcache(
                inputs.q, inputs.k_cache, inputs.block_table, inputs.cache_seqlens, HEAD_DIM_V,
                md, num_splits, softmax_scale=inputs.softmax_scale, causal=s.causal, backend=self.backend)
        return call


class FlashMLATritonPortable(FlashMLAOurs):
    """The Triton backend's portable kernel on a GPU where the backend runs its Gluon Hopper
    kernel by default (the portable one is what other GPUs get; here it is timed beside it)."""

    def __init__(self):
        super().__init__("triton")
        self.name = "flashmla-triton-portable"
        self.description = "flashmla portable Triton kernel (tl.dot; the backend's kernel off Hopper)"

    def availability(self, device):
        ok, why = super().availability(device)
        if not ok:
            return ok, why
        from flashmla import triton_decode
        if triton_decode.kernel_config(device, 64).kernel != "gluon":
            return False, "the Triton backend runs the portable kernel here already (see flashmla-triton)"
        return True, ""

    def _decode_call(self, inputs):
        from flashmla import triton_decode
        s = inputs.shape
        config = triton_decode.kernel_config(inputs.q.device, s.s_q * s.h_q // s.h_kv, portable=True)

        def call(md, num_splits):
            return triton_decode.decode_with_config(
                inputs.q, inputs.k_cache, inputs.block_table, inputs.cache_seqlens, inputs.softmax_scale,
                s.causal and s.s_q > 1, config=config, tile_scheduler_metadata=md, num_splits=num_splits)
        return call


# --------------------------------------------------------------------------- FlashInfer
class FlashInferMLA(Provider):
    """FlashInfer's ``BatchMLAPagedAttentionWrapper`` (the fa2 / fa3 backends).

    The cache and q are passed as views (no copy): FlashInfer's structural inputs take a packed
    [tokens, heads, 576] query and a packed [pages, 64, 576] cache and split them into strided
    512 / 64 views. Older FlashInfer versions (flat ``plan`` arguments, base-2 lse) are handled too.
    """

    def __init__(self, backend: str):
        self.backend = backend
        self.name = f"flashinfer-{backend}"
        self.description = f"FlashInfer BatchMLAPagedAttentionWrapper backend={backend}"

    def _import(self):
        import flashinfer  # noqa: F401
        from flashinfer.mla import BatchMLAPagedAttentionWrapper
        return flashinfer, BatchMLAPagedAttentionWrapper

    def availability(self, device):
        if device.type != "cuda":
            return False, "FlashInfer needs a CUDA device"
        if self.backend == "fa3" and torch.cuda.get_device_capability(device)[0] != 9:
            return False, "the fa3 backend needs a Hopper (sm90) GPU"
        try:
            self._import()
        except Exception as exc:
            return False, f"import flashinfer failed: {exc!r}"
        return True, ""

    def version(self):
        try:
            return f"flashinfer {self._import()[0].__version__}"
        except Exception:
            return "flashinfer"

    def supports(self, shape):
        if shape.h_kv != 1:
            return False, "FlashInfer MLA supports h_kv = 1 only"
        return True, ""

    def prepare(self, inputs):
        flashinfer, Wrapper = self._import()
        s = inputs.shape
        dev = inputs.device
        lens = inputs.cache_seqlens
        pages = (lens + PAGE_SIZE - 1) // PAGE_SIZE
        kv_indptr = torch.zeros(s.b + 1, dtype=torch.int32, device=dev)
        kv_indptr[1:] = torch.cumsum(pages, 0)
        col = torch.arange(inputs.block_table.shape[1], device=dev)
        kv_indices = inputs.block_table[col[None, :] < pages[:, None]].contiguous()  # row-major = CSR order
        qo_indptr = torch.arange(s.b + 1, dtype=torch.int32, device=dev) * s.s_q
        kv_len = lens.contiguous()
        workspace = torch.empty(128 * 1024 * 1024, dtype=torch.uint8, device=dev)
        wrapper = Wrapper(workspace, backend=self.backend)
        dtype = s.torch_dtype
        q_packed = inputs.q.view(s.b * s.s_q, s.h_q, HEAD_DIM_QK)
        kv_packed = inputs.k_cache.view(inputs.k_cache.shape[0], PAGE_SIZE, HEAD_DIM_QK)
        common = dict(num_heads=s.h_q, head_dim_ckv=HEAD_DIM_V, head_dim_kpe=HEAD_DIM_ROPE, page_size=PAGE_SIZE,
                      causal=s.causal, sm_scale=inputs.softmax_scale, q_data_type=dtype, kv_data_type=dtype)
        metadata_cls = getattr(importlib.import_module("flashinfer.mla"), "MLAPlanMetadata", None)
        if metadata_cls is not None and hasattr(metadata_cls, "csr"):
            # FlashInfer >= 0.7: canonical metadata, packed structural inputs, natural-log lse.
            wrapper.plan(metadata=metadata_cls.csr(qo_indptr, kv_indptr, kv_indices, kv_len),
                         lse_mode="basee", **common)

            def run():
                return wrapper.run(query=q_packed, kv_cache=kv_packed, return_lse=True,
                                   return_lse_base_on_e=True)
            lse_scale = 1.0
        else:
            # Older FlashInfer: flat plan arguments, split q/kv views, base-2 lse.
            wrapper.plan(qo_indptr, kv_indptr, kv_indices, kv_len, common["num_heads"], common["head_dim_ckv"],
                         common["head_dim_kpe"], common["page_size"], common["causal"], common["sm_scale"],
                         common["q_data_type"], common["kv_data_type"])
            q_nope, q_pe = q_packed[..., :HEAD_DIM_V], q_packed[..., HEAD_DIM_V:]
            ckv, kpe = kv_packed[..., :HEAD_DIM_V], kv_packed[..., HEAD_DIM_V:]

            def run():
                return wrapper.run(q_nope, q_pe, ckv, kpe, return_lse=True)
            lse_scale = LN2

        def outputs(result):
            out, lse = result
            out = out.view(s.b, s.s_q, s.h_q, HEAD_DIM_V)
            lse = lse.view(s.b, s.s_q, s.h_q).permute(0, 2, 1).float() * lse_scale
            return out, lse

        return Prepared(run=run, outputs=outputs)


# --------------------------------------------------------------------------- vLLM-derived kernels
def vllm_kernel_dirs() -> list[Path]:
    """Folders that may hold a ``vllm/`` tree: $FLASHMLA_BENCH_VLLM_KERNELS, then an installed
    vLLM (found without importing it)."""
    dirs = []
    env = os.environ.get(VLLM_KERNELS_ENV)
    if env:
        dirs.append(Path(env))
    try:
        spec = importlib.util.find_spec("vllm")
        if spec is not None and spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                dirs.append(Path(loc).parent)
    except Exception:
        pass
    return dirs


def find_vllm_file(relative: str) -> tuple[Optional[Path], str]:
    """(path of ``vllm/<relative>``, reason when not found)."""
    tried = []
    for d in vllm_kernel_dirs():
        p = d / "vllm" / relative
        if p.is_file():
            return p, ""
        tried.append(str(p))
    if not tried:
        return None, (f"vLLM is not installed and ${VLLM_KERNELS_ENV} is not set "
                      "(point it at an extracted vllm-kernels folder)")
    return None, f"vllm/{relative} not found (tried {', '.join(tried)})"


def vllm_version(near: Path) -> str:
    """vLLM's version from the ``_version.py`` next to a file of its tree, without importing vLLM."""
    for parent in near.parents:
        if parent.name == "vllm":
            vf = parent / "_version.py"
            if vf.is_file():
                m = re.search(r"__version__\s*=\s*(?:version\s*=\s*)?['\"]([^'\"]+)['\"]", vf.read_text())
                if m:
                    return m.group(1)
            break
    return "unknown"


def _load_patched_module(path: Path, module_name: str, replacements: dict[str, str]):
    """Import a single vLLM source file without importing vLLM.

    Each key of ``replacements`` is a line that must be in the file (else ValueError, so a
    changed upstream file is reported instead of half-working); it is replaced by its value.
    The patched copy is written to a cache folder (Triton reads kernel source from the file)."""
    source = path.read_text()
    for old, new in replacements.items():
        if old not in source:
            raise ValueError(f"{path.name} changed upstream: line {old!r} not found")
        source = source.replace(old, new)
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    cache = Path(os.environ.get("FLASHMLA_BENCH_CACHE", Path(tempfile.gettempdir()) / "flashmla_bench"))
    cache.mkdir(parents=True, exist_ok=True)
    patched = cache / f"{module_name}_{digest}.py"
    if not patched.exists():
        tmp = patched.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(source)
        tmp.replace(patched)
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, patched)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def _flashmla_ops_loaded() -> bool:
    try:
        torch.ops._flashmla_C.dense_decode_fwd  # noqa: B018 - raises when the library is not loaded
        return True
    except (AttributeError, RuntimeError):
        return False


class DeepSeekFlashMLA(Provider):
    """DeepSeek's FlashMLA: the ``flash_mla`` package if importable, else vLLM's bundled build."""
    name = "flash_mla"

    def __init__(self):
        self._api = None
        self._origin = ""
        self._error = ""

    @property
    def description(self):
        return self._origin or "DeepSeek FlashMLA"

    def _load(self):
        if self._api is not None or self._error:
            return self._api
        try:
            import flash_mla as api  # DeepSeek's own package, when installed
            self._origin = f"flash_mla package {getattr(api, '__version__', '')}".strip()
            self._api = api
            return api
        except Exception as exc:
            first_error = f"import flash_mla: {exc!r}"
        so, why_so = find_vllm_file("_flashmla_C.abi3.so")
        iface, why_iface = find_vllm_file("third_party/flashmla/flash_mla_interface.py")
        if so is None or iface is None:
            self._error = f"{first_error}; vLLM's build: {why_so or why_iface}"
            return None
        try:
            if not _flashmla_ops_loaded():
                torch.ops.load_library(str(so))
            api = _load_patched_module(iface, "flashmla_bench_vllm_flash_mla_interface",
                                       {"import vllm._flashmla_C\n": "\n"})
            self._origin = f"DeepSeek FlashMLA as built in vLLM {vllm_version(so)} (vllm/_flashmla_C)"
            self._api = api
        except Exception as exc:
            self._error = f"{first_error}; loading vLLM's build from {so.parent} failed: {exc!r}"
        return self._api

    def availability(self, device):
        if device.type != "cuda":
            return False, "FlashMLA needs a CUDA device"
        if torch.cuda.get_device_capability(device)[0] not in (9, 10):
            return False, "FlashMLA's dense decode needs sm90 (or sm100)"
        if self._load() is None:
            return False, self._error
        return True, ""

    def version(self):
        self._load()
        return self._origin

    def supports(self, shape):
        if shape.h_kv != 1:
            return False, "FlashMLA dense decode is benchmarked with h_kv = 1 only"
        return True, ""

    def prepare(self, inputs):
        api = self._load()
        s = inputs.shape

        def metadata():
            # Both generations: (cache_seqlens, s_q*h_q//h_kv, h_kv) -> tensors, or (lazy) a
            # FlashMLASchedMeta that the first call fills in.
            return api.get_mla_metadata(inputs.cache_seqlens, s.s_q * s.h_q // s.h_kv, s.h_kv)

        md, num_splits = metadata()

        def call(md, num_splits):
            return api.flash_mla_with_kvcache(inputs.q, inputs.k_cache, inputs.block_table, inputs.cache_seqlens,
                                              HEAD_DIM_V, md, num_splits, softmax_scale=inputs.softmax_scale,
                                              causal=s.causal)

        # The lazy API computes the schedule inside the first call: make it now, outside timing.
        call(md, num_splits)
        return Prepared(run=lambda: call(md, num_splits), outputs=_standard_outputs,
                        run_e2e=lambda: call(*metadata()))


FLASHMLA_HEAD_ENV = "FLASHMLA_BENCH_FLASHMLA_HEAD"
# Where scripts/build_flashmla_head.sh puts it by default (an ignored, carried folder of the checkout).
FLASHMLA_HEAD_DEFAULT = Path(__file__).resolve().parents[2] / ".gpu" / "flashmla-head" / "libflashmla_head.so"


class FlashMLAHead(Provider):
    """DeepSeek FlashMLA at a pinned commit (perf-targets.md's anchors: HEAD 9241ae3), through the C
    entry point of ``benchmarks/comparators/flashmla_head_abi.cu`` that ``scripts/build_flashmla_head.sh``
    compiles against a FlashMLA checkout. Loaded with ctypes from ``$FLASHMLA_BENCH_FLASHMLA_HEAD``
    (else ``.gpu/flashmla-head/libflashmla_head.so``); absent = skipped, saying how to build it.

    The calls match FlashMLA's Python wrapper: the same number of SM parts, the schedule made once
    outside the timed call (``run_e2e`` remakes it), fresh out / lse tensors per call. bf16, h_kv = 1.
    """
    name = "flashmla-head"
    description = "DeepSeek FlashMLA sm90 dense decode at a pinned commit (C ABI build, scripts/build_flashmla_head.sh)"

    def __init__(self):
        self._lib = None
        self._error = ""
        self._commit = ""

    def _library_path(self) -> Path:
        return Path(os.environ.get(FLASHMLA_HEAD_ENV) or FLASHMLA_HEAD_DEFAULT)

    def _load(self):
        if self._lib is not None or self._error:
            return self._lib
        path = self._library_path()
        if not path.is_file():
            self._error = (f"{path} not found: build it with scripts/build_flashmla_head.sh FLASHMLA_CHECKOUT "
                           f"(or set {FLASHMLA_HEAD_ENV})")
            return None
        try:
            lib = ctypes.CDLL(str(path.resolve()))
            lib.flashmla_head_decode.restype = ctypes.c_int
            self._lib = lib
        except Exception as exc:
            self._error = f"loading {path} failed: {exc!r}"
            return None
        info = path.with_suffix(".txt")
        if info.is_file():
            first = info.read_text().splitlines()[:1]
            self._commit = first[0].removeprefix("FlashMLA commit: ").strip() if first else ""
        return self._lib

    def availability(self, device):
        if device.type != "cuda":
            return False, "FlashMLA needs a CUDA device"
        if torch.cuda.get_device_capability(device) != (9, 0):
            return False, "this build of FlashMLA's dense decode is sm90a only"
        if self._load() is None:
            return False, self._error
        return True, ""

    def version(self):
        self._load()
        return f"FlashMLA {self._commit[:7]}" if self._commit else "FlashMLA (commit unknown)"

    def supports(self, shape):
        if shape.h_kv != 1:
            return False, "FlashMLA dense decode is benchmarked with h_kv = 1 only"
        if shape.torch_dtype != torch.bfloat16:
            return False, "the C ABI build has FlashMLA's bf16 kernel only"
        return True, ""

    def prepare(self, inputs):
        for name, t in (("q", inputs.q), ("k_cache", inputs.k_cache), ("block_table", inputs.block_table)):
            if not t.is_contiguous():  # the C entry point takes raw pointers with FlashMLA's strides
                raise ValueError(f"flashmla-head: {name} must be contiguous")
        lib = self._load()
        s = inputs.shape
        dev = inputs.device
        rows = s.s_q * s.h_q
        # FlashMLA's get_mla_metadata: SMs / h_kv / ceil(rows per kv head / 64).
        sm_count = torch.cuda.get_device_properties(dev).multi_processor_count
        num_sm_parts = max(sm_count // math.ceil(rows / 64), 1)
        sched_meta = torch.empty(num_sm_parts, 8, dtype=torch.int32, device=dev)
        num_splits = torch.empty(s.b + 1, dtype=torch.int32, device=dev)
        lse_accum = torch.empty(s.b + num_sm_parts, rows, dtype=torch.float32, device=dev)
        o_accum = torch.empty(s.b + num_sm_parts, rows, HEAD_DIM_V, dtype=torch.float32, device=dev)
        pointer = ctypes.c_void_p

        def call(compute_meta: bool):
            out = torch.empty(s.b, s.s_q, s.h_q, HEAD_DIM_V, dtype=s.torch_dtype, device=dev)
            lse = torch.empty(s.b, rows, dtype=torch.float32, device=dev)
            rc = lib.flashmla_head_decode(
                s.b, s.s_q, s.h_q, inputs.k_cache.shape[0], pointer(inputs.q.data_ptr()),
                pointer(inputs.k_cache.data_ptr()), pointer(out.data_ptr()), pointer(lse.data_ptr()),
                pointer(inputs.block_table.data_ptr()), inputs.block_table.stride(0),
                pointer(inputs.cache_seqlens.data_ptr()), int(s.causal), ctypes.c_float(inputs.softmax_scale),
                pointer(sched_meta.data_ptr()), pointer(num_splits.data_ptr()), pointer(lse_accum.data_ptr()),
                pointer(o_accum.data_ptr()), num_sm_parts, int(compute_meta),
                pointer(torch.cuda.current_stream(dev).cuda_stream))
            if rc:
                raise RuntimeError(f"flashmla_head_decode: CUDA error {rc}")
            return out, lse

        call(compute_meta=True)  # the schedule, once, outside the timed call

        def outputs(result):
            out, lse = result
            return out, lse.view(s.b, s.s_q, s.h_q).transpose(1, 2)

        return Prepared(run=lambda: call(compute_meta=False), outputs=outputs,
                        run_e2e=lambda: call(compute_meta=True))


def _vllm_num_kv_splits(max_seq_len: int, sm_count: int) -> int:
    """vLLM 0.26's TritonMLAImpl split count: next_pow2(max(1, max_seq_len // 512)) capped at 2 x SMs."""
    ideal = 1 << max(0, (max(1, max_seq_len // 512) - 1).bit_length())
    return min(ideal, sm_count * 2)


class VllmTritonMLA(Provider):
    """vLLM's Triton MLA decode op, called the way vLLM's TRITON_MLA backend calls it.

    vLLM runs it for one query token per request; for s_q > 1 every query token becomes its own
    row (a view of q) with its causal length and the request's block-table row, as vLLM does for
    speculative decoding. The split count follows vLLM (``_compute_num_kv_splits``).
    """
    name = "vllm-triton"

    def __init__(self):
        self._module = None
        self._error = ""
        self._version = ""

    @property
    def description(self):
        return f"vLLM {self._version} Triton MLA decode op" if self._version else "vLLM Triton MLA decode op"

    def _load(self):
        if self._module is not None or self._error:
            return self._module
        path, why = find_vllm_file("v1/attention/ops/triton_decode_attention.py")
        if path is None:
            self._error = why
            return None
        try:
            import triton  # noqa: F401
        except Exception as exc:
            self._error = f"triton is not importable: {exc!r}"
            return None
        stub = ("import triton\nimport triton.language as tl\n"
                "class _Platform:\n"
                "    @staticmethod\n"
                "    def is_rocm():\n"
                "        return torch.version.hip is not None\n"
                "current_platform = _Platform()\n")
        try:
            self._module = _load_patched_module(path, "flashmla_bench_vllm_triton_decode", {
                "from vllm.platforms import current_platform\n": "",
                "from vllm.triton_utils import tl, triton\n": stub,
            })
            self._version = vllm_version(path)
        except Exception as exc:
            self._error = f"loading {path} failed: {exc!r}"
        return self._module

    def availability(self, device):
        if device.type != "cuda":
            return False, "vLLM's Triton MLA op is benchmarked on CUDA devices only"
        if self._load() is None:
            return False, self._error
        return True, ""

    def version(self):
        self._load()
        return f"vllm {self._version} triton_decode_attention" if self._version else ""

    def supports(self, shape):
        if shape.h_kv != 1:
            return False, "vLLM's Triton MLA op is MLA-only (h_kv = 1)"
        return True, ""

    def prepare(self, inputs):
        mod = self._load()
        s = inputs.shape
        dev = inputs.device
        rows_b = s.b * s.s_q
        q_rows = inputs.q.view(rows_b, s.h_q, HEAD_DIM_QK)  # one row per query token (a view)
        lens = inputs.cache_seqlens.long()
        if s.s_q > 1:
            t = torch.arange(s.s_q, device=dev)
            per_token = lens[:, None] - (s.s_q - 1 - t)[None, :] if s.causal else lens[:, None].expand(-1, s.s_q)
            seq_lens = per_token.reshape(-1).clamp_min(0).to(torch.int32).contiguous()
            block_table = inputs.block_table.repeat_interleave(s.s_q, dim=0).contiguous()
        else:
            seq_lens = inputs.cache_seqlens
            block_table = inputs.block_table
        sm_count = torch.cuda.get_device_properties(dev).multi_processor_count
        num_kv_splits = _vllm_num_kv_splits(max(inputs.seqlens), sm_count)
        attn_logits = torch.empty(rows_b, s.h_q, num_kv_splits, HEAD_DIM_V + 1, dtype=torch.float32, device=dev)
        k_buffer = inputs.k_cache  # [pages, 64, 1, 576]
        v_buffer = inputs.k_cache[..., :HEAD_DIM_V]
        one = torch.ones((), dtype=torch.float32, device=dev)

        def run():
            o = torch.empty(rows_b, s.h_q, HEAD_DIM_V, dtype=s.torch_dtype, device=dev)
            lse = torch.empty(rows_b, s.h_q, dtype=torch.float32, device=dev)
            mod.decode_attention_fwd(q_rows, k_buffer, v_buffer, o, lse, block_table, seq_lens, attn_logits,
                                     num_kv_splits, inputs.softmax_scale, PAGE_SIZE,
                                     k_scale=one, v_scale=one, is_mla=True)
            return o, lse

        def outputs(result):
            o, lse = result
            return (o.view(s.b, s.s_q, s.h_q, HEAD_DIM_V),
                    lse.view(s.b, s.s_q, s.h_q).permute(0, 2, 1))

        return Prepared(run=run, outputs=outputs)


# --------------------------------------------------------------------------- registry
def all_providers() -> list[Provider]:
    return [TorchReference(), FlashMLAOurs("cuda"), FlashMLAOurs("triton"), FlashMLATritonPortable(),
            FlashInferMLA("fa3"), FlashInferMLA("fa2"), FlashMLAHead(), DeepSeekFlashMLA(), VllmTritonMLA()]


PROVIDER_NAMES = ("torch", "flashmla-cuda", "flashmla-triton", "flashmla-triton-portable", "flashinfer-fa3",
                  "flashinfer-fa2", "flashmla-head", "flash_mla", "vllm-triton")
OURS = ("flashmla-cuda", "flashmla-triton", "flashmla-triton-portable")


def get_providers(names=None) -> list[Provider]:
    """Providers by name (all when None); 'flashinfer' means both FlashInfer backends."""
    providers = {p.name: p for p in all_providers()}
    if names is None:
        return list(providers.values())
    chosen = []
    for n in names:
        n = n.strip()
        expanded = ["flashinfer-fa3", "flashinfer-fa2"] if n == "flashinfer" else [n]
        for e in expanded:
            if e not in providers:
                raise ValueError(f"unknown provider {e!r}; choose from {', '.join(PROVIDER_NAMES)} (or 'flashinfer')")
            if providers[e] not in chosen:
                chosen.append(providers[e])
    return chosen
