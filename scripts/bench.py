#!/usr/bin/env python3
"""Headless benchmark: the same as ``python -m flashmla.bench`` (see ``--help``).

Runs every provider that is importable here (ours, FlashInfer, DeepSeek's FlashMLA, vLLM's Triton
MLA, the torch reference) on the shapes of shared/perf-targets.md and the seqlen sweep, checks each
output against the reference, times it, and writes CSV + markdown + plots under --out. Without a GPU
it runs the torch reference and our Triton kernel in the Triton interpreter on tiny shapes, which
tests the pipeline itself.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from flashmla.bench.__main__ import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
