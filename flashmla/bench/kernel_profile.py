"""Where a provider's time goes: device time per kernel and host time per call.

The benchmark gives one number per call; when a kernel is slower than another by a constant
20-40 us, that number cannot say whether the main kernel, the combine, a memset or the host
launch path is responsible. This runs each provider's prepared call (the same call the
benchmark times) under ``torch.profiler`` and reports, per call:

* every GPU kernel it launched, with its mean device time;
* the sum of those (device busy time) and the wall time of the call issued back to back
  (``wall``; when it exceeds the device time the call is host-bound);
* the host time to issue one call (``host``: CPU time of the call, synchronising only at the
  end of the loop).

    python -m flashmla.bench.kernel_profile --shapes "128,1,4K,64" "1,1,4K,128" \
        --providers flashmla-cuda flashinfer-fa3 --out prof

The timings here come from the profiler, not from do_bench: use them to see proportions, and
the benchmark (``python -m flashmla.bench``) for the numbers to compare.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from .providers import get_providers
from .shapes import make_inputs, parse_shape


@dataclasses.dataclass
class KernelRow:
    shape: str
    provider: str
    kernel: str
    calls_per_step: float  # launches of this kernel per provider call
    device_us: float  # mean device time per launch


@dataclasses.dataclass
class CallSummary:
    shape: str
    provider: str
    status: str
    device_us: float = float("nan")  # sum of kernel time per call
    wall_us: float = float("nan")  # back-to-back calls, wall clock per call
    host_us: float = float("nan")  # CPU time to issue one call
    kernels: int = 0
    reason: str = ""


def _device_kernel_events(prof) -> list:
    events = []
    for evt in prof.events():
        device_type = getattr(evt, "device_type", None)
        if device_type is not None and device_type == torch.autograd.DeviceType.CUDA:
            events.append(evt)
    return events


def profile_call(run, device: torch.device, iters: int = 20, warmup: int = 5) -> tuple[dict, float, float]:
    """({kernel name: (launches, total device us)}, wall us per call, host us per call)."""
    for _ in range(warmup):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    # Wall and host time without the profiler's overhead.
    start = time.perf_counter()
    for _ in range(iters):
        run()
    host_us = (time.perf_counter() - start) / iters * 1e6
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall_us = (time.perf_counter() - start) / iters * 1e6
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(iters):
            run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    per_kernel: dict[str, list[float]] = {}
    for evt in _device_kernel_events(prof):
        duration = getattr(evt, "device_time", None)
        if duration is None:
            duration = getattr(evt, "cuda_time", 0.0)
        per_kernel.setdefault(evt.name, []).append(float(duration))
    return {name: (len(times), sum(times)) for name, times in per_kernel.items()}, wall_us, host_us


def _short(name: str, width: int = 70) -> str:
    return name if len(name) <= width else name[: width - 3] + "..."


def run_profile(shapes: Sequence[str], provider_names: Sequence[str], device: torch.device,
                iters: int = 20) -> tuple[list[CallSummary], list[KernelRow]]:
    summaries: list[CallSummary] = []
    kernels: list[KernelRow] = []
    providers = get_providers(provider_names)
    for text in shapes:
        shape = parse_shape(text)
        label = text
        inputs = make_inputs(shape, device=device, seed=0)
        for provider in providers:
            ok, why = provider.availability(device)
            if ok:
                ok, why = provider.supports(shape)
            if not ok:
                print(f"[profile] {label} {provider.name}: SKIPPED ({why})", flush=True)
                summaries.append(CallSummary(label, provider.name, "skipped", reason=why))
                continue
            try:
                prepared = provider.prepare(inputs)
                per_kernel, wall_us, host_us = profile_call(prepared.run, device, iters=iters)
            except Exception as exc:  # one provider's failure must not hide the others
                why = f"{type(exc).__name__}: {exc}"
                print(f"[profile] {label} {provider.name}: FAILED ({why})", flush=True)
                summaries.append(CallSummary(label, provider.name, "failed", reason=why))
                continue
            device_us = sum(total for _, total in per_kernel.values()) / iters
            summaries.append(CallSummary(label, provider.name, "ok", device_us, wall_us, host_us, len(per_kernel)))
            for name, (launches, total) in sorted(per_kernel.items(), key=lambda kv: -kv[1][1]):
                kernels.append(KernelRow(label, provider.name, name, launches / iters, total / launches))
            print(f"[profile] {label} {provider.name}: device {device_us:.1f} us, wall {wall_us:.1f} us, "
                  f"host {host_us:.1f} us per call", flush=True)
        del inputs
    return summaries, kernels


def markdown(summaries: Sequence[CallSummary], kernels: Sequence[KernelRow]) -> str:
    lines = ["| shape | provider | device us / call | wall us / call | host us / call | kernels (launches per call x mean us) |",
             "|---|---|---:|---:|---:|---|"]
    for s in summaries:
        if s.status != "ok":
            lines.append(f"| {s.shape} | {s.provider} | {s.status} | | | {s.reason} |")
            continue
        parts = [f"{_short(k.kernel, 48)} {k.calls_per_step:g}x{k.device_us:.1f}"
                 for k in kernels if k.shape == s.shape and k.provider == s.provider]
        lines.append(f"| {s.shape} | {s.provider} | {s.device_us:.1f} | {s.wall_us:.1f} | {s.host_us:.1f} | "
                     + "; ".join(parts) + " |")
    return "\n".join(lines) + "\n"


def write_results(out: Path, summaries: Sequence[CallSummary], kernels: Sequence[KernelRow], meta: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for path, rows in ((out / "profile_calls.csv", summaries), (out / "profile_kernels.csv", kernels)):
        with open(path, "w", newline="") as f:
            fields = [field.name for field in dataclasses.fields(KernelRow if rows is kernels else CallSummary)]
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(dataclasses.asdict(r) for r in rows)
    (out / "profile.md").write_text(f"# Kernel profile\n\n{meta}\n\n" + markdown(summaries, kernels))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", required=True, help='shapes as "b,s_q,seqlen,h_q[,varlen]"')
    parser.add_argument("--providers", nargs="+", default=["flashmla-cuda"])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="write profile.md, profile_calls.csv, profile_kernels.csv here")
    args = parser.parse_args(argv)
    if args.iters < 1:
        parser.error("--iters must be >= 1")
    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    meta = (f"- device: {gpu}; torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
            f"- {args.iters} calls per (shape, provider) after 5 warm-up calls; device times from torch.profiler")
    summaries, kernels = run_profile(args.shapes, args.providers, device, args.iters)
    text = markdown(summaries, kernels)
    print(text)
    if args.out:
        write_results(args.out, summaries, kernels, meta)
    return 1 if any(s.status == "failed" for s in summaries) else 0


if __name__ == "__main__":
    sys.exit(main())
