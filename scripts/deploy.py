#!/usr/bin/env python3
"""Deploy DeepSeek-V2-Lite-Chat with vLLM on our MLA backend, or compare backends.

    python scripts/deploy.py chat --backend ours                  # download (ModelScope) + chat
    python scripts/deploy.py chat --model /data/DeepSeek-V2-Lite-Chat --prompt "Hello"
    python scripts/deploy.py compare --out results/               # ours vs TRITON_MLA vs FLASHMLA
    python scripts/deploy.py compare --offline                    # no network: random weights

All logic is in flashmla/deploy.py (python -m flashmla.deploy --help).
"""
import sys

from flashmla.deploy import main

if __name__ == "__main__":
    sys.exit(main())
