#!/usr/bin/env python3
"""The end-to-end vLLM run of issues 6 and 7 on a GPU host (offline: no network, no weights).

DeepSeek-V2-Lite's real architecture with random weights (load_format="dummy"), block size 64,
full CUDA graphs for decode, no torch.compile, max_model_len 4096. First ours once, untimed, with
the verification switch on (FLASHMLA_VLLM_VERIFY: every layer's decode output is compared with a
float32 reference on the live tensors, inside the CUDA graphs, and the run fails loudly on a
mismatch); then ours, TRITON_MLA and vLLM's FLASHMLA, each in a fresh process, over two
scenarios: 1 prompt x 512 tokens and 64 prompts x 3072 tokens (all 64 admitted at once). Decode
ms/step is one decode-only step with the whole batch: per repetition, the prompts generate 1+L
and 1+L+N tokens (L a lead-in past the last prefill chunk, N = --decode-steps, default 128) and
the difference of the two calls' decode windows, from vLLM's engine timestamps, is divided by N
(flashmla/deploy.py, MEASUREMENT_METHOD). A warm-up, 3 repetitions, medians.
Writes <stem>.json/.csv/.md/.png and one log per process into --out.

    python scripts/vllm_e2e.py --out $OUT/vllm          # scripts/gpu_vllm.sh runs this
"""
import argparse
import sys

from flashmla.deploy import DEFAULT_DECODE_STEPS, main

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="vllm-e2e")
    p.add_argument("--repetitions", type=int, default=3)
    p.add_argument("--decode-steps", type=int, default=DEFAULT_DECODE_STEPS,
                   help="timed decode-only steps per repetition (64 x 3072: 3072 + 1 + 17 + N must fit 4096)")
    p.add_argument("--backends", nargs="+", default=["ours", "triton_mla", "flashmla"])
    p.add_argument("--no-verify", action="store_true")
    p.add_argument("--timeout", type=float, default=240, help="seconds per backend process")
    a = p.parse_args()
    argv = ["compare", "--offline", "--max-model-len", "4096", "--max-num-seqs", "64",
            "--decode-steps", str(a.decode_steps), "--repetitions", str(a.repetitions), "--out", a.out,
            "--stem", "vllm_e2e", "--timeout", str(a.timeout), "--backends", *a.backends]
    if not a.no_verify:
        argv += ["--verify-steps", "100000", "--verify-tokens", "17"]
    sys.exit(main(argv))
