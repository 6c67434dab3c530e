#!/usr/bin/env bash
# Set up a fresh machine and run the whole test suite. This is the README's test command and
# what CI runs (.ci/run). On a CPU-only machine: torch reference, the Triton interpreter,
# notebooks in SMOKE mode, the vLLM plugin against a real vLLM, and an nvcc compile of csrc/
# for sm_90a. GPU-marked tests run only where a CUDA GPU is (and say so where there is none).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

echo "== installing pinned test requirements"
# torch first and by exact version: a bare 'torch' requirement would download a multi-GB CUDA build.
"$PY" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '2.13.0' else 1)" 2>/dev/null \
  || "$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q -r requirements/ci.txt
# A real vLLM for the plugin tests, without its CUDA-side dependencies (GBs): the wheel itself,
# then the pinned pure-Python dependencies it imports on a CPU (requirements/vllm-cpu.txt).
"$PY" -m pip install -q --no-deps vllm==0.32.0
"$PY" -m pip install -q -r requirements/vllm-cpu.txt
# No build isolation: build against the torch above. Without nvcc + a CUDA torch the extension is skipped.
FLASHMLA_BUILD_CUDA=${FLASHMLA_BUILD_CUDA:-0} "$PY" -m pip install -q --no-build-isolation --no-deps -e .
"$PY" -m ipykernel install --user --name python3 >/dev/null 2>&1 || true

if [ -f scripts/compile_csrc.sh ]; then
  echo "== compiling csrc/ for sm_90a (no GPU needed); fails on errors or register spills"
  bash scripts/compile_csrc.sh
fi

echo "== pytest"
"$PY" -m pytest -rs -q tests "$@"
