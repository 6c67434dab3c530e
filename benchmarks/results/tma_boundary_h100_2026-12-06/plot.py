"""Plots of this directory's records (run from the repository root or here):
per_request.png from run3_per_request_tma.log, boundary_segments.png from the two traces of
b512 s_q2 1K h128 (run2: before, run3: +tmaout +tmaq)."""
import os
import re

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PARTS = 32  # scheduler parts holding work at these shapes (aligned cuts, 33 parts, one empty)

series = {}
batches = []
for line in open(os.path.join(HERE, "run3_per_request_tma.log")):
    m = re.match(r"s_q2 h128 b(\d+) x (\d+): (.*)", line)
    if not m:
        continue
    b = int(m.group(1))
    batches.append(b)
    for name, t in re.findall(r"(\S+) ([0-9.]+)", m.group(3)):
        series.setdefault(name, []).append(float(t))
labels = {"auto": "ours before (Q by ld.global, O by st.global)", "auto+tmaout+tmaq": "ours, TMA boundary (now auto)",
          "fmla": "FlashMLA HEAD"}
fig, ax = plt.subplots(figsize=(7, 4.2))
x = [b / PARTS for b in batches]
for name, ys in series.items():
    mx, my = sum(x) / len(x), sum(ys) / len(ys)  # least-squares slope, ms per request per part
    slope = sum((a - mx) * (c - my) for a, c in zip(x, ys)) / sum((a - mx) ** 2 for a in x) * 1000
    ax.plot(x, ys, marker="o", label=f"{labels.get(name, name)}: {slope:.1f} us per request per part (fit)")
ax.set_xlabel("requests per part (same 524,288 tokens: b64 x 8K ... b512 x 1K)")
ax.set_ylabel("ms (do_bench median)")
ax.set_title("H100, s_q 2, h_q 128: cost of a request boundary")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(os.path.join(HERE, "per_request.png"), dpi=120)

def segments(path):
    out = {}
    wg = None
    for line in open(path):
        if line.startswith("warpgroup") and "request" not in line:
            wg = line.split(":")[0]
        m = re.match(r"\s+(\d+)\s+(->.*?|main loop done -> row sums.*?|whole boundary.*?)\s+\(\d+ samples\)", line)
        if m and wg is not None and "whole" not in m.group(2):
            out.setdefault(wg, []).append((m.group(2).split("(")[0].strip(" ->"), int(m.group(1))))
    return out

before = segments(os.path.join(HERE, "run2_trace_auto_b512_s2_1024_h128.txt"))
after = segments(os.path.join(HERE, "run3_trace_tma_b512_s2_1024_h128.txt"))
fig, ax = plt.subplots(figsize=(8, 4))
rows = [("before, WG0", before["warpgroup 0"]), ("TMA, WG0", after["warpgroup 0"]),
        ("before, WG1", before["warpgroup 1"]), ("TMA, WG1", after["warpgroup 1"])]
colors = ["#999999", "#d62728", "#7f7f7f", "#1f77b4", "#2ca02c"]
for i, (label, segs) in enumerate(rows):
    left = 0
    for j, (name, cycles) in enumerate(segs):
        ax.barh(i, cycles, left=left, color=colors[j % len(colors)], label=name if i == 0 else None)
        left += cycles
    ax.text(left + 200, i, f"{left} cycles", va="center", fontsize=8)
ax.set_yticks(range(len(rows)), [r[0] for r in rows])
ax.invert_yaxis()
ax.set_xlabel("SM cycles from the main loop's end to the next request's first S retired (medians)")
ax.set_title("Request boundary, seesaw+ahead, b512 s_q2 1K h128 (trace build)")
ax.set_xlim(0, 28000)
ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3)
fig.tight_layout()
fig.savefig(os.path.join(HERE, "boundary_segments.png"), dpi=120)
print("wrote per_request.png, boundary_segments.png")
