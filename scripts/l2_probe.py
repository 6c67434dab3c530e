"""How fast can the SMs read data that sits in L2? (docs/kernel-design.md 7.9)

The compute-bound decode rows (256 query rows per kv head) read every KV page four times, once
per 64-row query tile, and three of those reads are L2 hits. This probe measures the L2 -> SM
read rate for that pattern: a Triton kernel in which groups of REPL consecutive programs read
the same chunk (REPL = 1: every byte once; REPL = 4: the decode kernel's pattern), over a working
set that fits in L2 (each program reads its chunk `passes` times, no flush) and one that does
not (HBM).

Time: CUDA events around 20 back-to-back launches, median of 15 such samples after warm-up; the
rate counts the bytes every program reads (REPL x the unique bytes).

    python3 scripts/l2_probe.py OUT.csv
    python3 scripts/l2_probe.py --plot OUT.csv OUT.png   # bars, with the decode kernels' rates
"""
import csv
import statistics
import sys

import torch
import triton
import triton.language as tl


@triton.jit
def _read_kernel(x_ptr, out_ptr, elems_per_program, passes, REPL: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    base = x_ptr + (pid // REPL).to(tl.int64) * elems_per_program
    acc = tl.zeros([BLOCK], tl.float32)
    for i in range(0, passes * elems_per_program, BLOCK):
        # .cg: cached in L2 only, so a re-read chunk is not served by L1.
        acc += tl.load(base + i % elems_per_program + tl.arange(0, BLOCK), cache_modifier=".cg").to(tl.float32)
    # One store per program so the loads are not dead code.
    tl.store(out_ptr + pid, tl.sum(acc, axis=0))


def measure(unique_bytes: int, repl: int, passes: int, programs_per_sm: int = 4, block: int = 4096) -> dict:
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    programs = sms * programs_per_sm
    groups = programs // repl
    elems_per_program = unique_bytes // 2 // groups // block * block
    x = torch.randn(groups * elems_per_program, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(programs, device="cuda", dtype=torch.float32)

    def launch():
        _read_kernel[(programs,)](x, out, elems_per_program, passes, REPL=repl, BLOCK=block, num_warps=8)

    for _ in range(10):
        launch()
    torch.cuda.synchronize()
    samples = []
    for _ in range(15):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(20):
            launch()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) / 20 * 1e-3)
    seconds = statistics.median(samples)
    read_bytes = programs * elems_per_program * 2 * passes
    return {
        "unique_MB": round(groups * elems_per_program * 2 / 2**20, 1),
        "repl": repl,
        "passes": passes,
        "programs": programs,
        "read_MB": round(read_bytes / 2**20, 1),
        "us": round(seconds * 1e6, 2),
        "read_TBps": round(read_bytes / seconds / 1e12, 3),
    }


# Bytes the SMs read at b128 s_q2 8K h128 (fixed lengths): every 64-token page (576 dims, bf16)
# once per 64-row query tile, 256 query rows per kv head = 4 tiles.
DECODE_256ROW_BYTES = 128 * (8192 // 64) * 4 * 64 * 576 * 2
# ms at that row: perf-targets.md (FlashMLA HEAD, its target) and the session-7 side-by-side run
# (benchmarks/results/bench_h100_2026-11-24_session7_gluon/bench.md).
DECODE_256ROW_MS = {"FlashMLA HEAD (perf-targets)": 0.8759, "target (best/0.9)": 0.9732,
                    "flashmla-triton (Gluon)": 1.0586, "flashmla-cuda": 1.1034}


def plot(csv_path: str, png_path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    labels = [f"{'L2' if float(r['unique_MB']) < 64 else 'HBM'} x{r['repl']}\n{r['programs_per_sm']}/SM" for r in rows]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.bar(range(len(rows)), [float(r["read_TBps"]) for r in rows], color="tab:blue")
    for (name, ms), color in zip(DECODE_256ROW_MS.items(), ["tab:green", "tab:gray", "tab:orange", "tab:red"]):
        rate = DECODE_256ROW_BYTES / (ms * 1e-3) / 1e12
        ax.axhline(rate, color=color, linestyle="--", label=f"{name}: {rate:.2f} TB/s at b128 s2 8K h128")
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("bytes read by the SMs, TB/s")
    ax.set_title(f"Read rate, Triton probe (REPL programs read each chunk): {rows[0]['device']}")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--plot":
        plot(sys.argv[2], sys.argv[3])
        return
    out_path = sys.argv[1] if len(sys.argv) > 1 else "l2_probe.csv"
    rows = []
    # L2-resident sets are read `passes` times per launch so that a launch lasts ~1 ms.
    # The rate grows with the programs (loads in flight) per SM, so the highest one is a lower
    # bound on the ceiling, not the ceiling.
    for unique_mb, repl, passes, per_sm in [(24, 1, 32, 2), (24, 4, 8, 2), (24, 1, 32, 4), (24, 4, 8, 4),
                                            (24, 1, 32, 8), (24, 4, 8, 8), (2048, 1, 1, 4), (2048, 4, 1, 4),
                                            (2048, 1, 1, 8), (2048, 4, 1, 8)]:
        row = measure(unique_mb * 2**20, repl, passes, per_sm)
        row["programs_per_sm"] = per_sm
        row["device"] = torch.cuda.get_device_name(0)
        rows.append(row)
        print(row, flush=True)
    with open(out_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
