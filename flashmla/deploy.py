"""Deploy DeepSeek-V2-Lite-Chat with vLLM on a chosen MLA backend, and compare backends.

Three things, one code path:

* ``chat``: fetch the model from ModelScope (or use a local directory), build a vLLM engine with
  an attention backend, run chat prompts through the model's chat template, print the answers;
* ``compare``: the same prompts (one stream, then a batch) on ours (``CUSTOM``), ``TRITON_MLA`` and
  vLLM's bundled ``FLASHMLA``, each in a fresh process; tokens, wall time, output tokens/s, time to
  first token, the time of one decode-only step with the whole batch (``MEASUREMENT_METHOD``: the
  difference of two generate() calls that differ by N decode steps, read from vLLM's engine
  timestamps), and the backend vLLM really used (from its log); medians of several repetitions
  after a warm-up; a table, a CSV, a JSON and a plot;
* ``--offline``: the real V2-Lite architecture with random weights (the shipped config.json,
  ``load_format="dummy"``, token-id prompts, no tokenizer), so a GPU host without internet, or
  without 31 GB of weights, runs everything above.

Errors a user will meet (no GPU, too little memory, no vLLM or an unsupported one, our backend not
registered, ModelScope unreachable) raise ``DeployError`` with what to do, and the CLI prints
that sentence instead of a traceback.

    python -m flashmla.deploy chat --backend ours
    python -m flashmla.deploy compare --offline --out results/
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

MODEL_ID = "deepseek-ai/DeepSeek-V2-Lite-Chat"
MODEL_SIZE_GB = 31.4             # 15.7 B parameters in bf16
WEIGHTS_GIB = 29.3
OFFLINE_CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "deepseek-v2-lite"
# label -> the name given to vLLM's --attention-backend
BACKENDS = {"ours": "CUSTOM", "triton_mla": "TRITON_MLA", "flashmla": "FLASHMLA"}
RESULT_PREFIX = "FLASHMLA_DEPLOY_RESULT "
DEFAULT_CHAT_PROMPTS = [
    "Write a piece of quicksort code in C++.",
    "Explain in three sentences what Multi-head Latent Attention saves compared to multi-head attention.",
    "What is the capital of France? Answer in one word.",
    "Give two reasons why decode attention is memory-bound.",
]


class DeployError(RuntimeError):
    """A problem the user can fix; the message says how."""


# --------------------------------------------------------------------------- environment checks
def check_gpu(min_free_gib: float) -> dict:
    """A CUDA GPU with at least ``min_free_gib`` free; returns its description."""
    try:
        import torch
    except ImportError as exc:
        raise DeployError(f"torch is not installed ({exc}); install the torch your CUDA driver supports") from None
    if not torch.cuda.is_available():
        raise DeployError("no CUDA GPU is visible (torch.cuda.is_available() is False). DeepSeek-V2-Lite needs "
                          f"a GPU with about {WEIGHTS_GIB + 6:.0f} GiB free ({WEIGHTS_GIB} GiB of bf16 weights plus "
                          "KV cache); on a CPU-only machine run the notebooks in SMOKE mode instead.")
    free, total = torch.cuda.mem_get_info()
    name = torch.cuda.get_device_name()
    info = {"gpu": name, "free_gib": round(free / 2**30, 1), "total_gib": round(total / 2**30, 1),
            "capability": ".".join(map(str, torch.cuda.get_device_capability()))}
    if free / 2**30 < min_free_gib:
        raise DeployError(f"{name} has {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB, but the "
                          f"{WEIGHTS_GIB} GiB of DeepSeek-V2-Lite weights plus KV cache need about "
                          f"{min_free_gib:.0f} GiB: free the GPU (other processes?), or use a larger GPU "
                          "(an 80 GB H100/A100 fits it).")
    return info


def check_vllm(backend: str = "CUSTOM") -> str:
    """vLLM importable, in the supported range, and (for ours) our backend registered."""
    from .vllm_backend import compat
    version = compat.installed_vllm_version()
    if version is None:
        raise DeployError("vLLM is not installed. Install a supported release: `pip install vllm==0.26.0` "
                          f"(torch 2.11 / CUDA 13) or another in {compat.supported_range_text()}.")
    level, message = compat.version_problem(version)
    if level == "error":
        raise DeployError(message)
    if level == "warn":
        print(f"warning: {message}", file=sys.stderr)
    if backend.upper() in ("CUSTOM", "FLASHMLA_TUTORIAL"):
        import importlib.metadata
        eps = [ep for ep in importlib.metadata.entry_points(group="vllm.general_plugins") if ep.name == "flashmla"]
        if not eps:
            raise DeployError("flashmla's vLLM plugin is not installed as a package, so vLLM's engine process "
                              "cannot find the backend: run `pip install -e .` (or install the flashmla wheel) "
                              "in this environment.")
        from . import vllm_backend
        outcome = vllm_backend.register()
        if outcome["problem"]:
            raise DeployError(f"flashmla's backend could not register with vLLM {version}: {outcome['problem']}")
        if backend.upper() not in outcome["registered"]:
            raise DeployError(f"the {backend} attention-backend slot is taken by another plugin "
                              f"(flashmla registered {outcome['registered'] or 'nothing'}); set "
                              "FLASHMLA_VLLM_TAKE_CUSTOM=1 or select FLASHMLA_TUTORIAL (vLLM >= 0.32).")
    return version


# --------------------------------------------------------------------------- the model
def modelscope_cache_dir() -> Path:
    """Where ModelScope puts downloads: $MODELSCOPE_CACHE, else ~/.cache/modelscope."""
    return Path(os.environ.get("MODELSCOPE_CACHE", Path.home() / ".cache" / "modelscope"))


def download_model(model_id: str = MODEL_ID, cache_dir: Optional[str] = None, local_dir: Optional[str] = None,
                   config_only: bool = False) -> Path:
    """Fetch the model with ModelScope's snapshot_download (resumable: files already complete are
    kept and partial ones continue; progress bars per file). ``config_only`` fetches just the
    config and tokenizer (a few MB)."""
    try:
        from modelscope import snapshot_download
    except ImportError:
        raise DeployError("modelscope is not installed: `pip install modelscope` (or pip install 'flashmla[deploy]'), "
                          "or pass --model /path/to/DeepSeek-V2-Lite-Chat, or use --offline.") from None
    where = Path(local_dir) if local_dir else Path(cache_dir) if cache_dir else modelscope_cache_dir()
    if not config_only:
        print(f"Downloading {model_id} from ModelScope: about {MODEL_SIZE_GB:.0f} GB into {where} "
              f"(set MODELSCOPE_CACHE or --cache-dir to put it elsewhere; an interrupted download resumes "
              f"where it stopped when you run this again).", flush=True)
    patterns = ["*.json", "*.py", "tokenizer*"] if config_only else None
    try:
        path = snapshot_download(model_id, cache_dir=cache_dir, local_dir=local_dir, allow_patterns=patterns)
    except Exception as exc:  # network errors come in many types (requests, urllib3, modelscope's own)
        text = f"{type(exc).__name__}: {exc}"
        if re.search(r"connect|resolve|timed? ?out|network|unreachable|proxy|SSL|Max retries", text, re.I):
            raise DeployError(f"ModelScope is unreachable ({text[:300]}). Check the network or "
                              "MODELSCOPE_ENDPOINT, copy the model directory here and pass --model DIR, or run "
                              "--offline (random weights, same architecture).") from None
        raise DeployError(f"downloading {model_id} from ModelScope failed: {text[:500]}") from None
    return Path(path)


def resolve_model(model: Optional[str], offline: bool, cache_dir: Optional[str] = None) -> Path:
    if offline:
        return Path(model) if model else OFFLINE_CONFIG_DIR
    if model and Path(model).is_dir():
        if not (Path(model) / "config.json").exists():
            raise DeployError(f"--model {model} has no config.json: pass the model's directory")
        return Path(model)
    return download_model(model or MODEL_ID, cache_dir=cache_dir)


@dataclass
class EngineOptions:
    backend: str = "CUSTOM"              # vLLM's name: CUSTOM, TRITON_MLA, FLASHMLA, ...
    offline: bool = False
    max_model_len: int = 4096
    max_num_seqs: int = 64
    cuda_graphs: bool = True
    gpu_memory_utilization: float = 0.85
    max_num_batched_tokens: int = 16384
    capture_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64)

    @property
    def batched_tokens(self) -> int:
        """The engine's max_num_batched_tokens (at least one whole prompt of max_model_len)."""
        return max(self.max_num_batched_tokens, self.max_model_len)


def build_llm(model_path: Path, options: EngineOptions):
    """The vLLM engine: bf16, block size 64 (the FlashMLA page), the chosen attention backend,
    full CUDA graphs for decode batches (no torch.compile: startup stays ~15 s)."""
    from vllm import LLM
    kwargs = dict(model=str(model_path), dtype="bfloat16", block_size=64, max_model_len=options.max_model_len,
                  max_num_seqs=options.max_num_seqs, gpu_memory_utilization=options.gpu_memory_utilization,
                  max_num_batched_tokens=options.batched_tokens,
                  attention_config={"backend": options.backend}, enable_prefix_caching=False,
                  disable_log_stats=False, trust_remote_code=False, seed=0)
    if options.cuda_graphs:
        kwargs["compilation_config"] = {"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY",
                                        "cudagraph_capture_sizes": sorted(set(options.capture_sizes))}
    else:
        kwargs["enforce_eager"] = True
    if options.offline:
        kwargs.update(load_format="dummy", skip_tokenizer_init=True)
    try:
        return LLM(**kwargs)
    except Exception as exc:
        text = str(exc)
        if "out of memory" in text.lower() or "No available memory for the cache blocks" in text:
            raise DeployError(f"the GPU ran out of memory building the engine ({text[:300]}); lower "
                              "--max-model-len / --max-num-seqs or free the GPU") from exc
        if "is not valid for this configuration" in text or "must be registered before use" in text:
            raise DeployError(f"vLLM refused attention backend {options.backend}: {text[:600]}") from exc
        raise


# --------------------------------------------------------------------------- prompts
def chat_prompt_ids(llm, questions: Sequence[str]) -> list[list[int]]:
    """Token ids of each question through the model's own chat template."""
    tokenizer = llm.get_tokenizer()
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                          tokenize=True) for q in questions]


def random_prompt_ids(count: int, length: int, seed: int, vocab: int = 102400) -> list[list[int]]:
    """Token-id prompts for offline runs (ids above the special tokens)."""
    rng = random.Random(seed)
    return [[rng.randrange(1000, vocab - 1000) for _ in range(length)] for _ in range(count)]


# --------------------------------------------------------------------------- measuring
DEFAULT_DECODE_STEPS = 128       # timed decode steps per repetition (N)
LEAD_IN_MARGIN = 4               # extra lead-in steps beyond the bound on prefill steps
WARMUP_PROMPTS = 8

MEASUREMENT_METHOD = """\
How decode time per step is measured (run_scenario).

Wanted: the time of one engine step in which every prompt of the scenario decodes one token and
nothing else runs (no prefill chunk in the step), with the decode CUDA graph of that batch size:
what perf-targets.md calls "ms per decode step at batch 64 x 3072-token prompts".

Why not vLLM's own per-request numbers. In vLLM 0.26.0 (also 0.32) a finished request's
``RequestOutput.metrics`` is a ``RequestStateStats``: arrival/queued/scheduled timestamps,
``first_token_ts``, ``last_token_ts``, ``first_token_latency`` and ``num_generation_tokens``; no
per-step times. ``(last_token_ts - first_token_ts) / (n - 1)`` averages over every step after the
request's first token, and with 64 x 3072 prompt tokens and chunked prefill most of those steps
also carry other requests' prefill chunks (~150 ms each), so it measures prefill (23 ms for every
backend on an H100, 2026-11-23). The per-step inter-token latencies
(``IterationStats.inter_token_latencies_iter``) only reach the Prometheus histograms, mixed and
pure steps together. ``ObservabilityConfig.enable_logging_iteration_details`` logs each
iteration's request counts and an ``elapsed_ms``, but it is internal (no CLI flag), goes to the
log only, and its ``elapsed_ms`` times the wait for the model output, not the whole step.

The method: two ``generate()`` calls per repetition on the same prompts, greedy, ``ignore_eos``,
every prompt admitted at once (``max_num_seqs`` >= prompts, KV cache for all):
``short`` generates ``1 + L`` tokens per prompt and ``long`` ``1 + L + N``. ``L`` (the lead-in) is
at least the number of engine steps prefill can span, ceil(prompt tokens / (max_num_batched_tokens
- prompts)), plus a margin. Call P the step in which the last prompt finishes prefill (its first
token). In both calls every request is still running at step P (checked, see below), so after P
both calls run the same decode-only steps, and the long call runs exactly N more of them with
every prompt in the batch, followed by the same tail in which early requests finish. Prefill and
tail cancel in the difference:

    decode ms/step = ((end - P)_long - (end - P)_short) / N

with ``P`` = the latest ``first_token_ts`` of the call and ``end`` = its latest ``last_token_ts``
(vLLM's engine-core timestamps, one per engine step, so host time spent in ``generate()`` outside
the engine does not enter). ``(wall_long - wall_short) / N`` is kept as a cross-check (it also
holds prefill's run-to-run jitter); it becomes the figure when a vLLM gives no timestamps.
Checked per call: every request produced all its tokens, and no request finished before step P
(the earliest ``last_token_ts`` >= the latest ``first_token_ts``); a repetition that fails a check
is reported (``decode_clean`` False), not hidden. Medians over repetitions. TTFT (median over
requests) and output tokens/s (tokens / wall time) come from the long call.
"""


@dataclass
class Scenario:
    name: str
    prompts: int
    prompt_len: int            # offline prompt length (online: the chat prompts' own lengths)
    decode_steps: int          # N: the timed decode-only steps with every prompt in the batch
    repetitions: int = 3


OFFLINE_SCENARIOS = [Scenario("single", 1, 512, DEFAULT_DECODE_STEPS, 3),
                     Scenario("batch", 64, 3072, DEFAULT_DECODE_STEPS, 3)]


@dataclass
class ScenarioResult:
    scenario: str
    backend: str
    prompts: int
    prompt_tokens: int
    generated_tokens: int          # of the long call, all prompts
    wall_s: float                  # of the long call
    output_tok_s: float
    ttft_s: float
    decode_ms_per_step: float      # pure decode step at full batch (see MEASUREMENT_METHOD)
    decode_ms_wall: float          # the wall-clock cross-check
    decode_method: str             # "engine timestamps", "wall clock" or "untimed"
    decode_clean: Optional[bool]   # every repetition passed the checks (None: no timestamps to check)
    decode_steps: int
    lead_in_steps: int
    repetitions: int
    per_repetition: list = field(default_factory=list)


def prefill_steps_bound(prompt_lengths: Sequence[int], batched_tokens: int) -> int:
    """Most engine steps the prompts' prefill can take when all are admitted at once: each step
    has ``batched_tokens`` tokens, of which at most one per prompt goes to a decoding request."""
    per_step = batched_tokens - len(prompt_lengths)
    if per_step <= 0:
        raise DeployError(f"max_num_batched_tokens={batched_tokens} leaves no room for prefill next to "
                          f"{len(prompt_lengths)} decoding requests: raise it")
    return -(-sum(prompt_lengths) // per_step)


def lead_in_steps(prompt_lengths: Sequence[int], batched_tokens: int, margin: int = LEAD_IN_MARGIN) -> int:
    return prefill_steps_bound(prompt_lengths, batched_tokens) + margin


@dataclass
class GenerateRun:
    """What one ``llm.generate()`` call of a timing pair tells (engine times: vLLM's monotonic
    engine-core clock; None where the outputs carry no metrics)."""
    wall_s: float
    tokens: int
    max_tokens: int
    complete: bool                        # every request produced max_tokens tokens
    ttft_s: float                         # median over requests
    prefill_end_ts: Optional[float]       # latest first_token_ts: the step P of the last prefill
    end_ts: Optional[float]               # latest last_token_ts
    first_finish_ts: Optional[float]      # earliest last_token_ts
    request_itl_ms: float                 # median (last - first) / (n - 1): the old, prefill-mixed figure

    @property
    def decode_window_s(self) -> Optional[float]:
        if self.prefill_end_ts is None or self.end_ts is None:
            return None
        return self.end_ts - self.prefill_end_ts

    @property
    def all_running_after_prefill(self) -> Optional[bool]:
        if self.prefill_end_ts is None or self.first_finish_ts is None:
            return None
        return self.first_finish_ts >= self.prefill_end_ts


def summarize_generate(outputs, wall_s: float, max_tokens: int) -> GenerateRun:
    counts = [len(o.outputs[0].token_ids) for o in outputs]
    metrics = [getattr(o, "metrics", None) for o in outputs]
    stamped = [m for m in metrics if m is not None and getattr(m, "first_token_ts", 0.0) > 0
               and getattr(m, "last_token_ts", 0.0) > 0]
    ttfts = [m.first_token_latency for m in metrics if m is not None and getattr(m, "first_token_latency", 0) > 0]
    itls = [(m.last_token_ts - m.first_token_ts) / (m.num_generation_tokens - 1) for m in stamped
            if getattr(m, "num_generation_tokens", 0) > 1 and m.last_token_ts > m.first_token_ts]
    full = len(stamped) == len(outputs) and len(outputs) > 0
    return GenerateRun(
        wall_s=wall_s, tokens=sum(counts), max_tokens=max_tokens,
        complete=bool(counts) and all(c == max_tokens for c in counts),
        ttft_s=statistics.median(ttfts) if ttfts else float("nan"),
        prefill_end_ts=max(m.first_token_ts for m in stamped) if full else None,
        end_ts=max(m.last_token_ts for m in stamped) if full else None,
        first_finish_ts=min(m.last_token_ts for m in stamped) if full else None,
        request_itl_ms=1e3 * statistics.median(itls) if itls else float("nan"))


def decode_step_from_pair(short: GenerateRun, long: GenerateRun, decode_steps: int) -> dict:
    """One repetition's decode ms/step from its short and long calls (MEASUREMENT_METHOD)."""
    problems = []
    for name, run in (("short", short), ("long", long)):
        if not run.complete:
            problems.append(f"{name} call: some request stopped before {run.max_tokens} tokens")
        if run.all_running_after_prefill is False:
            problems.append(f"{name} call: a request finished before the last prefill step (lead-in too short)")
    wall_ms = 1e3 * (long.wall_s - short.wall_s) / decode_steps
    engine_ms = float("nan")
    if short.decode_window_s is not None and long.decode_window_s is not None:
        engine_ms = 1e3 * (long.decode_window_s - short.decode_window_s) / decode_steps
        if engine_ms <= 0:
            problems.append("the long call's decode window is not longer than the short call's")
            engine_ms = float("nan")
    checked = short.all_running_after_prefill is not None and long.all_running_after_prefill is not None
    return {"decode_ms_engine": engine_ms, "decode_ms_wall": wall_ms,
            "clean": (not problems) if checked else (None if not problems else False),
            "problems": problems}


def _sampling_params(max_tokens: int):
    from vllm import SamplingParams
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)


def _timed_generate(llm, prompts: list, max_tokens: int) -> GenerateRun:
    params = _sampling_params(max_tokens)
    t0 = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    return summarize_generate(outputs, time.perf_counter() - t0, max_tokens)


def _finite_median(values) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def run_scenario(llm, prompt_ids: list[list[int]], scenario: Scenario, backend: str,
                 options: EngineOptions) -> ScenarioResult:
    """Warm-up once (not counted), then ``repetitions`` timed short/long pairs; medians. The
    method, and why it is this one, is ``MEASUREMENT_METHOD``."""
    if len(prompt_ids) > options.max_num_seqs:
        raise DeployError(f"scenario {scenario.name} has {len(prompt_ids)} prompts but --max-num-seqs is "
                          f"{options.max_num_seqs}: every prompt must decode in the same step, raise --max-num-seqs")
    lengths = [len(ids) for ids in prompt_ids]
    lead_in = lead_in_steps(lengths, options.batched_tokens)
    short_tokens, long_tokens = 1 + lead_in, 1 + lead_in + scenario.decode_steps
    if max(lengths) + long_tokens > options.max_model_len:
        raise DeployError(f"scenario {scenario.name}: a {max(lengths)}-token prompt plus {long_tokens} generated "
                          f"tokens exceeds --max-model-len {options.max_model_len}: raise it or lower --decode-steps")
    prompts = [{"prompt_token_ids": ids} for ids in prompt_ids]
    # Warm-up (not timed): a few of the prompts through prefill and mixed prefill/decode steps, so
    # one-time costs (JIT compiles, allocator growth, cuBLAS heuristics) stay out of the numbers.
    # Decode graphs for every batch size were captured when the engine was built.
    llm.generate(prompts[:WARMUP_PROMPTS], _sampling_params(4), use_tqdm=False)
    reps = []
    for _ in range(scenario.repetitions):
        short = _timed_generate(llm, prompts, short_tokens)
        long = _timed_generate(llm, prompts, long_tokens)
        pair = decode_step_from_pair(short, long, scenario.decode_steps)
        if pair["problems"]:
            print(f"warning: {backend}/{scenario.name}: {'; '.join(pair['problems'])}", file=sys.stderr, flush=True)
        reps.append({"wall_short_s": short.wall_s, "wall_long_s": long.wall_s, "tokens": long.tokens,
                     "ttft_s": long.ttft_s, "decode_window_short_s": short.decode_window_s,
                     "decode_window_long_s": long.decode_window_s, "request_itl_ms": long.request_itl_ms, **pair})
    engine = [r["decode_ms_engine"] for r in reps]
    use_engine = all(v == v for v in engine)
    wall = statistics.median(r["wall_long_s"] for r in reps)
    tokens = int(statistics.median(r["tokens"] for r in reps))
    clean = [r["clean"] for r in reps]
    return ScenarioResult(
        scenario.name, backend, len(prompt_ids), sum(lengths), tokens, wall, tokens / wall,
        _finite_median(r["ttft_s"] for r in reps),
        statistics.median(engine) if use_engine else _finite_median(r["decode_ms_wall"] for r in reps),
        _finite_median(r["decode_ms_wall"] for r in reps),
        "engine timestamps" if use_engine else "wall clock",
        False if False in clean else (None if None in clean else True),
        scenario.decode_steps, lead_in, len(reps), reps)


def run_untimed(llm, prompt_ids: list[list[int]], scenario: Scenario, backend: str, max_tokens: int) -> ScenarioResult:
    """One ``generate()`` of ``max_tokens`` tokens per prompt, no warm-up, no timing figure: the
    verification pass (its checks slow decoding down, so it is never timed)."""
    run = _timed_generate(llm, [{"prompt_token_ids": ids} for ids in prompt_ids], max_tokens)
    return ScenarioResult(scenario.name, backend, len(prompt_ids), sum(map(len, prompt_ids)), run.tokens,
                          run.wall_s, run.tokens / run.wall_s, run.ttft_s, float("nan"), float("nan"),
                          "untimed", None, 0, 0, 1, [])


# --------------------------------------------------------------------------- one backend, one process
def worker(args) -> int:
    """Run every scenario on one backend in this process; print one JSON result line."""
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    gpu = check_gpu(args.min_free_gib)
    version = check_vllm(args.backend)
    options = EngineOptions(backend=args.backend, offline=args.offline, max_model_len=args.max_model_len,
                            max_num_seqs=args.max_num_seqs, cuda_graphs=not args.eager)
    model = resolve_model(args.model, args.offline, args.cache_dir)
    t0 = time.perf_counter()
    llm = build_llm(model, options)
    init_s = time.perf_counter() - t0
    scenarios = _scenarios(args)
    results = []
    for sc in scenarios:
        if args.offline:
            ids = random_prompt_ids(sc.prompts, sc.prompt_len, seed=len(results))
        else:
            questions = (args.prompt or DEFAULT_CHAT_PROMPTS)
            ids = chat_prompt_ids(llm, [questions[i % len(questions)] for i in range(sc.prompts)])
        if args.untimed:
            results.append(asdict(run_untimed(llm, ids, sc, args.backend, args.untimed)))
        else:
            results.append(asdict(run_scenario(llm, ids, sc, args.backend, options)))
    record = {"backend": args.backend, "vllm": version, "gpu": gpu, "init_s": init_s, "model": str(model),
              "offline": args.offline, "cuda_graphs": not args.eager, "results": results}
    verify_log = os.environ.get("FLASHMLA_VLLM_VERIFY_LOG")
    if verify_log and os.environ.get("FLASHMLA_VLLM_VERIFY", "0") not in ("", "0"):
        record["verification"] = _read_verification(verify_log)
    print(RESULT_PREFIX + json.dumps(record), flush=True)
    if "verification" in record and not record["verification"].get("passed"):
        print(f"VERIFICATION FAILED: {record['verification']}", file=sys.stderr)
        return 3
    return 0


def _read_verification(path: str) -> dict:
    try:
        summary = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        return {"passed": False, "problem": f"no verification summary at {path} ({exc}): did the backend run?"}
    if summary.get("checked_calls", 0) <= 0:
        summary["passed"] = False
        summary["problem"] = "the verification switch was on but no forward_mqa call was checked"
    return summary


def decode_steps_of(args) -> int:
    """N: --decode-steps, else --max-tokens (older callers' name for it), else the default."""
    return args.decode_steps or args.max_tokens or DEFAULT_DECODE_STEPS


def _scenarios(args) -> list[Scenario]:
    steps = decode_steps_of(args)
    if args.offline:
        return [Scenario(s.name, s.prompts, s.prompt_len, steps, args.repetitions)
                for s in OFFLINE_SCENARIOS if s.name in args.scenarios]
    chosen = []
    if "single" in args.scenarios:
        chosen.append(Scenario("single", 1, 0, steps, args.repetitions))
    if "batch" in args.scenarios:
        chosen.append(Scenario("batch", args.batch, 0, steps, args.repetitions))
    return chosen


# --------------------------------------------------------------------------- comparison driver
BACKEND_LINE = re.compile(r"Using (?:AttentionBackendEnum\.)?([A-Z0-9_]+) (?:attention )?backend")
OUR_KERNEL_LINE = re.compile(r"flashmla vLLM backend active: kernel=(\w+)")


def backend_used(log: str) -> str:
    """What vLLM says it selected, plus the kernel our backend reports, from a run's log."""
    names = BACKEND_LINE.findall(log)
    used = names[-1] if names else "unknown"
    kernel = OUR_KERNEL_LINE.findall(log)
    return f"{used} (flashmla kernel={kernel[-1]})" if kernel else used


def run_backend_process(label: str, args, out_dir: Path, extra_env: Optional[dict] = None,
                        extra_args: Sequence[str] = ()) -> dict:
    """One backend in a fresh Python process; returns its record (or the failure)."""
    backend = BACKENDS.get(label, label)
    cmd = [sys.executable, "-m", "flashmla.deploy", "worker", "--backend", backend,
           "--max-model-len", str(args.max_model_len), "--max-num-seqs", str(args.max_num_seqs),
           "--repetitions", str(args.repetitions), "--scenarios", *args.scenarios,
           "--min-free-gib", str(args.min_free_gib)] + list(extra_args)
    if args.offline:
        cmd.append("--offline")
    if args.model:
        cmd += ["--model", args.model]
    if args.cache_dir:
        cmd += ["--cache-dir", args.cache_dir]
    if not args.offline:
        cmd += ["--batch", str(args.batch)]
        for question in args.prompt or []:
            cmd += ["--prompt", question]
    if args.max_tokens:
        cmd += ["--max-tokens", str(args.max_tokens)]
    if args.decode_steps:
        cmd += ["--decode-steps", str(args.decode_steps)]
    if args.eager:
        cmd.append("--eager")
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(extra_env or {}))
    log_path = out_dir / f"{label}.log"
    t0 = time.perf_counter()
    print(f"--- {label}: {backend} in a fresh process (log: {log_path})", flush=True)
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=args.timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    text = log_path.read_text(errors="replace")
    record = {"label": label, "backend": backend, "rc": rc, "seconds": time.perf_counter() - t0,
              "backend_used": backend_used(text), "log": str(log_path)}
    for line in text.splitlines():
        if line.startswith(RESULT_PREFIX):
            record.update(json.loads(line[len(RESULT_PREFIX):]))
    if rc != 0 or "results" not in record:
        tail = "\n".join(text.splitlines()[-25:])
        record["error"] = _explain_failure(text) or f"exit {rc}; last lines:\n{tail}"
        print(f"    FAILED: {record['error']}", flush=True)
    return record


def _explain_failure(log: str) -> Optional[str]:
    for pattern, why in [
        (r"DeployError: (.*)", None),
        (r"VerificationError: (.*)", None),
        (r"CUDA out of memory|OutOfMemoryError", "the GPU ran out of memory"),
        (r"Selected backend .* is not valid.*", None),
    ]:
        m = re.search(pattern, log)
        if m:
            return why or m.group(0)[:800]
    return None


def results_table(records: Sequence[dict]) -> list[dict]:
    rows = []
    for rec in records:
        for res in rec.get("results", []):
            rows.append({"backend": rec["label"], "vllm_backend_used": rec["backend_used"],
                         "scenario": res["scenario"], "prompts": res["prompts"],
                         "prompt_tokens": res["prompt_tokens"], "generated_tokens": res["generated_tokens"],
                         "wall_s": round(res["wall_s"], 3), "output_tok_s": round(res["output_tok_s"], 1),
                         "ttft_s": round(res["ttft_s"], 3), "decode_ms_per_step": round(res["decode_ms_per_step"], 3),
                         # absent in records written before the decode-only method (2026-11-23)
                         "decode_ms_wall": round(res.get("decode_ms_wall", float("nan")), 3),
                         "decode_steps": res.get("decode_steps"), "decode_clean": res.get("decode_clean"),
                         "repetitions": res["repetitions"]})
    return rows


METHOD_NOTE = ("\ndecode_ms_per_step: one decode-only engine step with every prompt in the batch, "
               "((end - last prefill)[1+L+N tokens] - (end - last prefill)[1+L tokens]) / N from vLLM's "
               "engine-core timestamps; decode_ms_wall: the same difference of wall times; wall_s, output_tok_s "
               "and ttft_s: the 1+L+N call (flashmla/deploy.py, MEASUREMENT_METHOD).\n")


def markdown_table(rows: Sequence[dict]) -> str:
    if not rows:
        return "(no results)\n"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_outputs(records: Sequence[dict], out_dir: Path, stem: str, meta: dict) -> dict:
    rows = results_table(records)
    (out_dir / f"{stem}.json").write_text(json.dumps({"meta": meta, "records": records, "rows": rows}, indent=1))
    if rows:
        import csv
        with open(out_dir / f"{stem}.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    (out_dir / f"{stem}.md").write_text(markdown_table(rows) + (METHOD_NOTE if rows else ""))
    try:
        if rows:
            plot_comparison(rows, out_dir / f"{stem}.png")
    except Exception as exc:  # matplotlib missing: the table still stands
        print(f"(no plot: {exc})")
    return {"rows": rows}


def plot_comparison(rows: Sequence[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    scenarios = sorted({r["scenario"] for r in rows}, key=lambda s: ["single", "batch"].index(s)
                       if s in ("single", "batch") else 9)
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    fig, axes = plt.subplots(1, 2 * len(scenarios), figsize=(5 * len(scenarios) * 2, 3.6))
    axes = list(axes) if hasattr(axes, "__len__") else [axes]
    for i, sc in enumerate(scenarios):
        for j, (key, label) in enumerate([("decode_ms_per_step", "decode ms / step (lower is better)"),
                                          ("output_tok_s", "output tokens / s (higher is better)")]):
            ax = axes[2 * i + j]
            values = [next((r[key] for r in rows if r["scenario"] == sc and r["backend"] == b), 0) for b in backends]
            bars = ax.bar(backends, values, color=["#d62728", "#1f77b4", "#2ca02c", "#9467bd"][:len(backends)])
            ax.bar_label(bars, fmt="%.3g")
            prompts = next(r for r in rows if r["scenario"] == sc)
            ax.set_title(f"{sc}: {prompts['prompts']} prompt(s)", fontsize=10)
            ax.set_ylabel(label, fontsize=9)
    fig.suptitle("DeepSeek-V2-Lite in vLLM: MLA decode backends (median of repetitions)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def preflight(backends: Sequence[str]) -> None:
    """Fail before starting any process when nothing can work: no GPU, no (supported) vLLM, our
    plugin missing. Does not create a CUDA context here (the workers need the memory)."""
    import torch
    if not torch.cuda.is_available():
        raise DeployError("no CUDA GPU is visible (torch.cuda.is_available() is False): the comparison runs "
                          "DeepSeek-V2-Lite in vLLM on a GPU with about 35 GiB free; on a CPU-only machine run "
                          "the notebooks in SMOKE mode instead.")
    for label in backends:
        check_vllm(BACKENDS.get(label, label))


def compare(args) -> int:
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    preflight(args.backends + (["ours"] if args.verify_steps else []))
    records = []
    if args.verify_steps:
        verify_log = out_dir / "verify_summary.json"
        verify_log.unlink(missing_ok=True)
        env = {"FLASHMLA_VLLM_VERIFY": str(args.verify_steps), "FLASHMLA_VLLM_VERIFY_LOG": str(verify_log)}
        # One untimed generate() per scenario: the checks slow decoding down, so never time it.
        rec = run_backend_process("ours", args, out_dir, env, extra_args=["--untimed", str(args.verify_tokens)])
        rec["label"] = "ours_verify"
        verification = rec.get("verification") or _read_verification(str(verify_log))
        rec["verification"] = verification
        ok = rec.get("rc") == 0 and verification.get("passed")
        print(f"    verification: {'PASSED' if ok else 'FAILED'} {verification}", flush=True)
        records.append({**rec, "results": []})
        if not ok:
            write_outputs(records, out_dir, args.stem, _meta(args))
            return 3
    written = {"rows": []}
    for label in args.backends:
        rec = run_backend_process(label, args, out_dir)
        records.append(rec)
        # after every backend, so a run stopped by a time limit keeps what finished
        written = write_outputs(records, out_dir, args.stem, _meta(args))
    print()
    print(markdown_table(written["rows"]))
    failed = [r["label"] for r in records if r.get("error")]
    if failed:
        print(f"FAILED backends: {failed}")
        return 1
    return 0


def _meta(args) -> dict:
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "offline": args.offline,
            "model": args.model or (str(OFFLINE_CONFIG_DIR) if args.offline else MODEL_ID),
            "max_model_len": args.max_model_len, "max_num_seqs": args.max_num_seqs,
            "repetitions": args.repetitions, "scenarios": args.scenarios, "cuda_graphs": not args.eager,
            "block_size": 64, "torch_compile": False, "decode_steps": decode_steps_of(args),
            "decode_method": "((end - last prefill)[1+L+N] - (end - last prefill)[1+L]) / N, vLLM engine timestamps"}
    try:
        import torch
        meta.update(torch=torch.__version__, cuda=torch.version.cuda)
    except ImportError:
        pass
    from .vllm_backend import compat
    meta["vllm"] = compat.installed_vllm_version()
    return meta


# --------------------------------------------------------------------------- chat
def chat(args) -> int:
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    backend = BACKENDS.get(args.backend, args.backend)
    check_gpu(args.min_free_gib)
    check_vllm(backend)
    model = resolve_model(args.model, args.offline, args.cache_dir)
    llm = build_llm(model, EngineOptions(backend=backend, offline=args.offline, max_model_len=args.max_model_len,
                                         max_num_seqs=args.max_num_seqs, cuda_graphs=not args.eager))
    from vllm import SamplingParams
    questions = args.prompt or DEFAULT_CHAT_PROMPTS[:1]
    if args.offline:
        prompts = [{"prompt_token_ids": ids} for ids in random_prompt_ids(len(questions), 32, seed=0)]
        print("offline: random weights and token-id prompts, so the answers are token ids, not text")
    else:
        prompts = [{"prompt_token_ids": ids} for ids in chat_prompt_ids(llm, questions)]
    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens or 512)
    t0 = time.perf_counter()
    outputs = llm.generate(prompts, params)
    wall = time.perf_counter() - t0
    tokens = 0
    for question, out in zip(questions, outputs):
        tokens += len(out.outputs[0].token_ids)
        answer = out.outputs[0].text if not args.offline else str(out.outputs[0].token_ids[:32]) + " ..."
        print(f"\n### {question}\n{answer}")
    print(f"\n({backend}) generated {tokens} tokens in {wall:.2f} s")
    return 0


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flashmla.deploy", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--model", help="a local model directory, or a ModelScope id (default: download "
                                        f"{MODEL_ID}); with --offline a directory holding a config.json")
        sp.add_argument("--cache-dir", help="ModelScope cache (default $MODELSCOPE_CACHE or ~/.cache/modelscope)")
        sp.add_argument("--offline", action="store_true", help="random weights of the real architecture, "
                        "token-id prompts, no download, no tokenizer")
        sp.add_argument("--max-model-len", type=int, default=4096)
        sp.add_argument("--max-num-seqs", type=int, default=64)
        sp.add_argument("--max-tokens", type=int, default=0, help="chat: tokens to generate per prompt; "
                        "compare: the same as --decode-steps (kept for older callers)")
        sp.add_argument("--eager", action="store_true", help="no CUDA graphs (slow: host-bound)")
        sp.add_argument("--min-free-gib", type=float, default=WEIGHTS_GIB + 4)
        sp.add_argument("--prompt", action="append", help="a chat question (repeatable)")

    c = sub.add_parser("chat", help="answer chat prompts with one backend")
    common(c)
    c.add_argument("--backend", default="ours", help=f"one of {list(BACKENDS)} or any vLLM backend name")
    c.add_argument("--temperature", type=float, default=0.3)

    for name in ("compare", "worker"):
        sp = sub.add_parser(name, help="compare backends, each in a fresh process" if name == "compare"
                            else "(internal) one backend in this process")
        common(sp)
        sp.add_argument("--scenarios", nargs="+", default=["single", "batch"], choices=["single", "batch"])
        sp.add_argument("--repetitions", type=int, default=3)
        sp.add_argument("--batch", type=int, default=16, help="prompts in the online batch scenario")
        sp.add_argument("--decode-steps", type=int, default=0,
                        help=f"timed decode-only steps per repetition (default {DEFAULT_DECODE_STEPS}); each "
                        "repetition generates 1+L and 1+L+N tokens per prompt, L a lead-in past prefill")
        if name == "compare":
            sp.add_argument("--backends", nargs="+", default=list(BACKENDS))
            sp.add_argument("--out", default="deploy-results")
            sp.add_argument("--stem", default="deploy_compare")
            sp.add_argument("--timeout", type=float, default=600)
            sp.add_argument("--verify-steps", type=int, default=0,
                            help="first run ours once with FLASHMLA_VLLM_VERIFY=N (live check against the reference)")
            sp.add_argument("--verify-tokens", type=int, default=17)
        else:
            sp.add_argument("--backend", required=True)
            sp.add_argument("--untimed", type=int, default=0, metavar="TOKENS",
                            help="one untimed generate() of TOKENS tokens per scenario (the verification pass)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"chat": chat, "compare": compare, "worker": worker}[args.command](args)
    except DeployError as exc:
        print(f"DeployError: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
