#!/usr/bin/env python3
"""The end-to-end vLLM run of issues 6 and 7 on a GPU host (offline: no network, no weights).

DeepSeek-V2-Lite's real architecture with random weights (load_format="dummy"), block size 64,
full CUDA graphs for decode, no torch.compile. First ours once with the verification switch on
(FLASHMLA_VLLM_VERIFY: every layer's decode output is compared with a float32 reference on the
live tensors, inside the CUDA graphs, and the run fails loudly on a mismatch); then ours,
TRITON_MLA and vLLM's FLASHMLA, each in a fresh process, over two scenarios: 1 prompt x 512
tokens and 64 prompts x 3072 tokens, 64 decode steps after a warm-up, 3 repetitions, medians.
Writes <stem>.json/.csv/.md/.png and one log per process into --out.

    python scripts/vllm_e2e.py --out $OUT/vllm          # scripts/gpu_vllm.sh runs this
"""
import argparse
import sys

from flashmla.deploy import main

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="vllm-e2e")
    p.add_argument("--repetitions", type=int, default=3)
    p.add_argument("--backends", nargs="+", default=["ours", "triton_mla", "flashmla"])
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--timeout", type=float, default=240, help="seconds per backend process")
    a = p.parse_args()
    argv = ["compare", "--offline", "--max-model-len", "3200", "--max-num-seqs", "64", "--max-tokens", "65",
            "--repetitions", str(a.repetitions), "--out", a.out, "--stem", "vllm_e2e", "--timeout", str(a.timeout),
            "--backends", *a.backends]
    if not a.no_verify:
        argv += ["--verify-steps", "100000", "--verify-tokens", "17"]
    sys.exit(main(argv))
