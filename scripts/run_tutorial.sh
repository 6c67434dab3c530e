#!/usr/bin/env bash
# Set up and run the whole tutorial headlessly: every notebook through papermill into out/.
#   bash scripts/run_tutorial.sh            # SMOKE mode where there is no GPU, full mode on a GPU
#   bash scripts/run_tutorial.sh --smoke    # force tiny CPU shapes
# Exits non-zero if any step that should have run failed; out/notebooks/summary.md says what
# ran and what was skipped, and why.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q -r requirements/ci.txt
"$PY" -m pip install -q --no-build-isolation --no-deps -e .
"$PY" -m ipykernel install --user --name python3 >/dev/null 2>&1 || true
mode=${1:-}
if [ -z "$mode" ]; then
  if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then mode=--no-smoke; else mode=--smoke; fi
fi
exec "$PY" scripts/run_notebooks.py "$mode" --out out/notebooks
