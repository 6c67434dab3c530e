"""CSV, markdown and plots from a benchmark run.

Files written by :func:`write_report` into the output folder:

* ``bench.csv``: one row per shape x provider (``COLUMNS``): status and reason, ms (and CUDA-graph
  and end-to-end ms where measured; with ``--clocks`` the median SM clock and board power while
  timed), TFLOPS, GB/s, error against the reference, the
  perf-targets.md anchor and target, the speed ratio against the best other provider, versions,
  GPU, date, and the ceilings measured in the same run;
* ``bench.md``: the environment, the providers (with skip reasons) and a table of ms per shape;
* ``bench_meta.json``: environment, ceilings and provider table as JSON;
* ``gbps_vs_seqlen.png`` (with the device-copy line), ``tflops_vs_heads.png`` (with the bf16
  matmul line) and ``speedup_vs_best_other.png``.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Iterable, Optional

from .providers import OURS, PROVIDER_NAMES
from .roofline import Ceilings

COLUMNS = [
    "suite", "shape", "b", "s_q", "mean_seqlen", "h_q", "h_kv", "varlen", "causal", "dtype", "total_seqlen",
    "max_seqlen", "provider", "status", "reason", "ms", "ms_graph", "ms_e2e", "sm_mhz", "power_w", "tflops", "gbps",
    "roofline_ms",
    "err_rel_l2", "err_max_abs", "err_lse", "anchor_ms", "target_ms", "target_met", "best_other",
    "best_other_ms", "speedup_vs_best_other", "same_run_best", "same_run_best_ms", "same_run_target_ms",
    "same_run_met", "version", "gpu", "torch", "triton", "cuda", "date",
    "copy_gbps", "matmul_tflops", "timing", "key",
]
PLOT_FILES = ("gbps_vs_seqlen.png", "tflops_vs_heads.png", "speedup_vs_best_other.png")


def add_comparisons(rows: list[dict]) -> list[dict]:
    """Fill best_other / best_other_ms / speedup_vs_best_other: for each measured row, the fastest
    other provider on the same shape (the torch reference only when nothing else ran)."""
    by_key: dict[str, list[dict]] = {}
    for r in rows:
        by_key.setdefault(r["key"], []).append(r)
    for group in by_key.values():
        timed = [r for r in group if r.get("status") == "ok" and r.get("ms")]
        for r in timed:
            others = [o for o in timed if o is not r and o["provider"] != "torch"]
            if not others:
                others = [o for o in timed if o is not r]
            if others:
                best = min(others, key=lambda o: o["ms"])
                r["best_other"], r["best_other_ms"] = best["provider"], best["ms"]
                r["speedup_vs_best_other"] = best["ms"] / r["ms"]
        _add_same_run_bar(timed)
    return rows


# perf-targets.md's bar for the CUDA kernel, measured in this run instead of taken from its table: at
# least 0.9 x the speed of the faster of FlashMLA (the pinned commit) and FlashInfer fa3.
SAME_RUN_RIVALS = ("flashmla-head", "flashinfer-fa3")
SAME_RUN_SPEED_FRACTION = 0.9


def _add_same_run_bar(timed: list[dict]) -> None:
    """On a shape where both rivals ran, give flashmla-cuda's row the same-run bar and its verdict."""
    rivals = {r["provider"]: r for r in timed if r["provider"] in SAME_RUN_RIVALS}
    ours = [r for r in timed if r["provider"] == "flashmla-cuda"]
    if len(rivals) < len(SAME_RUN_RIVALS) or not ours:
        return
    best = min(rivals.values(), key=lambda o: o["ms"])
    for r in ours:
        r["same_run_best"], r["same_run_best_ms"] = best["provider"], best["ms"]
        r["same_run_target_ms"] = best["ms"] / SAME_RUN_SPEED_FRACTION
        r["same_run_met"] = bool(r["ms"] <= r["same_run_target_ms"])


def _order(rows: list[dict]) -> list[dict]:
    shape_order: dict[str, int] = {}
    for r in rows:
        shape_order.setdefault(r["key"], len(shape_order))
    prov = {p: i for i, p in enumerate(PROVIDER_NAMES)}
    return sorted(rows, key=lambda r: (shape_order[r["key"]], prov.get(r["provider"], 99)))


def write_csv(rows: Iterable[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _csv_value(r.get(k)) for k in COLUMNS})


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        if math.isinf(v) or math.isnan(v):
            return str(v)
        return f"{v:.6g}"
    return v


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- tables
def format_cell(r: Optional[dict]) -> str:
    """One provider's time on one shape as the tables show it: ms, '(g ...)' graph replay, or why not."""
    if r is None:
        return ""
    st = r.get("status")
    if st == "ok" and r.get("ms"):
        text = f"{r['ms']:.4f}"
        if r.get("ms_graph"):
            text += f" (g {r['ms_graph']:.4f})"
        return text
    return {"skipped": "-", "mismatch": "WRONG", "failed": "fail", "crashed": "crash"}.get(st, st or "")


def results_table(rows: list[dict], markdown: bool = True, providers: Optional[list[str]] = None) -> str:
    """ms per shape (rows) and provider (columns), with the flashmla-cuda target and verdict."""
    rows = _order(rows)
    if providers is None:
        present = {r["provider"] for r in rows if r.get("status") == "ok"}
        providers = [p for p in PROVIDER_NAMES if p in present] or sorted(present)
    shapes: dict[str, dict] = {}
    for r in rows:
        shapes.setdefault(r["key"], {"label": r["shape"], "rows": {}})["rows"][r["provider"]] = r
    same_run = any(r.get("same_run_target_ms") for r in rows)
    header = ["shape (b s_q len h_q)"] + providers + ["target ms", "met"]
    if same_run:
        header += ["same-run bar ms", "met (same run)"]
    verdict = {True: "yes", False: "NO"}
    body = []
    for s in shapes.values():
        cells = [s["label"]] + [format_cell(s["rows"].get(p)) for p in providers]
        ours = s["rows"].get("flashmla-cuda") or {}
        target = ours.get("target_ms")
        if target is None:
            target = next((r.get("target_ms") for r in s["rows"].values() if r.get("target_ms")), None)
        cells += [f"{target:.4f}" if target else "", verdict.get(ours.get("target_met"), "")]
        if same_run:
            bar = ours.get("same_run_target_ms")
            cells += [f"{bar:.4f}" if bar else "", verdict.get(ours.get("same_run_met"), "")]
        body.append(cells)
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in body]
        return "\n".join(lines)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return "\n".join([fmt.format(*header)] + [fmt.format(*c) for c in body])


def environment_lines(meta: dict, ceilings: Ceilings) -> list[str]:
    settle = f"; each provider after {meta['settle_s']:g} s idle" if meta.get("settle_s") else ""
    lines = [f"- GPU: {meta.get('gpu')}" + (f" ({meta.get('sm_count')} SMs)" if meta.get("sm_count") else ""),
             f"- date: {meta.get('date')}",
             f"- torch {meta.get('torch')} (CUDA {meta.get('torch_cuda')}), Triton {meta.get('triton')}, "
             f"driver {meta.get('driver')}, Python {meta.get('python')}",
             f"- flashmla {meta.get('flashmla')}" + (f" ({meta.get('flashmla_commit')})" if meta.get("flashmla_commit") else ""),
             f"- timing: {meta.get('timing')} (warmup {meta.get('warmup_ms')} ms, rep {meta.get('rep_ms')} ms{settle})"]
    if ceilings.copy_gbps:
        lines.append(f"- ceilings measured in this run: device copy {ceilings.copy_gbps:.0f} GB/s (read + write), "
                     f"read {ceilings.read_gbps or 0:.0f} GB/s, bf16 matmul 8192^3 {ceilings.matmul_tflops or 0:.0f} TFLOPS")
    elif ceilings.note:
        lines.append(f"- ceilings: {ceilings.note}")
    if meta.get("anchor_table"):
        lines.append(f"- anchors/targets: shared/perf-targets.md, {meta['anchor_table']} table "
                     "(flashmla-cuda target = best of FlashMLA and FlashInfer fa3 / 0.9)")
    return lines


def providers_table(info: dict) -> str:
    lines = ["| provider | what | version | status |", "|---|---|---|---|"]
    for name, i in info.items():
        status = "available" if i["available"] else f"skipped: {i['reason']}"
        lines.append(f"| {name} | {i.get('description', '')} | {i.get('version', '')} | {status.replace('|', '/')} |")
    return "\n".join(lines)


def summary_markdown(rows: list[dict], meta: dict, ceilings: Ceilings, info: dict) -> str:
    ok = [r for r in rows if r.get("status") == "ok"]
    bad = [r for r in rows if r.get("status") in ("mismatch", "failed", "crashed")]
    parts = [f"# MLA decode benchmark: {meta.get('gpu')}, {meta.get('date')}", "",
             *environment_lines(meta, ceilings), "", "## Providers", "", providers_table(info), "",
             "## Results (ms, lower is better)", "",
             "Every timed output matched the fp32 reference (relative L2 error of out <= 1e-2, lse within 1e-2). "
             "'(g ...)' is the CUDA-graph replay time; '-' skipped (see bench.csv's reason column); "
             "WRONG = did not match the reference (not timed).", "",
             results_table(rows), ""]
    if any(r.get("target_met") is not None for r in ok):
        for prov in OURS:
            judged = [r for r in ok if r["provider"] == prov and r.get("target_met") is not None]
            if judged:
                met = sum(1 for r in judged if r["target_met"])
                parts.append(f"- {prov}: target met on {met} of {len(judged)} rows with a target")
        parts.append("")
    same_run = [r for r in ok if r["provider"] == "flashmla-cuda" and r.get("same_run_met") is not None]
    if same_run:
        met = sum(1 for r in same_run if r["same_run_met"])
        parts += [f"- flashmla-cuda: same-run bar (at least {SAME_RUN_SPEED_FRACTION} x the speed of the faster "
                  f"of {' and '.join(SAME_RUN_RIVALS)}, both timed in this run) met on {met} of {len(same_run)} "
                  "shapes", ""]
    for prov in OURS:
        sp = [r["speedup_vs_best_other"] for r in ok if r["provider"] == prov and r.get("speedup_vs_best_other")]
        if sp:
            geo = math.exp(sum(math.log(x) for x in sp) / len(sp))
            parts.append(f"- {prov}: speed vs the best other provider, geometric mean {geo:.3f}x "
                         f"(min {min(sp):.3f}x, max {max(sp):.3f}x) over {len(sp)} shapes")
    if bad:
        parts += ["", "## Failures", ""]
        parts += [f"- {r['shape']} {r['provider']}: {r['status']}: {r['reason']}" for r in bad]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _ok(rows):
    return [r for r in rows if r.get("status") == "ok" and r.get("ms")]


def _groups(rows, fixed, vary, min_points=2):
    groups: dict[tuple, dict] = {}
    for r in _ok(rows):
        groups.setdefault(tuple(r[k] for k in fixed), {}).setdefault(r["provider"], []).append(r)
    keep = {}
    for k, per_prov in groups.items():
        xs = {r[vary] for rs in per_prov.values() for r in rs}
        if len(xs) >= min_points:
            keep[k] = per_prov
    return keep


def _line_plot(rows, fixed, vary, metric, ceiling, ceiling_label, ylabel, title_fmt, path, prefer=None):
    plt = _pyplot()
    groups = _groups(rows, fixed, vary)
    keys = sorted(groups, key=lambda k: (0 if prefer and prefer(k) else 1, k))[:4]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for prov in sorted(groups[key], key=lambda p: PROVIDER_NAMES.index(p) if p in PROVIDER_NAMES else 99):
            pts = sorted(groups[key][prov], key=lambda r: r[vary])
            style = "-o" if prov in OURS else "--s" if prov != "torch" else ":x"
            ax.plot([r[vary] for r in pts], [r[metric] for r in pts], style, label=prov, markersize=4)
        if ceiling:
            ax.axhline(ceiling, color="black", linewidth=1, linestyle="-.", label=ceiling_label)
        ax.set_xscale("log", base=2)
        xs = sorted({r[vary] for rs in groups[key].values() for r in rs})
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{x // 1024}K" if x >= 1024 and x % 1024 == 0 else str(x) for x in xs])
        ax.set_xlabel(vary)
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.set_title(title_fmt(dict(zip(fixed, key))), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bandwidth(rows, ceilings: Ceilings, path: Path):
    """GB/s against mean seqlen, one panel per (b, s_q, h_q, varlen), with the device-copy line."""
    label = f"device copy {ceilings.copy_gbps:.0f} GB/s" if ceilings.copy_gbps else ""
    return _line_plot(rows, ("b", "s_q", "h_q", "varlen"), "mean_seqlen", "gbps", ceilings.copy_gbps, label,
                      "GB/s (FlashMLA's byte count)",
                      lambda f: f"b={f['b']} s_q={f['s_q']} h_q={f['h_q']} {'varied' if f['varlen'] else 'fixed'} lengths",
                      path, prefer=lambda k: k[0] == 128 and k[1] == 1 and not k[3])


def plot_tflops(rows, ceilings: Ceilings, path: Path):
    """TFLOPS against h_q, one panel per (b, s_q, seqlen, varlen), with the bf16 matmul line."""
    label = f"bf16 matmul {ceilings.matmul_tflops:.0f} TFLOPS" if ceilings.matmul_tflops else ""
    return _line_plot(rows, ("b", "s_q", "mean_seqlen", "varlen"), "h_q", "tflops", ceilings.matmul_tflops, label,
                      "TFLOPS (FlashMLA's FLOP count)",
                      lambda f: f"b={f['b']} s_q={f['s_q']} len={f['mean_seqlen']} {'varied' if f['varlen'] else 'fixed'}",
                      path, prefer=lambda k: k[0] == 128 and k[2] == 8192)


def plot_speedup(rows, path: Path):
    """Speed of each of our providers relative to the best other provider, per shape."""
    plt = _pyplot()
    ok = _ok(add_comparisons(list(rows)))
    provs = [p for p in OURS if any(r["provider"] == p and r.get("speedup_vs_best_other") for r in ok)]
    if not provs:
        provs = sorted({r["provider"] for r in ok if r.get("speedup_vs_best_other")})[:2]
    if not provs:
        return None
    height = max(3.0, 0.22 * max(sum(1 for r in ok if r["provider"] == p) for p in provs) + 1.2)
    fig, axes = plt.subplots(1, len(provs), figsize=(6.5 * len(provs), height), squeeze=False)
    for ax, prov in zip(axes[0], provs):
        pts = [r for r in _order(ok) if r["provider"] == prov and r.get("speedup_vs_best_other")]
        labels = [r["shape"] for r in pts]
        vals = [r["speedup_vs_best_other"] for r in pts]
        colors = ["tab:green" if v >= 1 else "tab:orange" if v >= 0.9 else "tab:red" for v in vals]
        y = list(range(len(pts)))[::-1]
        ax.barh(y, vals, color=colors)
        ax.set_yticks(y)
        ax.set_yticklabels([f"{lab} (vs {r['best_other']})" for lab, r in zip(labels, pts)], fontsize=6)
        ax.axvline(1.0, color="black", linewidth=1)
        ax.axvline(0.9, color="gray", linewidth=1, linestyle="--")
        ax.set_xlabel("speed ratio: best other provider's ms / ours (>1 = faster)")
        ax.set_title(prov, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- all of it
def write_report(rows: list[dict], meta: dict, ceilings: Ceilings, info: dict, out_dir: Path,
                 plots: bool = True) -> dict:
    """Write every output file; returns {name: path} (plots that had no data are left out,
    and a plot that fails is reported under 'plot_errors' instead of stopping the report)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _order(add_comparisons(rows))
    files = {}
    write_csv(rows, out_dir / "bench.csv")
    files["csv"] = out_dir / "bench.csv"
    (out_dir / "bench.md").write_text(summary_markdown(rows, meta, ceilings, info))
    files["md"] = out_dir / "bench.md"
    (out_dir / "bench_meta.json").write_text(json.dumps({"meta": meta, "ceilings": ceilings.as_dict(),
                                                         "providers": info}, indent=1))
    files["meta"] = out_dir / "bench_meta.json"
    errors = []
    if plots:
        for name, fn in (("gbps_vs_seqlen.png", lambda p: plot_bandwidth(rows, ceilings, p)),
                         ("tflops_vs_heads.png", lambda p: plot_tflops(rows, ceilings, p)),
                         ("speedup_vs_best_other.png", lambda p: plot_speedup(rows, p))):
            try:
                made = fn(out_dir / name)
                if made:
                    files[name] = made
            except Exception as exc:  # a broken plot must not lose the measurements
                errors.append(f"{name}: {exc!r}")
    if errors:
        files["plot_errors"] = errors
    return files


def read_typed_csv(path: "str | Path") -> list[dict]:
    """A written bench.csv with its timings, bars and ceilings as floats (None where empty) and its
    verdicts as True / False / None, as the tables and summaries read them."""
    rows = []
    for r in read_csv(Path(path)):
        for k in ("ms", "ms_graph", "target_ms", "speedup_vs_best_other", "same_run_best_ms", "same_run_target_ms",
                  "gbps", "copy_gbps"):
            r[k] = float(r[k]) if r.get(k) else None
        for k in ("target_met", "same_run_met"):
            r[k] = {"1": True, "0": False}.get(r.get(k))
        rows.append(r)
    return rows


def print_csv_table(path: "str | Path", markdown: bool = False) -> str:
    """The results table of a written bench.csv (for scripts that print it last)."""
    text = results_table(read_typed_csv(path), markdown=markdown)
    print(text)
    return text
