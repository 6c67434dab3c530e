#!/usr/bin/env bash
# Test and time the Triton backend on a CUDA GPU host (on Hopper the public API runs its Gluon
# kernel, flashmla/triton_hopper.py; the table compiled and swept below is the portable kernel's).
#
#   scripts/gpu_triton.sh [OUT_DIR]      (default: $OUT, else benchmarks/results)
#
# 1. python -m flashmla.triton_configs: compiles the table's kernels in parallel
#    (triton_compile.csv: shared memory, registers, spills), then times the public API with the
#    checked-in table on every row of perf-targets.md (triton_results.csv: ms, CUDA-graph ms for
#    b=1, TFLOPS, GB/s, whether each row meets best/0.6 and is not slower than vLLM's Triton MLA).
#    TRITON_SWEEP=1 first times every candidate config too (triton_tuning.csv; includes the
#    compute-bound COMPUTE_VARIANTS, e.g. dv_split=2, for the >64-row bucket) and writes the
#    pick per row bucket (triton_picks.json); TRITON_USE_PICKS=1 then times and tests the picks
#    instead of the table.
# 2. pytest -m gpu tests/test_triton.py: the foundation grid (both split plans) and the benchmark
#    shapes against flashmla.reference.
# Exit status: non-zero if either step failed. Logs: triton_tune.log, triton_tests.log.
set -o pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-benchmarks/results}}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
status=0

args=(--out "$OUT_DIR")
if [ "${TRITON_SWEEP:-0}" = 1 ]; then args+=(--sweep); fi
if [ "${TRITON_USE_PICKS:-0}" = 1 ]; then args+=(--sweep --use-picks); fi
$PY -c "import torch, triton; print(f'torch {torch.__version__}, triton {triton.__version__}, GPU {torch.cuda.get_device_name()}')" \
    2>&1 | tee "$OUT_DIR/triton_tune.log"
$PY -m flashmla.triton_configs "${args[@]}" 2>&1 | tee -a "$OUT_DIR/triton_tune.log" || status=1

test_env=()
if [ "${TRITON_USE_PICKS:-0}" = 1 ] && [ -f "$OUT_DIR/triton_picks.json" ]; then
    test_env=(env "FLASHMLA_TRITON_PICKS=$OUT_DIR/triton_picks.json")
fi
xdist=()
if $PY -c "import xdist" 2>/dev/null; then xdist=(-n "${PYTEST_WORKERS:-4}"); fi
"${test_env[@]}" $PY -m pytest tests/test_triton.py -m gpu -q -rs "${xdist[@]}" -p no:cacheprovider 2>&1 \
    | tee "$OUT_DIR/triton_tests.log" | tail -n 25 || status=1
exit $status
