#!/usr/bin/env bash
# Test and time the portable Triton MLA decode kernel on a CUDA GPU host.
#
#   scripts/gpu_triton.sh [OUT_DIR]      (default: $OUT, else benchmarks/results)
#
# 1. python -m flashmla.triton_configs: compiles every candidate block-size config in parallel
#    (triton_compile.csv: shared memory, registers, spills), times the candidates on the
#    benchmark shapes (triton_tuning.csv), then times the public API with the best pick per
#    row bucket on every row of perf-targets.md (triton_results.csv: ms, CUDA-graph ms for b=1,
#    TFLOPS, GB/s, and whether each row meets best/0.6 and beats vLLM's Triton MLA kernel).
# 2. pytest -m gpu tests/test_triton.py: the foundation grid and the benchmark shapes against
#    flashmla.reference, with the block sizes just picked (triton_picks.json) where step 1 made them.
# Exit status: non-zero if either step failed. Logs: triton_tune.log, triton_tests.log.
set -o pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-benchmarks/results}}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
status=0

$PY - <<'PYEOF' 2>&1 | tee "$OUT_DIR/triton_tune.log"
import torch, triton
print(f"torch {torch.__version__}, triton {triton.__version__}, GPU {torch.cuda.get_device_name()}")
PYEOF
$PY -m flashmla.triton_configs --out "$OUT_DIR" ${TRITON_TUNE_ARGS:-} 2>&1 | tee -a "$OUT_DIR/triton_tune.log" \
    || status=1

xdist=()
if $PY -c "import xdist" 2>/dev/null; then xdist=(-n "${PYTEST_WORKERS:-4}"); fi
picks=()
if [ -f "$OUT_DIR/triton_picks.json" ]; then picks=(env "FLASHMLA_TRITON_PICKS=$OUT_DIR/triton_picks.json"); fi
"${picks[@]}" $PY -m pytest tests/test_triton.py -m gpu -q -rs "${xdist[@]}" -p no:cacheprovider 2>&1 \
    | tee "$OUT_DIR/triton_tests.log" | tail -n 25 || status=1
exit $status
