"""Session 14: per-kernel device time (torch.profiler) at small batches, ours with scheduler floors
and FlashMLA HEAD (our metadata), to see where b1 s1 4K h128's time goes."""
import os, sys, statistics, torch
sys.path.insert(0, "scripts")
from bench_cuda import make, bench
from flashmla import cuda_backend
import fmla_ref_py
from torch.profiler import profile, ProfilerActivity
dev = torch.device("cuda")
shapes = [(1, 1, 4096, 128, False), (1, 1, 4096, 16, False), (1, 2, 4096, 128, False)]
print(f"{'shape':<20}{'prov':>10}{'chunks':>7}{'call ms':>9}{'main us':>9}{'comb us':>9}")
for shape in shapes:
    b, s_q, mean, h_q, varied = shape
    q, k, bt, sl, _ = make(*shape, dev)
    for floor in (1, 2, 3, 4, 6, 8):
        md, ns = cuda_backend.get_mla_metadata_gpu(sl, s_q * h_q, 1, 132, floor)
        chunks = int(ns[-1].item())
        provs = {f"auto@{floor}": lambda md=md, ns=ns: cuda_backend.decode(q, k, bt, sl, 576 ** -0.5, s_q > 1, md, ns, schedule="auto")}
        if floor == 1:  # FlashMLA computes its own metadata (its first call), whatever ours is
            provs["fmla"] = lambda md=md, ns=ns: fmla_ref_py.decode(q, k, bt, sl, 576 ** -0.5, s_q > 1, md, ns)
        for name, fn in provs.items():
            ms = bench(fn)
            for _ in range(5): fn()
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(30): fn()
                torch.cuda.synchronize()
            per = {}
            for e in prof.events():
                if e.device_type.name == "CUDA":
                    per.setdefault(e.name, []).append(e.device_time if hasattr(e, "device_time") else e.cuda_time)
            main = [n for n in per if "combine" not in n and "metadata" not in n.lower()]
            comb = [n for n in per if "combine" in n]
            mt = statistics.median(per[main[0]]) if main else float("nan")
            ct = statistics.median(per[comb[0]]) if comb else float("nan")
            label = f"{b},{s_q},{mean},{h_q}"
            print(f"{label:<20}{name:>10}{chunks:>7}{ms:9.4f}{mt:9.1f}{ct:9.1f}", flush=True)
