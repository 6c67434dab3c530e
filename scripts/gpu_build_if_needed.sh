#!/usr/bin/env bash
# Build flashmla._C in place unless an earlier step already did (a warm GPU host keeps it).
#   bash scripts/gpu_build_if_needed.sh LOGFILE
# Prints what it did; a failed build is reported with the log's tail and exits 1 (callers that
# can fall back to the Triton kernel go on).
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${1:?usage: gpu_build_if_needed.sh LOGFILE}
PY=${PYTHON:-python3}
if PYTHONPATH=$PWD $PY -c "import flashmla.cuda_backend as c, sys; sys.exit(0 if c._C is not None else 1)" 2>/dev/null; then
  echo "flashmla._C already built"; exit 0
fi
echo "flashmla._C not built yet: building it in place (MAX_JOBS=${MAX_JOBS:-16})"
t0=$SECONDS
if ! FLASHMLA_BUILD_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} $PY setup.py build_ext --inplace >"$LOG" 2>&1; then
  tail -30 "$LOG"; echo "CUDA build FAILED after $((SECONDS - t0)) s (log: $LOG)"; exit 1
fi
echo "build: $((SECONDS - t0)) s"
