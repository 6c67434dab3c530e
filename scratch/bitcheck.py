import sys, torch
sys.path.insert(0, "tests")
from test_cuda import make_inputs, run_cuda, benchmark_seqlens
dev = torch.device("cuda")
for shape in [(4, 2, 3000, 128, False), (16, 2, 5000, 128, True)]:
    b, s_q, mean, h_q, varied = shape
    q, k, bt, sl = make_inputs(benchmark_seqlens(b, mean, s_q, varied), s_q, h_q, 1, torch.bfloat16, dev, seed=5, spare_pages=1)
    for num_sms in (None, 33):
        ref = run_cuda(q, k, bt, sl, True, num_sms, schedule="seesaw")
        for sch in ("seesaw+lanes", "seesaw+ahead", "seesaw+ahead+lanes"):
            out = run_cuda(q, k, bt, sl, True, num_sms, schedule=sch)
            print(shape, num_sms, sch, "bit-identical" if torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1]) else "DIFFERS")
