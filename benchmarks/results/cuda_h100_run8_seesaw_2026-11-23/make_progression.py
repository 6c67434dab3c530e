#!/usr/bin/env python3
"""Builds progression.md and progression.png in this folder from its benchmark CSVs (one per
seesaw version, each timed side by side with serial and auto in one process)."""
import csv
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RUNS = [  # (csv, label: what the seesaw kernel was in that run)
    ("seesaw_v1_bench.csv", "v1: WG1 multiplies P_A first"),
    ("seesaw_v2_bench.csv", "v2: FlashMLA's order (P_A rebased)"),
    ("seesaw_v3_bench.csv", "v3: v2 + next S behind the PVs"),
    ("run10_auto_seesaw_bench.csv", "v1 again (auto uses it)"),
    ("run_b_pages_early_bench.csv", "+ refill pages loaded early"),
    ("run_d_tree_softmax_bench.csv", "+ tree softmax, unit-rescale skip"),
    ("run_e_shared_ldst_bench.csv", "+ st/ld.shared, FFMA-folded scale"),
    ("run_f_l2_prefetch_reverted_bench.csv", "+ L2 prefetch (reverted)"),
    ("final_bench.csv", "shared softmax in serial too"),
    ("final2_pv_first_bench.csv", "final: WG1's PV on A before its softmax"),
]
SHAPES = [(128, 2, 8192, 128), (128, 2, 4096, 128), (32, 2, 32768, 128), (128, 1, 8192, 128), (128, 1, 4096, 128)]


def load(name):
    out = {}
    for r in csv.DictReader(open(os.path.join(HERE, name))):
        if r["varied"] != "False":
            continue
        key = (int(r["b"]), int(r["s_q"]), int(r["mean_seqlen"]), int(r["h_q"]))
        out[(key, r["variant"])] = (float(r["ms"]), r.get("target_ms", ""))
    return out


def main():
    data = [(label, load(name)) for name, label in RUNS]
    lines = ["# Seesaw kernel, version by version (H100, ms, fixed lengths; same-process serial for reference)", "",
             "| run | " + " | ".join("b%d s%d %dK h%d seesaw / serial" % (b, s, L // 1024, h) for b, s, L, h in SHAPES) + " |",
             "|---|" + "---:|" * len(SHAPES)]
    for label, d in data:
        cells = []
        for shape in SHAPES:
            ss, se = d.get((shape, "seesaw")), d.get((shape, "serial"))
            cells.append("%s / %s" % (f"{ss[0]:.4f}" if ss else "-", f"{se[0]:.4f}" if se else "-"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    targets = {shape: d[(shape, "auto")][1] for _, d in data[-1:] for shape in SHAPES if (shape, "auto") in d}
    lines += ["", "target ms (perf-targets.md): " + ", ".join(
        "b%d s%d %dK h%d: %s" % (*shape[:2], shape[2] // 1024, shape[3], targets.get(shape) if targets.get(shape) not in (None, "", "nan") else "none") for shape in SHAPES)]
    open(os.path.join(HERE, "progression.md"), "w").write("\n".join(lines) + "\n")

    fig, ax = plt.subplots(figsize=(10, 4.8))
    x = range(len(data))
    for shape in SHAPES[:3]:
        ratio = [d[(shape, "serial")][0] / d[(shape, "seesaw")][0] if (shape, "seesaw") in d else float("nan")
                 for _, d in data]
        ax.plot(x, ratio, marker="o", label="b%d s_q%d %dK h%d" % (shape[0], shape[1], shape[2] // 1024, shape[3]))
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(list(x))
    ax.set_xticklabels([label for label, _ in data], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("speed of seesaw / serial (same process)")
    ax.set_title("Seesaw kernel versions on the 256-rows-per-kv-head rows (H100, 2026-11-23)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "progression.png"), dpi=120)


if __name__ == "__main__":
    main()
