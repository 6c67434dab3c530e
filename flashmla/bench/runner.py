"""Run providers over shapes: check each output against the reference, then time it.

For every shape the inputs are made once on the device; the torch reference computes the
expected (out, lse); each provider is prepared (metadata / plan outside timing), run once and
compared with the reference, and only a matching output is timed. A provider that is not
available, does not support the shape, raises, or returns a wrong result gets a row saying so,
and the run goes on.

On a GPU the work runs in a child process under a supervisor (``isolate=True``, the default
there): an illegal memory access poisons a CUDA context for good, and a hung kernel never
returns, so the supervisor records which (shape, provider) was in flight, marks it ``crashed``
and restarts the child, which resumes after the rows already done. Rows are appended to a
JSON-lines file as they complete, so nothing measured is lost.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from . import roofline, timing
from .clock_log import ClockLog
from .providers import OURS, Provider, get_providers
from .shapes import Shape, anchors, bytes_moved, flops, make_inputs, suites_of, target_table_for

OUT_TOLERANCE = 1e-2  # relative L2 error of out against the fp32 reference (bf16 operands: 1e-3 ... 1e-2)
LSE_TOLERANCE = 1e-2  # max |lse - lse_ref| (natural log, values ~ ln(seqlen))
STATUS_OK, STATUS_SKIPPED, STATUS_FAILED, STATUS_MISMATCH, STATUS_CRASHED = (
    "ok", "skipped", "failed", "mismatch", "crashed")
CRASH_EXIT_CODE = 75  # the child exits with this when its CUDA context is unusable


@dataclasses.dataclass
class BenchConfig:
    shapes: list[Shape]
    providers: Optional[list[str]] = None  # None = all
    device: str = "cuda"
    warmup_ms: float = timing.WARMUP_MS
    rep_ms: float = timing.REP_MS
    cpu_reps: int = 2
    graph_max_batch: int = 8  # CUDA-graph time for batches up to this size
    time_reference: bool = True
    e2e: bool = True  # also time metadata + kernel for providers with a separate metadata step
    ceilings: bool = True
    isolate: Optional[bool] = None  # None = on for CUDA, off for CPU
    attempt_timeout_s: float = 300.0
    max_crashes_per_provider: int = 2
    seed: int = 0
    clocks: bool = False  # the SM clock and board power while each provider is timed (clock_log.py)
    # Seconds the card idles before each provider's timing. Under the H100's 700 W cap the clock
    # falls within a fraction of a second of sustained work, so a one-pass bench times each
    # provider in whatever power state the work before it left (docs/benchmarking.md); an equal
    # idle makes every provider start its timing from the same state. 0 = time right away.
    settle_s: float = 0.0

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["shapes"] = [dataclasses.asdict(s) for s in self.shapes]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "BenchConfig":
        d = dict(d)
        d["shapes"] = [Shape(**s) for s in d["shapes"]]
        return cls(**d)


@dataclasses.dataclass
class BenchResult:
    rows: list[dict]
    meta: dict
    ceilings: roofline.Ceilings
    providers: dict  # name -> {"available", "reason", "version", "description"}


Log = Callable[[str], None]


def _print(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------- environment
def collect_meta(device: torch.device, config: BenchConfig) -> dict:
    meta = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "host": platform.node(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device": str(device),
        "timing": timing.method_name(device),
        "warmup_ms": config.warmup_ms,
        "rep_ms": config.rep_ms,
        "settle_s": config.settle_s,
        "gpu": "cpu",
        "sm_count": None,
    }
    try:
        import triton
        meta["triton"] = triton.__version__
    except Exception:
        meta["triton"] = None
    try:
        from flashmla import env
        meta["driver"] = env.nvidia_driver_version()
        meta["flashmla_commit"] = env.flashmla_git_commit()
    except Exception:
        meta["driver"] = meta["flashmla_commit"] = None
    try:
        import flashmla
        meta["flashmla"] = flashmla.__version__
    except Exception:
        meta["flashmla"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        meta["gpu"] = props.name
        meta["sm_count"] = props.multi_processor_count
        meta["capability"] = f"{props.major}.{props.minor}"
    meta["anchor_table"] = target_table_for(meta["gpu"]) if device.type == "cuda" else None
    return meta


def probe_providers(providers: Sequence[Provider], device: torch.device) -> dict:
    info = {}
    for p in providers:
        try:
            ok, why = p.availability(device)
        except Exception as exc:  # availability must not raise, but never trust it
            ok, why = False, f"availability check raised {exc!r}"
        try:
            version = p.version() if ok else ""
        except Exception:
            version = ""
        info[p.name] = {"available": bool(ok), "reason": why if not ok else (why or ""),
                        "version": version, "description": p.description}
    return info


# --------------------------------------------------------------------------- checking
def compare(out: torch.Tensor, lse: Optional[torch.Tensor], ref_out: torch.Tensor,
            ref_lse: torch.Tensor) -> dict:
    """Error of (out, lse) against the reference: relative L2 and max |diff| of out, max |diff|
    of lse over rows with a finite reference lse, and whether out holds NaN/inf."""
    o, r = out.float(), ref_out.float()
    finite = bool(torch.isfinite(o).all())
    diff = (o - r).nan_to_num(nan=math.inf)
    rel = (diff.norm() / r.norm().clamp_min(1e-12)).item() if finite else math.inf
    err = {"err_rel_l2": rel, "err_max_abs": diff.abs().max().item() if diff.numel() else 0.0,
           "err_lse": None, "nonfinite_out": not finite}
    if lse is not None:
        lse = lse.float()
        mask = torch.isfinite(ref_lse)
        if bool(mask.any()):
            d = (lse[mask] - ref_lse[mask]).abs().nan_to_num(nan=math.inf)
            err["err_lse"] = d.max().item()
    return err


def check_passes(err: dict) -> tuple[bool, str]:
    if err["nonfinite_out"]:
        return False, "output holds NaN/inf (unused cache rows leaked?)"
    if err["err_rel_l2"] > OUT_TOLERANCE:
        return False, f"out relative L2 error {err['err_rel_l2']:.3g} > {OUT_TOLERANCE}"
    if err["err_lse"] is not None and err["err_lse"] > LSE_TOLERANCE:
        return False, f"lse max abs error {err['err_lse']:.3g} > {LSE_TOLERANCE}"
    return True, ""


# --------------------------------------------------------------------------- rows
def base_row(shape: Shape, provider: str, seqlens: Sequence[int], meta: dict, info: dict,
             ceilings: roofline.Ceilings) -> dict:
    anchor = anchors(shape, meta.get("anchor_table"))
    return {
        "suite": "+".join(suites_of(shape)) or "custom",
        "shape": shape.label,
        "b": shape.b, "s_q": shape.s_q, "mean_seqlen": shape.seqlen, "h_q": shape.h_q, "h_kv": shape.h_kv,
        "varlen": int(shape.varlen), "causal": int(shape.causal), "dtype": shape.dtype,
        "total_seqlen": sum(seqlens), "max_seqlen": max(seqlens),
        "provider": provider, "status": "", "reason": "",
        "ms": None, "ms_graph": None, "ms_e2e": None, "tflops": None, "gbps": None,
        "roofline_ms": roofline.roofline_ms(flops(shape, seqlens), bytes_moved(shape, seqlens), ceilings),
        "err_rel_l2": None, "err_max_abs": None, "err_lse": None,
        "anchor_ms": _anchor_for(provider, anchor), "target_ms": _target_for(provider, shape, anchor),
        "version": info.get(provider, {}).get("version", ""),
        "gpu": meta["gpu"], "torch": meta["torch"], "triton": meta.get("triton"), "cuda": meta.get("torch_cuda"),
        "date": meta["date"], "copy_gbps": ceilings.copy_gbps, "matmul_tflops": ceilings.matmul_tflops,
        "timing": meta["timing"], "key": shape.key,
    }


def _anchor_for(provider: str, anchor: Optional[dict]) -> Optional[float]:
    """perf-targets.md's figure for this provider (competitors), to see that it reproduces."""
    if anchor is None:
        return None
    return {"flash_mla": anchor["flashmla_ms"], "flashinfer-fa3": anchor["flashinfer_fa3_ms"],
            "vllm-triton": anchor["vllm_triton_ms"]}.get(provider)


def _target_for(provider: str, shape: Shape, anchor: Optional[dict]) -> Optional[float]:
    """The bar our kernels must meet on this row (perf-targets.md): CUDA <= best / 0.9; Triton
    <= best / 0.6 on b=128 rows and never slower than vLLM's Triton kernel."""
    if anchor is None or provider not in OURS:
        return None
    if provider == "flashmla-cuda":
        return anchor["target_ms"]
    bars = [anchor["vllm_triton_ms"]]
    if shape.b == 128:
        bars.append(anchor["best_ms"] / 0.6)
    return min(bars)


def finish_row(row: dict, shape: Shape, seqlens: Sequence[int]) -> dict:
    ms = row.get("ms")
    if ms:
        row["tflops"] = flops(shape, seqlens) / (ms * 1e-3) / 1e12
        row["gbps"] = bytes_moved(shape, seqlens) / (ms * 1e-3) / 1e9
    row["target_met"] = (None if row.get("target_ms") is None or not ms else bool(ms <= row["target_ms"]))
    return row


# --------------------------------------------------------------------------- one shape
def _cuda_healthy(device: torch.device) -> bool:
    if device.type != "cuda":
        return True
    try:
        torch.cuda.synchronize(device)
        torch.zeros(1, device=device).add_(1).item()
        return True
    except Exception:
        return False


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
    return text[:400]


class ContextLost(RuntimeError):
    """The CUDA context is unusable (sticky error); the process must restart."""

    def __init__(self, message: str, provider: Optional[str] = None):
        super().__init__(message)
        self.provider = provider


def settle(device: torch.device, seconds: float) -> None:
    """The same idle before every provider's timing (BenchConfig.settle_s): the queued work first."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    time.sleep(seconds)


def run_shape(shape: Shape, providers: Sequence[Provider], info: dict, config: BenchConfig,
              device: torch.device, meta: dict, ceilings: roofline.Ceilings,
              done: set, on_row: Callable[[dict], None], on_attempt: Callable[[Optional[str]], None],
              disabled: dict, log: Log = _print, clock_log: Optional[ClockLog] = None) -> None:
    """Benchmark every provider on one shape; ``on_row`` receives each finished row. With
    ``clock_log``, each row also gets the median SM clock and board power of its timing."""
    seqlens = shape.seqlens()
    todo = [p for p in providers if (shape.key, p.name) not in done]
    if not todo:
        return

    def emit(row):
        on_row(finish_row(row, shape, seqlens))

    # Providers that cannot run at all, or not this shape: rows without touching the GPU.
    runnable = []
    for p in todo:
        row = base_row(shape, p.name, seqlens, meta, info, ceilings)
        if not info[p.name]["available"]:
            emit({**row, "status": STATUS_SKIPPED, "reason": info[p.name]["reason"]})
        elif p.name in disabled:
            emit({**row, "status": STATUS_SKIPPED, "reason": disabled[p.name]})
        else:
            ok, why = p.supports(shape)
            if ok:
                runnable.append(p)
            else:
                emit({**row, "status": STATUS_SKIPPED, "reason": why})
    if not runnable:
        return

    reference = next((p for p in providers if p.is_reference), None) or get_providers(["torch"])[0]
    on_attempt(f"{shape.key}|inputs")
    try:
        inputs = make_inputs(shape, device, seed=config.seed)
        ref_prepared = reference.prepare(inputs)
        ref_out, ref_lse = ref_prepared.outputs(ref_prepared.run())
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as exc:
        reason = f"inputs/reference failed: {_short(exc)}"
        log(f"    {reason}")
        for p in runnable:
            emit({**base_row(shape, p.name, seqlens, meta, info, ceilings), "status": STATUS_FAILED, "reason": reason})
        if not _cuda_healthy(device):
            raise ContextLost(reason)
        _release(device)
        return

    for p in runnable:
        row = base_row(shape, p.name, seqlens, meta, info, ceilings)
        on_attempt(f"{shape.key}|{p.name}")
        _maybe_inject_crash(shape, p.name)
        t0 = time.perf_counter()
        try:
            if p.is_reference:
                prepared, err = ref_prepared, None
                row["reason"] = "reference (checked against flashmla.reference in tests)"
            else:
                prepared = p.prepare(inputs)
                out, lse = prepared.outputs(prepared.run())
                err = compare(out, lse, ref_out, ref_lse)
                del out, lse
                row.update({k: err[k] for k in ("err_rel_l2", "err_max_abs", "err_lse")})
                ok, why = check_passes(err)
                if not ok:
                    emit({**row, "status": STATUS_MISMATCH, "reason": why})
                    log(f"    {p.name:16s} MISMATCH: {why}")
                    continue
            if p.is_reference and not config.time_reference:
                emit({**row, "status": STATUS_SKIPPED, "reason": "reference not timed (--no-time-reference)"})
                continue
            if config.settle_s > 0:
                settle(device, config.settle_s)
            with clock_log.window((shape.key, p.name)) if clock_log else contextlib.nullcontext():
                row["ms"] = timing.bench_ms(prepared.run, device, config.warmup_ms, config.rep_ms, config.cpu_reps)
            if clock_log:
                clock = clock_log.stats((shape.key, p.name))
                row["sm_mhz"], row["power_w"] = clock["sm_mhz"], clock["power_w"]
            notes = []
            if config.e2e and prepared.run_e2e is not None:
                try:
                    row["ms_e2e"] = timing.bench_ms(prepared.run_e2e, device, config.warmup_ms, config.rep_ms,
                                                    config.cpu_reps)
                except Exception as exc:
                    notes.append(f"e2e: {_short(exc)}")
            if device.type == "cuda" and shape.b <= config.graph_max_batch:
                if prepared.graph_note:
                    notes.append(f"graph: {prepared.graph_note}")
                else:
                    try:
                        row["ms_graph"] = timing.bench_graph_ms(prepared.run, device, config.warmup_ms, config.rep_ms)
                    except Exception as exc:
                        notes.append(f"graph: {_short(exc)}")
                        if not _cuda_healthy(device):
                            raise
            row["status"] = STATUS_OK
            if notes:
                row["reason"] = "; ".join([row["reason"]] + notes if row["reason"] else notes)
            emit(row)
            extra = f", graph {row['ms_graph']:.4f}" if row.get("ms_graph") else ""
            e = f", err {err['err_rel_l2']:.1e}" if err else ""
            log(f"    {p.name:16s} {row['ms']:.4f} ms{extra}{e}  ({time.perf_counter() - t0:.1f} s)")
        except Exception as exc:
            reason = _short(exc)
            log(f"    {p.name:16s} FAILED: {reason}")
            if os.environ.get("FLASHMLA_BENCH_TRACEBACK"):
                traceback.print_exc()
            emit({**row, "status": STATUS_FAILED, "reason": reason})
            if not _cuda_healthy(device):
                raise ContextLost(f"{p.name} on {shape.label}: {reason}", provider=p.name)
        finally:
            prepared = None
    del inputs, ref_out, ref_lse, ref_prepared
    _release(device)


def _maybe_inject_crash(shape: Shape, provider: str) -> None:
    """Test hook: FLASHMLA_BENCH_INJECT_CRASH="provider|key-substring" makes this process die
    (as a segfaulting kernel would) at that attempt, "provider|key-substring|hang" makes it hang,
    so the supervisor's recovery can be tested."""
    spec = os.environ.get("FLASHMLA_BENCH_INJECT_CRASH")
    if spec and "|" in spec:
        name, fragment, *mode = spec.split("|")
        if name == provider and fragment in shape.key:
            if mode == ["hang"]:  # a kernel that never returns
                time.sleep(3600)
            os._exit(139)


def _release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- in-process run
def _prepare_device(config: BenchConfig) -> torch.device:
    device = torch.device(config.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but torch sees no CUDA GPU; use --device cpu "
                               "(torch reference + Triton interpreter on tiny shapes)")
        if device.index is not None:
            torch.cuda.set_device(device)
    elif device.type == "cpu":
        # Our Triton kernel runs on CPU tensors only in Triton's interpreter.
        wanted = config.providers is None or "flashmla-triton" in config.providers
        if wanted and "TRITON_INTERPRET" not in os.environ:
            os.environ["TRITON_INTERPRET"] = "1"
    return device


def run_in_process(config: BenchConfig, state_dir: Optional[Path] = None, log: Log = _print,
                   progress: bool = True) -> BenchResult:
    """Run everything in this process. With ``state_dir``, resume from and append to its
    rows.jsonl and record each attempt (the supervisor's child mode)."""
    device = _prepare_device(config)
    providers = get_providers(config.providers)  # the torch reference is used even when not listed
    meta = collect_meta(device, config)
    info = probe_providers(providers, device)

    rows: list[dict] = []
    done: set = set()
    disabled: dict = {}
    rows_path = attempt_path = None
    ceilings = None
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
        rows_path, attempt_path = state_dir / "rows.jsonl", state_dir / "attempt.json"
        rows = read_rows(rows_path)
        done = {(r["key"], r["provider"]) for r in rows}
        disabled = json.loads((state_dir / "disabled.json").read_text()) if (state_dir / "disabled.json").exists() else {}
        cpath = state_dir / "ceilings.json"
        if cpath.exists():
            ceilings = roofline.Ceilings(**json.loads(cpath.read_text()))
        mpath = state_dir / "meta.json"
        if mpath.exists():  # keep the first child's date and provider table
            first = json.loads(mpath.read_text())
            meta["date"] = first["meta"]["date"]
    if ceilings is None:
        if config.ceilings:
            log("measuring ceilings (device copy, read, bf16 matmul 8192^3) ...")
            ceilings = roofline.measure(device, config.warmup_ms, config.rep_ms)
        else:
            ceilings = roofline.Ceilings(note="not measured (--no-ceilings)")
        if state_dir is not None:
            (state_dir / "ceilings.json").write_text(json.dumps(ceilings.as_dict()))
    if state_dir is not None and not (state_dir / "meta.json").exists():
        (state_dir / "meta.json").write_text(json.dumps({"meta": meta, "providers": info}, indent=1))
    log(_describe(meta, ceilings, info))

    def on_row(row):
        rows.append(row)
        if rows_path is not None:
            with open(rows_path, "a") as f:
                f.write(json.dumps(row) + "\n")

    def on_attempt(what):
        if attempt_path is not None:
            attempt_path.write_text(json.dumps({"attempt": what, "started": time.time(), "pid": os.getpid()}))

    clock_log = None
    if config.clocks:  # one sampler per process: a supervised run's restarted child starts its own
        clock_log = ClockLog.start(str((state_dir or Path(tempfile.gettempdir())) / f"clocks_{os.getpid()}.csv"))
        log("clocks: SM clock and board power sampled by nvidia-smi while each provider is timed"
            if clock_log else "clocks: NOT recorded (nvidia-smi could not sample; see above)")
    bar = _progress_bar(len(config.shapes), progress, unit="shape")
    if bar is not None:
        log = bar.write  # log lines above the bar instead of through it
    for i, shape in enumerate(config.shapes):
        log(f"[{i + 1}/{len(config.shapes)}] {shape.label}  ({shape.key})")
        try:
            run_shape(shape, providers, info, config, device, meta, ceilings, done, on_row, on_attempt,
                      disabled, log, clock_log)
        except ContextLost as exc:
            log(f"CUDA context lost ({exc}); exiting so that the supervisor restarts the run")
            if state_dir is not None:
                if exc.provider:  # a provider that keeps breaking the context is dropped
                    _count_crash(state_dir, exc.provider, config.max_crashes_per_provider)
                on_attempt(None)
                sys.exit(CRASH_EXIT_CODE)
            raise
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if clock_log:
        clock_log.stop()
    on_attempt(None)
    return BenchResult(rows=rows, meta=meta, ceilings=ceilings, providers=info)


def _count_crash(state_dir: Path, provider: str, limit: int) -> None:
    """Count a crash of ``provider`` in state_dir; past ``limit`` it is disabled for the run."""
    cpath, dpath = state_dir / "crashes.json", state_dir / "disabled.json"
    crashes = json.loads(cpath.read_text()) if cpath.exists() else {}
    crashes[provider] = crashes.get(provider, 0) + 1
    cpath.write_text(json.dumps(crashes))
    if crashes[provider] >= limit:
        disabled = json.loads(dpath.read_text()) if dpath.exists() else {}
        disabled[provider] = f"disabled after {crashes[provider]} crashes in this run"
        dpath.write_text(json.dumps(disabled))


def _progress_bar(total: int, enabled: bool, unit: str):
    """A tqdm bar on an interactive terminal; None in logs (they get one line per shape instead
    of carriage returns) or without tqdm."""
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
        return tqdm(total=total, unit=unit, desc="bench", file=sys.stderr, dynamic_ncols=True)
    except Exception:
        return None


def _describe(meta: dict, ceilings: roofline.Ceilings, info: dict) -> str:
    lines = [f"device: {meta['gpu']} ({meta['device']}), torch {meta['torch']}, triton {meta.get('triton')}, "
             f"timing: {meta['timing']}"]
    if ceilings.copy_gbps:
        lines.append(f"ceilings: copy {ceilings.copy_gbps:.0f} GB/s, read {ceilings.read_gbps or 0:.0f} GB/s, "
                     f"bf16 matmul {ceilings.matmul_tflops or 0:.0f} TFLOPS")
    elif ceilings.note:
        lines.append(f"ceilings: {ceilings.note}")
    for name, i in info.items():
        status = f"available  {i['version']}" if i["available"] else f"SKIPPED: {i['reason']}"
        lines.append(f"  provider {name:16s} {status}")
    return "\n".join(lines)


def read_rows(path: Path) -> list[dict]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a crash
                    pass
    return rows


# --------------------------------------------------------------------------- supervisor
def run_supervised(config: BenchConfig, state_dir: Path, log: Log = _print, max_restarts: int = 30,
                   progress: bool = True) -> BenchResult:
    """Run the benchmark in child processes, restarting after crashes and hangs (see module doc).

    The children's output is forwarded line by line through ``log`` (so it shows in a notebook
    too); on a terminal a progress bar counts finished rows across restarts."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "config.json").write_text(json.dumps(config.to_json()))
    total_rows = len(config.shapes) * len(get_providers(config.providers))
    bar = _progress_bar(total_rows, progress, unit="row")
    if bar is not None:
        log = bar.write
    try:
        return _supervise(config, state_dir, log, max_restarts, bar)
    finally:
        if bar is not None:
            bar.close()


def _supervise(config, state_dir, log, max_restarts, bar) -> BenchResult:
    for restart in range(max_restarts + 1):
        attempt_file = state_dir / "attempt.json"
        if attempt_file.exists():
            attempt_file.unlink()
        cmd = [sys.executable, "-m", "flashmla.bench", "--worker", str(state_dir)]
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])  # so the child imports this flashmla
        env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        proc = subprocess.Popen(cmd, start_new_session=True, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1, errors="replace")
        forwarder = threading.Thread(target=_forward_lines, args=(proc.stdout, log), daemon=True)
        forwarder.start()
        try:
            rc = _wait_child(proc, attempt_file, config.attempt_timeout_s, log,
                             on_poll=(lambda: _update_bar(bar, state_dir)) if bar is not None else None)
            forwarder.join(timeout=5)
        except BaseException:
            # Interrupted (Ctrl-C, or SIGTERM from an outer timeout): the child runs in its own
            # session, so end it explicitly; the caller reports the rows measured so far.
            _kill_group(proc)
            raise
        if rc == 0:
            break
        attempt = json.loads(attempt_file.read_text()).get("attempt") if attempt_file.exists() else None
        what = "timed out" if rc == "timeout" else f"exited with {rc}"
        log(f"worker {what} during {attempt or 'startup'}; restarting ({restart + 1}/{max_restarts})")
        if not attempt:
            if rc != CRASH_EXIT_CODE:
                raise RuntimeError(f"benchmark worker {what} outside any measurement; see the log above")
            continue
        key, provider = attempt.split("|", 1)
        rows = read_rows(state_dir / "rows.jsonl")
        if any(r["key"] == key and r["provider"] == provider for r in rows):
            continue  # the failing row was recorded before the exit
        shape = next(s for s in config.shapes if s.key == key)
        meta = json.loads((state_dir / "meta.json").read_text()) if (state_dir / "meta.json").exists() else None
        ceil = roofline.Ceilings(**json.loads((state_dir / "ceilings.json").read_text())) \
            if (state_dir / "ceilings.json").exists() else roofline.Ceilings()
        recorded = {r["provider"] for r in rows if r["key"] == key}
        names = [provider] if provider != "inputs" else [p.name for p in get_providers(config.providers)]
        for name in [n for n in names if n not in recorded]:
            row = base_row(shape, name, shape.seqlens(), meta["meta"] if meta else _fallback_meta(),
                           meta["providers"] if meta else {}, ceil)
            row.update(status=STATUS_CRASHED, reason=f"worker process {what} (illegal access or hang?)")
            with open(state_dir / "rows.jsonl", "a") as f:
                f.write(json.dumps(finish_row(row, shape, shape.seqlens())) + "\n")
            if provider != "inputs":
                _count_crash(state_dir, name, config.max_crashes_per_provider)
    else:
        log(f"giving up after {max_restarts} restarts")
    return load_state(state_dir)


def _fallback_meta() -> dict:
    return {"gpu": "", "torch": torch.__version__, "date": "", "timing": "", "anchor_table": None}


def _forward_lines(stream, log: Log) -> None:
    for line in stream:
        log(line.rstrip("\n"))


def _update_bar(bar, state_dir: Path) -> None:
    path = state_dir / "rows.jsonl"
    try:
        done = path.read_bytes().count(b"\n") if path.exists() else 0
    except OSError:
        return
    if done > bar.n:
        bar.update(done - bar.n)


def _wait_child(proc: subprocess.Popen, attempt_file: Path, timeout_s: float, log: Log, on_poll=None):
    """Wait for the child; kill it (and its process group) if one attempt runs past timeout_s."""
    last = None
    since = time.time()
    while True:
        try:
            return proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        if on_poll is not None:
            on_poll()
        try:
            current = attempt_file.read_text() if attempt_file.exists() else None
        except OSError:
            current = last
        if current != last:
            last, since = current, time.time()
        if current and time.time() - since > timeout_s:
            log(f"attempt {json.loads(current).get('attempt')} exceeded {timeout_s:.0f} s; killing the worker")
            _kill_group(proc)
            return "timeout"


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            proc.kill()
        except ProcessLookupError:
            pass
    proc.wait()


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that a partial report is still written."""


def raise_on_sigterm() -> None:
    def handler(signum, frame):
        raise Terminated(f"signal {signum}")
    signal.signal(signal.SIGTERM, handler)


def load_state(state_dir: Path) -> BenchResult:
    """The rows, environment and ceilings recorded so far in ``state_dir`` (for a partial report)."""
    meta = json.loads((state_dir / "meta.json").read_text())
    cpath = state_dir / "ceilings.json"
    ceil = roofline.Ceilings(**json.loads(cpath.read_text())) if cpath.exists() else roofline.Ceilings()
    return BenchResult(rows=read_rows(state_dir / "rows.jsonl"), meta=meta["meta"], ceilings=ceil,
                       providers=meta["providers"])


def reset_state(state_dir: Optional[Path]) -> None:
    """Forget a previous run's rows in ``state_dir`` (the default; ``--resume`` keeps them)."""
    if state_dir is not None and Path(state_dir).is_dir():
        for f in Path(state_dir).iterdir():
            if f.is_file():
                f.unlink()


def run(config: BenchConfig, state_dir: Optional[Path] = None, log: Log = _print, progress: bool = True) -> BenchResult:
    """Run the benchmark: supervised child processes on CUDA (unless ``isolate=False``), else in process."""
    isolate = config.isolate if config.isolate is not None else torch.device(config.device).type == "cuda"
    if isolate:
        if state_dir is None:
            raise ValueError("an isolated (supervised) run needs a state_dir")
        return run_supervised(config, state_dir, log, progress=progress)
    return run_in_process(config, state_dir, log, progress)
