#!/usr/bin/env python3
"""Apply (or --check, --revert) the legacy flashmla patch to an installed vLLM 0.7.3, and to
nothing else. See patches/README.md; the logic is flashmla/vllm_backend/legacy_patch.py."""
import sys

from flashmla.vllm_backend.legacy_patch import main

if __name__ == "__main__":
    sys.exit(main())
