#!/usr/bin/env python3
"""Summarise a side-by-side bench.csv (scripts/gpu_bench.sh) the way the README and the records
READMEs quote it: the perf-targets.md table as README markdown, and the numbers the text cites
(targets met, the memory-bound rows' share of the copy ceiling, ratios to FlashInfer fa3 and to
FlashMLA at its pinned commit, the geometric mean against the best other provider).

    python3 scripts/bench_summary.py benchmarks/results/<run>/bench.csv [--table] [--compare OLD.csv]

--table prints the README table; --compare prints our CUDA time per shape against an older run.
"""
from __future__ import annotations

import argparse
import math

from flashmla.bench.report import format_cell, read_typed_csv

OURS = "flashmla-cuda"
FA3 = "flashinfer-fa3"
FLASHMLA = "flashmla-head"
# The README table's columns: (provider, header), in order.
TABLE_PROVIDERS = [(OURS, "**ours CUDA**"), ("flashmla-triton", "**ours Triton** (Hopper: Gluon)"),
                   ("flashmla-triton-portable", "ours Triton, portable kernel"), (FA3, "FlashInfer fa3"),
                   ("flashinfer-fa2", "FlashInfer fa2"), (FLASHMLA, "FlashMLA 9241ae3"),
                   ("flash_mla", "FlashMLA (vLLM 0.26 build)"), ("vllm-triton", "vLLM Triton")]


def load(path: str) -> dict[tuple[str, str], dict]:
    return {(r["shape"], r["provider"]): r for r in read_typed_csv(path)}


def shapes_of(rows: dict, suite: str | None = None) -> list[str]:
    """Shapes in the order the run measured them (our kernel's rows), optionally one suite's."""
    return [s for (s, p), r in rows.items()
            if p == OURS and (suite is None or suite in r["suite"].split("+"))]


def ms(rows: dict, shape: str, provider: str) -> float | None:
    r = rows.get((shape, provider))
    return r["ms"] if r and r["status"] == "ok" else None


def yes_no(verdict: bool | None) -> str:
    return {True: "yes", False: "**no**"}.get(verdict, "")


def four_digits(value: float | None) -> str:
    return f"{value:.4f}" if value else ""


def readme_table(rows: dict) -> str:
    head = ["shape (b s_q len h_q lengths)"] + [h for _, h in TABLE_PROVIDERS] + [
        "CUDA target", "met", "same-run bar", "met", "Triton bar", "met"]
    rule = "|---|" + "---:|" * len(TABLE_PROVIDERS) + "---:|:-:|---:|:-:|---:|:-:|"
    lines = ["| " + " | ".join(head) + " |", rule]
    for shape in shapes_of(rows, "table"):
        ours, triton = rows[(shape, OURS)], rows.get((shape, "flashmla-triton"), {})
        cells = [shape] + [format_cell(rows.get((shape, p))) for p, _ in TABLE_PROVIDERS] + [
            four_digits(ours["target_ms"]), yes_no(ours["target_met"]),
            four_digits(ours["same_run_target_ms"]), yes_no(ours["same_run_met"]),
            four_digits(triton.get("target_ms")), yes_no(triton.get("target_met"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def span(values: list[float], digits: int = 3) -> str:
    return f"{min(values):.{digits}f}-{max(values):.{digits}f}" if values else "n/a"


def summary(rows: dict) -> str:
    table, every = shapes_of(rows, "table"), shapes_of(rows)
    met = [s for s in table if rows[(s, OURS)]["target_met"]]
    same = [s for s in table if rows[(s, OURS)]["same_run_met"]]
    same_all = [s for s in every if rows[(s, OURS)]["same_run_met"]]
    out = [f"targets met: {len(met)} of {len(table)}; same-run bar: {len(same)} of {len(table)} table rows, "
           f"{len(same_all)} of {len(every)} shapes",
           "misses: " + "; ".join(f"{s} {ms(rows, s, OURS):.4f} vs {rows[(s, OURS)]['target_ms']}"
                                   for s in table if s not in met)]
    copy_gbps = rows[(table[0], OURS)]["copy_gbps"]

    def rows_per_kv(s: str) -> int:
        r = rows[(s, OURS)]
        return int(r["s_q"]) * int(r["h_q"]) // int(r["h_kv"])

    b128 = [s for s in table if rows[(s, OURS)]["b"] == "128"]  # the grid of perf-targets.md's table
    memory_bound = [s for s in b128 if rows[(s, OURS)]["varlen"] == "0" and rows_per_kv(s) <= 64]
    for label, provider in (("ours", OURS), ("FlashInfer fa3", FA3), ("FlashMLA", FLASHMLA)):
        share = [100 * rows[(s, provider)]["gbps"] / copy_gbps for s in memory_bound if ms(rows, s, provider)]
        out.append(f"b128 fixed-length rows with <= 64 query rows per kv head ({len(memory_bound)}), {label}: "
                   f"{span(share, 1)}% of copy ({copy_gbps:.0f} GB/s)")
    for label, group in (("fixed <= 64 rows/kv", memory_bound),
                         ("varied <= 64 rows/kv", [s for s in b128 if rows[(s, OURS)]["varlen"] == "1"
                                                   and rows_per_kv(s) <= 64]),
                         ("128 rows/kv", [s for s in b128 if rows_per_kv(s) == 128]),
                         ("256 rows/kv", [s for s in b128 if rows_per_kv(s) == 256])):
        for rival in (FA3, FLASHMLA):
            ratios = [ms(rows, s, OURS) / ms(rows, s, rival) for s in group if ms(rows, s, rival)]
            out.append(f"b128 {label}: ours / {rival} time {span(ratios)}")
    speedups = [rows[(s, OURS)]["speedup_vs_best_other"] for s in every
                if rows[(s, OURS)]["speedup_vs_best_other"]]
    geo = math.exp(sum(map(math.log, speedups)) / len(speedups))
    out.append(f"speed vs best other provider: geomean {geo:.3f}x ({min(speedups):.3f}x-{max(speedups):.3f}x) "
               f"over {len(speedups)} shapes")
    return "\n".join(out)


def compare(rows: dict, old: dict) -> str:
    out = [f"{'shape':24} {'old':>8} {'new':>8} {'new/old':>7}"]
    for s in shapes_of(rows):
        a, b = ms(old, s, OURS), ms(rows, s, OURS)
        if a and b:
            out.append(f"{s:24} {a:8.4f} {b:8.4f} {b / a:7.3f}")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("csv")
    ap.add_argument("--table", action="store_true", help="print the README table")
    ap.add_argument("--compare", metavar="OLD_CSV", help="our CUDA time per shape against an older run")
    args = ap.parse_args()
    rows = load(args.csv)
    print(readme_table(rows) if args.table else summary(rows))
    if args.compare:
        print(compare(rows, load(args.compare)))


if __name__ == "__main__":
    main()
