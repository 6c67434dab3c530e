"""Benchmark suite: flashmla's kernels beside FlashMLA, FlashInfer and vLLM's Triton MLA.

From Python::

    from flashmla import bench
    result, files = bench.run_benchmark(suites=["quick"], out_dir="bench-out")
    print(bench.report.results_table(result.rows, markdown=False))

From the shell: ``python -m flashmla.bench --help`` (or ``scripts/bench.py``). The method
(data, timing, FLOP and byte counts, targets) is in docs/benchmarking.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from . import providers, report, roofline, shapes, timing
from .providers import PROVIDER_NAMES, get_providers
from .runner import BenchConfig, BenchResult, reset_state, run
from .shapes import SUITES, Shape, make_inputs, parse_shape, select_shapes, suite

__all__ = ["BenchConfig", "BenchResult", "PROVIDER_NAMES", "SUITES", "Shape", "get_providers", "make_inputs",
           "parse_shape", "providers", "report", "roofline", "run", "run_benchmark", "select_shapes", "shapes",
           "suite", "timing"]


def run_benchmark(suites: Sequence[str] = (), shapes: Sequence["str | Shape"] = (),
                  providers: Optional[Sequence[str]] = None, device: str = "cuda",
                  out_dir: "str | Path | None" = None, plots: bool = True, log=print, **options):
    """Run the benchmark and (with ``out_dir``) write CSV, markdown and plots there.

    ``suites``/``shapes`` select the shapes (default: ``all`` on a GPU, ``tiny`` on the CPU);
    ``providers`` the providers (default: all; unavailable ones are listed as skipped);
    ``options`` are :class:`BenchConfig` fields (warmup_ms, rep_ms, isolate, ...).
    Returns ``(BenchResult, {name: path})``.
    """
    if not suites and not shapes:
        suites = ["all"] if device.startswith("cuda") else ["tiny"]
    config = BenchConfig(shapes=select_shapes(suites, shapes), providers=list(providers) if providers else None,
                         device=device, **options)
    state_dir = Path(out_dir) / "state" if out_dir is not None else None
    if state_dir is None and config.isolate:
        raise ValueError("isolate=True needs out_dir (the supervisor keeps its state there)")
    if config.isolate is None and out_dir is None:
        config.isolate = False
    reset_state(state_dir)
    result = run(config, state_dir=state_dir, log=log)
    files = report.write_report(result.rows, result.meta, result.ceilings, result.providers, out_dir,
                                plots=plots) if out_dir is not None else {}
    return result, files
