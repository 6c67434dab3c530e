#!/usr/bin/env python3
"""Run the notebook series headlessly (papermill), the same steps and parameter names as in Jupyter.

    python scripts/run_notebooks.py --smoke --out out/notebooks              # CPU, tiny shapes
    python scripts/run_notebooks.py --no-smoke --out out/nb-h100 --archive out/nb-h100.tar.gz
    python scripts/run_notebooks.py --smoke --only 01 02 -p SEED 3

Writes executed notebooks, plots, <notebook>.steps.json and summary.{json,md} into --out, and
exits non-zero if any notebook failed. The logic is in flashmla/notebook_runner.py.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from flashmla.notebook_runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
