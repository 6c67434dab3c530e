"""Plot of b1_life.log: where one thread block's life goes at small batches (seesaw kernel with its
TMA Q load and the column-split combine, trace build; warpgroup 0, median cycles per segment)."""
import re
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

shapes, rows, cur, wg = [], [], None, None
for line in open("b1_life.log"):
    m = re.match(r"shape b=(\d+) s_q=(\d+) seqlen=(\d+) h_q=(\d+)", line)
    if m:
        b, s_q, L, h = m.groups()
        n = re.search(r"(\d+) of (\d+) thread blocks had work", line).group(1)
        shapes.append(f"b{b} s_q{s_q} {L} h{h}\n({n} thread blocks)")
        rows.append([])
        continue
    m = re.match(r"warpgroup (\d):", line)
    if m:
        wg = int(m.group(1))
        continue
    m = re.match(r"\s+(\d+)\s+(\d+)\s+(.+)$", line)
    if m and wg == 0:
        rows[-1].append((m.group(3).strip(), int(m.group(2))))
labels = [name for name, _ in rows[0]]
short = {"metadata read, barriers initialised": "entry -> metadata read, barriers set up",
         "request's iteration starts": "-> first pages issued (block table read)",
         "Q tile loaded": "-> Q tile loaded (TMA)", "main loop done": "-> main loop (S, softmax, PV)",
         "row sums exchanged": "-> row sums exchanged", "output stores issued": "-> output / fp32 partials stored",
         "exit (its TMA stores done)": "-> exit"}
colors = ["#bbbbbb", "#8fb3d9", "#4f81bd", "#2e8b57", "#dddddd", "#c0504d", "#999999"]
fig, ax = plt.subplots(figsize=(10, 0.9 * len(shapes) + 2.6))
for i, segs in enumerate(rows):
    left = 0
    for j, (name, cyc) in enumerate(segs):
        ax.barh(i, cyc, left=left, color=colors[j % len(colors)], label=short.get(name, name) if i == 0 else None)
        left += cyc
    ax.text(left + 200, i, f"{left:,} cycles", va="center", fontsize=8)
ax.set_yticks(range(len(shapes)), shapes, fontsize=8)
ax.invert_yaxis()
ax.set_xlabel("SM clock cycles from the thread block's entry (median over thread blocks with work; warpgroup 0)")
ax.set_title("One thread block's life at small batches, seesaw+tmaq+splitcombine, H100 (2026-12-06)", fontsize=10)
ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4)
fig.tight_layout()
fig.savefig("b1_life.png", dpi=110)
print("wrote b1_life.png")
