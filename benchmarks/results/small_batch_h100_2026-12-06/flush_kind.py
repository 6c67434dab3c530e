"""Session 14: does the fp32-partial store phase at b1 pay for the dirty lines do_bench's L2 flush
(a 256 MB zero_ write) leaves behind? Times each call after three kinds of flush: do_bench's
(write zeros), a read of a 256 MB buffer (L2 refilled with clean lines), and none (warm L2)."""
import statistics, sys, torch, triton
sys.path.insert(0, "scripts")
from bench_cuda import make
from flashmla import cuda_backend
import fmla_ref_py
dev = torch.device("cuda")
big = torch.empty(64 * 1024 * 1024, dtype=torch.int32, device=dev)  # 256 MB, as do_bench's cache
big.fill_(1)
acc = torch.empty((), dtype=torch.int64, device=dev)


def timed(fn, flush, reps=200):
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        if flush == "write":
            big.zero_()
        elif flush == "read":
            torch.sum(big, dim=0, dtype=torch.int64, out=acc)
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record()
        ts.append((s, e))
    torch.cuda.synchronize()
    return statistics.median(a.elapsed_time(b) for a, b in ts) * 1e3


print(f"{'shape':<16}{'prov':>6}{'do_bench us':>12}{'write-flush':>12}{'read-flush':>12}{'no flush':>10}")
for shape in [(1, 1, 4096, 128, False), (1, 1, 4096, 16, False), (1, 2, 4096, 128, False), (128, 2, 4096, 128, True)]:
    b, s_q, mean, h_q, varied = shape
    q, k, bt, sl, _ = make(*shape, dev)
    md, ns = cuda_backend.get_mla_metadata_gpu(sl, s_q * h_q, 1, 132)
    provs = {"auto": lambda: cuda_backend.decode(q, k, bt, sl, 576 ** -0.5, s_q > 1, md, ns, schedule="auto"),
             "fmla": lambda: fmla_ref_py.decode(q, k, bt, sl, 576 ** -0.5, s_q > 1, md, ns)}
    for name, fn in provs.items():
        db = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") * 1e3
        row = [timed(fn, f) for f in ("write", "read", "none")]
        print(f"{f'{b},{s_q},{mean},{h_q}':<16}{name:>6}{db:12.1f}" + "".join(f"{x:12.1f}" for x in row[:2]) + f"{row[2]:10.1f}", flush=True)
