#!/usr/bin/env python3
"""Where a kernel's hot loop waits, from an Nsight Compute source-page export (no GPU needed).

Input: the per-instruction CSV that `ncu --import REPORT --page source --csv --print-source sass`
writes (the `run1_src_*.csv.xz` files of benchmarks/results/seesaw_fetch_h100_2026-12-06/ are
such exports, xz-compressed). Only the hot loop is read: the execution count that collects the most
stall samples is the loop's trip count, and the instructions executed at least HOT_FRACTION times
that often are its body (spin loops and twin paths run more often). It is cut into segments, each
ending at an mbarrier wait or at a wait or issue point that collects many stall samples (a wgmma, a
wgmma wait, a named barrier), so each segment reads "the code before, then what it waited for" (an
mbarrier wait's own stalls are sampled on the instructions after it, which open the next segment).
Per segment: its instructions, its share of all samples, and the top stall reasons. Samples whose
reason has no column of its own in the export (a wgmma waiting to issue, for one) count in a
segment's samples but not in its reasons.

    python3 scripts/ncu_segments.py src.csv[.xz] [--min-samples 100] [--reasons 3]
    python3 scripts/ncu_segments.py src.csv.xz --range c5120 c6520   # stall reasons of one address range

Samples are per warp: a segment's samples divided by the warps that run it, times the cycles per
sample, is its time per loop iteration (docs/kernel-design.md 7.20 reads the seesaw's this way).
"""
import argparse
import collections
import csv
import io
import lzma
import sys

HOT_FRACTION = 0.9  # of the loop's trip count
SEGMENT_ENDS = ("HGMMA", "WARPGROUP.DEPBAR", "BAR.SYNC", "BAR.ARV", "SYNCS.PHASECHK")


def read_rows(path):
    raw = lzma.open(path, "rt") if path.endswith(".xz") else open(path, newline="")
    with raw:
        rows = list(csv.reader(io.StringIO(raw.read())))
    head = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
    header = rows[head]
    col = {name: i for i, name in enumerate(header)}
    reasons = [h for h in header if h.startswith("stall_") and "Not Issued" not in h]
    out = []
    for r in rows[head + 1:]:
        if len(r) != len(header):
            continue
        out.append({"addr": r[0][-5:], "sass": r[1].strip(),
                    "executed": int(r[col["Instructions Executed"]] or 0),
                    "samples": int(r[col["Warp Stall Sampling (All Samples)"]] or 0),
                    "reasons": {h[len("stall_"):]: int(r[col[h]] or 0) for h in reasons}})
    return out


def top(reasons, n):
    return ", ".join(f"{k} {v}" for k, v in collections.Counter(reasons).most_common(n) if v)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--min-samples", type=int, default=100, help="a segment ends at a wait with at least this many")
    ap.add_argument("--reasons", type=int, default=3)
    ap.add_argument("--range", nargs=2, metavar=("FROM", "TO"), help="summarise one address range (last 5 hex digits)")
    args = ap.parse_args(argv)
    rows = read_rows(args.csv)
    if not rows:
        sys.exit(f"{args.csv}: no instruction rows (is it a source-page export?)")
    by_count = collections.Counter()
    for r in rows:
        by_count[r["executed"]] += r["samples"]
    trips = by_count.most_common(1)[0][0]
    hot = [r for r in rows if r["executed"] >= HOT_FRACTION * trips]
    total = sum(r["samples"] for r in hot)
    print(f"{args.csv}: hot loop {len(hot)} instructions, {total} samples "
          f"({100 * total / max(1, sum(r['samples'] for r in rows)):.1f}% of the kernel's)")
    if args.range:
        lo, hi = args.range
        part = [r for r in hot if lo <= r["addr"] <= hi]
        reasons = collections.Counter()
        for r in part:
            reasons.update(r["reasons"])
        print(f"{lo}-{hi}: {len(part)} instructions, {sum(r['samples'] for r in part)} samples, "
              f"{sum('MUFU' in r['sass'] for r in part)} MUFU; {top(reasons, 8)}")
        return
    seg, start, count, reasons = 0, hot[0]["addr"], 0, collections.Counter()
    for r in hot:
        seg += r["samples"]
        count += 1
        reasons.update(r["reasons"])
        # An mbarrier wait always ends a segment: its stall samples land on the instructions
        # after it (the wait spins out of line), so they open the next segment.
        if "SYNCS.PHASECHK" in r["sass"] or (r["samples"] >= args.min_samples
                                              and any(k in r["sass"] for k in SEGMENT_ENDS)):
            print(f"{start}-{r['addr']} {count:4d} instr {seg:7d} samples {100 * seg / total:5.1f}%  "
                  f"[{top(reasons, args.reasons)}]  ends {r['sass'][:60]}")
            seg, start, count, reasons = 0, r["addr"], 0, collections.Counter()
    print(f"tail {count} instr {seg} samples")


if __name__ == "__main__":
    main()
