"""The card's ceilings, measured in the same run as the kernels (datasheet figures are leads only).

* copy bandwidth: a 2 GiB device-to-device copy, counting bytes read plus bytes written;
* read bandwidth: a sum over 2 GiB (reads only);
* bf16 matmul: 8192 x 8192 x 8192 on random data (never zeros: they run faster).

MLA decode is memory-bound at few heads (compare GB/s with the copy line) and compute-bound at
128 heads with s_q = 2 (compare TFLOPS with the matmul line). ``roofline_ms`` gives the floor
for a shape: the larger of bytes / copy bandwidth and FLOPs / matmul rate.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from . import timing


@dataclasses.dataclass
class Ceilings:
    copy_gbps: Optional[float] = None  # read + write
    read_gbps: Optional[float] = None
    matmul_tflops: Optional[float] = None
    note: str = ""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def measure(device: torch.device, warmup_ms: float = timing.WARMUP_MS, rep_ms: float = timing.REP_MS,
            copy_bytes: int = 2 << 30, matmul_n: int = 8192) -> Ceilings:
    """Measure the ceilings on ``device``; on the CPU return empty ceilings (nothing to compare)."""
    if device.type != "cuda":
        return Ceilings(note="no GPU: ceilings not measured")
    notes = []
    result = Ceilings()

    def bandwidth():
        src = torch.empty(copy_bytes // 2, dtype=torch.bfloat16, device=device).normal_()
        dst = torch.empty_like(src)
        copy_ms = timing.bench_ms(lambda: dst.copy_(src), device, warmup_ms, rep_ms)
        read_ms = timing.bench_ms(lambda: src.sum(dtype=torch.float32), device, warmup_ms, rep_ms)
        return 2 * copy_bytes / (copy_ms * 1e-3) / 1e9, copy_bytes / (read_ms * 1e-3) / 1e9

    def matmul():
        a = torch.randn(matmul_n, matmul_n, dtype=torch.bfloat16, device=device)
        b = torch.randn(matmul_n, matmul_n, dtype=torch.bfloat16, device=device)
        ms = timing.bench_ms(lambda: a @ b, device, warmup_ms, rep_ms)
        return 2 * matmul_n ** 3 / (ms * 1e-3) / 1e12

    try:
        result.copy_gbps, result.read_gbps = bandwidth()
    except Exception as exc:  # a ceiling we cannot measure leaves its line off the plot
        notes.append(f"bandwidth: {exc!r}")
    try:
        result.matmul_tflops = matmul()
    except Exception as exc:
        notes.append(f"matmul: {exc!r}")
    torch.cuda.empty_cache()
    result.note = "; ".join(notes)
    return result


def roofline_ms(flops: float, nbytes: float, ceilings: Ceilings) -> Optional[float]:
    """The floor time of a kernel that moves ``nbytes`` and does ``flops`` on this card."""
    if not ceilings.copy_gbps or not ceilings.matmul_tflops:
        return None
    return max(nbytes / (ceilings.copy_gbps * 1e9), flops / (ceilings.matmul_tflops * 1e12)) * 1e3
