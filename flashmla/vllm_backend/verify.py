"""The verification switch: compare the backend's output with a float32 reference, live, in vLLM.

``FLASHMLA_VLLM_VERIFY=N`` (N > 0) makes every ``forward_mqa`` call also compute the reference
attention for a few of the batch's requests (on the very tensors vLLM handed us: the paged
cache, block table and lengths of the step) and compare. The comparison is written with plain
tensor ops and no host synchronisation, so it is captured into vLLM's CUDA graphs and runs on
every replay as well. Its result goes into small device buffers; the metadata builder, which
runs on the host before every step, reads them for the first N steps (then every 32nd) and
raises ``VerificationError`` on a mismatch, which stops the engine: a failure is loud, not a
log line. ``FLASHMLA_VLLM_VERIFY_LOG=path`` writes a JSON summary after each read, so a driver
process can prove that checks ran.

Checked per call: ``out`` within ``OUT_TOL`` of the reference relative to the reference's
largest magnitude, finite ``lse`` within ``LSE_TOL``, the same rows empty (lse = +inf) on both
sides, and no NaN. Padded CUDA-graph rows (seqlen 0) are among the sampled rows when present.
"""
from __future__ import annotations

import json
import math
import os
from typing import Optional

import torch

ENV = "FLASHMLA_VLLM_VERIFY"
LOG_ENV = "FLASHMLA_VLLM_VERIFY_LOG"
SAMPLED_REQUESTS = 8
OUT_TOL = 2e-2  # bf16 output rounding is 4e-3 relative; kernels agree to ~1e-3 (tests/test_cuda.py)
LSE_TOL = 1e-2
POLL_EVERY_AFTER = 32


class VerificationError(RuntimeError):
    """The backend's output differs from the reference on live vLLM tensors."""


def requested_steps() -> int:
    value = os.environ.get(ENV, "0").strip()
    try:
        steps = int(value)
    except ValueError:
        raise ValueError(f"{ENV} must be an integer number of decode steps to check, got {value!r}") from None
    return max(steps, 0)


def sampled_slice(batch: int, count: int = SAMPLED_REQUESTS) -> slice:
    """A strided slice of at most ``count`` requests spanning the batch (first and last
    included where possible). A slice, not an index tensor: building an index tensor from a
    Python list is a host-to-device copy, which CUDA-graph capture forbids."""
    if batch <= count:
        return slice(0, batch)
    step = (batch - 1) // (count - 1)
    return slice(0, step * (count - 1) + 1, step)


def dense_reference(q: torch.Tensor, k_cache: torch.Tensor, block_table: torch.Tensor,
                    cache_seqlens: torch.Tensor, softmax_scale: float, causal: bool
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Paged MLA decode in float32 with static shapes and no host sync (CUDA-graph capturable).

    Same contract as ``flashmla.reference.decode`` (which is the oracle and is itself checked
    against this in tests/test_vllm_backend.py), but it gathers every block-table entry and
    masks by length instead of looping over requests in Python. Entries past a sequence's end
    are clamped into range and masked, rows past the end are zeroed before any arithmetic, so
    garbage and NaN never reach the result.
    """
    b, s_q, h_q, d = q.shape
    num_blocks, page, h_kv, _ = k_cache.shape
    max_blocks = block_table.shape[1]
    n = max_blocks * page
    pages = block_table.long().clamp(0, num_blocks - 1)
    kv = k_cache[pages].reshape(b, n, h_kv, d).float()                  # [b, n, h_kv, 576]
    lengths = cache_seqlens.long()
    positions = torch.arange(n, device=q.device)
    in_sequence = positions[None, :] < lengths[:, None]                 # [b, n]
    kv = torch.where(in_sequence[:, :, None, None], kv, torch.zeros((), device=q.device))
    group = h_q // h_kv
    # q head h reads kv head h // group; with one kv head (MLA) a broadcast view is enough
    kv_heads = kv.expand(b, n, h_q, d) if h_kv == 1 else kv.repeat_interleave(group, dim=2)
    scores = torch.einsum("bthd,bnhd->bhtn", q.float(), kv_heads) * softmax_scale
    token = torch.arange(s_q, device=q.device)
    limits = lengths[:, None] - ((s_q - 1 - token)[None, :] if causal else 0)    # [b, s_q]
    allowed = positions[None, None, :] < limits[:, :, None]                      # [b, s_q, n]
    scores = scores.masked_fill(~allowed[:, None, :, :], -math.inf)
    lse = torch.logsumexp(scores, dim=-1)                                         # [b, h, s_q]
    probs = torch.exp(scores - lse[..., None]).nan_to_num(0.0)
    out = torch.einsum("bhtn,bnhd->bthd", probs, kv_heads[..., :512])
    lse = torch.where(torch.isfinite(lse), lse, torch.full((), math.inf, device=q.device))
    return out, lse


def compare(out: torch.Tensor, lse: torch.Tensor, ref_out: torch.Tensor, ref_lse: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Device scalars (out error relative to max|ref|, lse error), with no host sync.

    +inf marks a NaN the reference does not have, or a difference in which rows are empty.
    A NaN in both at the same place is agreement: vLLM's warm-up and capture runs attend over
    cache pages nobody wrote, and the kernel must not be blamed for garbage in its input.
    """
    zero = torch.zeros((), device=out.device)
    inf = torch.full((), math.inf, device=out.device)
    out = out.float()
    out_nan, ref_nan = torch.isnan(out), torch.isnan(ref_out)
    scale = torch.nan_to_num(ref_out, nan=0.0).abs().amax().clamp_min(1e-12)
    diff = torch.where(out_nan | ref_nan, zero, (out - ref_out).abs())
    out_err = diff.amax() / scale
    out_err = torch.where((out_nan != ref_nan).any(), inf, out_err)
    lse_nan, ref_lse_nan = torch.isnan(lse), torch.isnan(ref_lse)
    both_finite = torch.isfinite(lse) & torch.isfinite(ref_lse)
    lse_err = torch.where(both_finite, (lse - ref_lse).abs(), zero).amax()
    pattern_differs = (torch.isposinf(lse) != torch.isposinf(ref_lse)).any() | (lse_nan != ref_lse_nan).any()
    lse_err = torch.where(pattern_differs, inf, lse_err)
    return out_err, lse_err


class Verifier:
    """Per-process verification state (device buffers shared by every layer)."""

    def __init__(self, steps: int, device: torch.device):
        self.steps = steps
        self.device = torch.device(device)
        self.calls = torch.zeros(1, dtype=torch.int64, device=self.device)
        self.worst_out = torch.zeros(1, dtype=torch.float32, device=self.device)
        self.worst_lse = torch.zeros(1, dtype=torch.float32, device=self.device)
        self.polls = 0
        self.builds = 0
        self.log_path = os.environ.get(LOG_ENV)

    # -- called inside forward_mqa (possibly while a CUDA graph is being captured)
    def check(self, q, k_cache, block_table, cache_seqlens, softmax_scale, causal, out, lse) -> None:
        rows = sampled_slice(q.shape[0])
        ref_out, ref_lse = dense_reference(q[rows], k_cache, block_table[rows], cache_seqlens[rows],
                                           softmax_scale, causal)
        out_err, lse_err = compare(out[rows], lse[rows], ref_out, ref_lse)
        torch.maximum(self.worst_out, out_err.reshape(1), out=self.worst_out)
        torch.maximum(self.worst_lse, lse_err.reshape(1), out=self.worst_lse)
        self.calls.add_(1)

    # -- called by the metadata builder on the host, before each step
    def poll(self) -> Optional[dict]:
        self.builds += 1
        if self.builds > self.steps and self.builds % POLL_EVERY_AFTER:
            return None
        if self.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            return None
        summary = self.summary()
        self.polls += 1
        if self.log_path:
            tmp = self.log_path + ".tmp"
            with open(tmp, "w") as fh:
                json.dump(summary, fh)
            os.replace(tmp, self.log_path)
        if not summary["passed"]:
            raise VerificationError(
                "flashmla vLLM backend output differs from the float32 reference on live tensors: "
                f"max relative out error {summary['max_out_error']:.3g} (tolerance {OUT_TOL}), "
                f"max lse error {summary['max_lse_error']:.3g} (tolerance {LSE_TOL}) over "
                f"{summary['checked_calls']} checked layer calls")
        return summary

    def summary(self) -> dict:
        calls = int(self.calls.item())  # host sync: only in verification runs
        out_err = float(self.worst_out.item())
        lse_err = float(self.worst_lse.item())
        return {"checked_calls": calls, "max_out_error": out_err, "max_lse_error": lse_err,
                "out_tolerance": OUT_TOL, "lse_tolerance": LSE_TOL, "polls": self.polls + 1,
                "builds": self.builds, "steps_requested": self.steps, "pid": os.getpid(),
                "passed": out_err <= OUT_TOL and lse_err <= LSE_TOL}


_VERIFIER: Optional[Verifier] = None


def setup(device: torch.device) -> Optional[Verifier]:
    """Create the process's verifier when the switch is on (called where allocation is safe)."""
    global _VERIFIER
    steps = requested_steps()
    if steps <= 0:
        return None
    if _VERIFIER is None:
        _VERIFIER = Verifier(steps, device)
    return _VERIFIER


def active() -> Optional[Verifier]:
    return _VERIFIER


def reset() -> None:
    """Forget the process's verifier (tests)."""
    global _VERIFIER
    _VERIFIER = None
