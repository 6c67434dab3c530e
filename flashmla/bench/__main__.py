"""Command line: ``python -m flashmla.bench [options]`` (``--help`` lists them).

Examples::

    python -m flashmla.bench --out bench-out                      # everything, on the GPU
    python -m flashmla.bench --quick --out bench-out              # a few rows of each suite
    python -m flashmla.bench --suites table sweep --providers flashmla-cuda,flashinfer-fa3
    python -m flashmla.bench --shape b=128,s_q=2,seqlen=8K,h_q=128,varlen=1
    python -m flashmla.bench --device cpu --out /tmp/b            # CI: tiny shapes, torch + Triton interpreter
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def _split(values):
    out = []
    for v in values or []:
        out += [x.strip() for x in v.split(",") if x.strip()]
    return out


def build_parser() -> argparse.ArgumentParser:
    from .providers import PROVIDER_NAMES
    from .shapes import SUITES
    p = argparse.ArgumentParser(prog="python -m flashmla.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sel = p.add_argument_group("what to run")
    sel.add_argument("--suite", "--suites", action="extend", nargs="+", metavar="NAME",
                     help=f"shape suite(s), comma-separated or repeated: {', '.join(SUITES)} "
                          "(default: all on a GPU, tiny on the CPU)")
    sel.add_argument("--quick", action="store_true", help="the 'quick' suite (about a minute on an H100)")
    sel.add_argument("--shape", action="append", metavar="SPEC",
                     help="an extra shape, e.g. b=128,s_q=2,seqlen=8K,h_q=128,varlen=1 or 128,2,8192,128,1")
    sel.add_argument("--providers", action="append", metavar="LIST",
                     help=f"providers to run (default all): {', '.join(PROVIDER_NAMES)}, or 'flashinfer' for both")
    sel.add_argument("--skip-providers", action="append", metavar="LIST", help="providers to leave out")
    sel.add_argument("--device", default=None, help="cuda (default when a GPU is visible) or cpu")
    out = p.add_argument_group("output")
    out.add_argument("--out", default="bench-out", help="output folder (default: %(default)s)")
    out.add_argument("--no-plots", action="store_true", help="CSV and markdown only")
    out.add_argument("--table", choices=("text", "markdown", "none"), default="text",
                     help="print the results table at the end (default: %(default)s)")
    how = p.add_argument_group("method")
    how.add_argument("--warmup", type=float, default=25, help="do_bench warmup in ms (default: %(default)s)")
    how.add_argument("--rep", type=float, default=100, help="do_bench rep in ms (default: %(default)s)")
    how.add_argument("--cpu-reps", type=int, default=2, help="calls timed per provider on the CPU")
    how.add_argument("--graph-max-batch", type=int, default=8,
                     help="also time CUDA-graph replay for batches up to this size (default: %(default)s)")
    how.add_argument("--no-time-reference", action="store_true", help="use the torch reference for checks only")
    how.add_argument("--no-e2e", action="store_true", help="skip the metadata + kernel (end-to-end) timing")
    how.add_argument("--no-ceilings", action="store_true", help="do not measure copy bandwidth / matmul TFLOPS")
    how.add_argument("--clocks", action="store_true",
                     help="record the SM clock and board power (nvidia-smi) while each provider is timed")
    how.add_argument("--settle", type=float, default=0.0, metavar="S",
                     help="idle the GPU S seconds before each provider's timing, so that every provider starts "
                          "from the same power state whatever ran before it (default: %(default)s)")
    how.add_argument("--isolate", dest="isolate", action="store_true", default=None,
                     help="run in supervised child processes (default on a GPU): a crash or hang skips "
                          "that provider on that shape instead of ending the run")
    how.add_argument("--no-isolate", dest="isolate", action="store_false")
    how.add_argument("--attempt-timeout", type=float, default=300,
                     help="seconds one (shape, provider) may take before the supervisor kills it")
    how.add_argument("--resume", action="store_true", help="keep the rows already in OUT/state and do the rest")
    info = p.add_argument_group("information")
    info.add_argument("--list-shapes", action="store_true", help="print the selected shapes and exit")
    info.add_argument("--list-providers", action="store_true", help="print provider availability and exit")
    info.add_argument("--report-only", action="store_true",
                      help="only (re)write the report from the rows recorded in OUT/state")
    p.add_argument("--worker", metavar="STATE_DIR", help=argparse.SUPPRESS)  # the supervisor's child
    return p


def _worker(state_dir: Path) -> int:
    from .runner import BenchConfig, run_in_process
    config = BenchConfig.from_json(json.loads((state_dir / "config.json").read_text()))
    run_in_process(config, state_dir, progress=False)
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        return _worker(Path(args.worker))

    from . import report
    from .providers import OURS, get_providers
    from .runner import (BenchConfig, _prepare_device, load_state, probe_providers, raise_on_sigterm,
                         reset_state, run)
    from .shapes import select_shapes

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    suites = _split(args.suite)
    if args.quick:
        suites.append("quick")
    if not suites and not args.shape:
        suites = ["all"] if device.startswith("cuda") else ["tiny"]
    try:
        shapes = select_shapes(suites, args.shape or [])  # one spec per --shape (specs contain commas)
        names = _split(args.providers) or None
        skip = set(_split(args.skip_providers))
        chosen = [p.name for p in get_providers(names)]
        for s in skip:
            get_providers([s])  # validates the name
        chosen = [n for n in chosen if n not in skip and not (n.startswith("flashinfer") and "flashinfer" in skip)]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.list_shapes:
        for s in shapes:
            print(f"{s.label:28s} {s.key}")
        print(f"{len(shapes)} shapes")
        return 0
    config = BenchConfig(shapes=shapes, providers=chosen, device=device, warmup_ms=args.warmup, rep_ms=args.rep,
                         cpu_reps=args.cpu_reps, graph_max_batch=args.graph_max_batch,
                         time_reference=not args.no_time_reference, e2e=not args.no_e2e,
                         ceilings=not args.no_ceilings, isolate=args.isolate, attempt_timeout_s=args.attempt_timeout,
                         clocks=args.clocks, settle_s=args.settle)
    if args.list_providers:
        dev = _prepare_device(config)
        for name, i in probe_providers(get_providers(chosen), dev).items():
            print(f"{name:16s} " + (f"available  {i['version']}" if i["available"] else f"skipped: {i['reason']}"))
        return 0
    out_dir = Path(args.out)
    state_dir = out_dir / "state"
    interrupted = False
    if args.report_only:
        if not (state_dir / "meta.json").exists():
            print(f"error: no recorded run in {state_dir}", file=sys.stderr)
            return 2
        result = load_state(state_dir)
    else:
        if not args.resume:
            reset_state(state_dir)
        print(f"{len(shapes)} shapes x {len(chosen)} providers on {device}; output in {out_dir}", flush=True)
        raise_on_sigterm()
        try:
            result = run(config, state_dir=state_dir)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM (an outer timeout): report what we have
            print(f"interrupted ({exc or 'Ctrl-C'}); writing the report from the rows measured so far",
                  file=sys.stderr, flush=True)
            if not (state_dir / "meta.json").exists():
                return 130
            result, interrupted = load_state(state_dir), True
    files = report.write_report(result.rows, result.meta, result.ceilings, result.providers, out_dir,
                                plots=not args.no_plots)
    for err in files.get("plot_errors", []):
        print(f"plot failed: {err}", file=sys.stderr)
    print("wrote " + ", ".join(str(v) for k, v in files.items() if k != "plot_errors"), flush=True)
    if args.table != "none":
        rows = report.add_comparisons(result.rows)
        print()
        print(report.results_table(rows, markdown=args.table == "markdown"))
    # Competitors may be missing or broken here and there; our kernels giving wrong answers is an error.
    wrong = [r for r in result.rows if r.get("status") == "mismatch" and r["provider"] in OURS]
    if wrong:
        print(f"error: {len(wrong)} results of our kernels did not match the reference", file=sys.stderr)
    return 1 if wrong else (124 if interrupted else 0)


if __name__ == "__main__":
    sys.exit(main())
