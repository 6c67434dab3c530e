#!/usr/bin/env bash
# Build, test and time the sm90a CUDA kernel on a Hopper GPU host (the lead's gpu_check.sh calls
# this). Logs and the benchmark CSV go to ${OUT:-benchmarks/results}. Steps:
#   1. build flashmla._C in place (MAX_JOBS parallel nvcc; prints registers/spills)
#   2. smoke run of one small case under a timeout (a pipeline deadlock shows up here)
#   3. pytest tests/test_cuda.py (GPU tests: scheduler bit-identity, foundation grid, benchmark
#      shapes, CUDA graphs, binding errors)
#   4. benchmark on perf-targets.md's shapes -> cuda_bench_<gpu>.csv
#   5. compute-sanitizer memcheck + racecheck on a few small cases
# Set SKIP_BENCH=1 / SKIP_SANITIZER=1 to leave steps out.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export MAX_JOBS=${MAX_JOBS:-16} FLASHMLA_BUILD_CUDA=${FLASHMLA_BUILD_CUDA:-1}
PY=${PYTHON:-python3}
fail=0
step() { echo; echo "=== $* ($(date +%T))"; }

step "build"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader || true
nvcc --version | tail -1
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
if ! $PY setup.py build_ext --inplace >"$OUT/cuda_build.log" 2>&1; then
  tail -60 "$OUT/cuda_build.log"; echo "BUILD FAILED"; exit 1
fi
grep -E "flashmla setup|registers|spill" "$OUT/cuda_build.log" | sed 's/^ptxas info *: //' | sort | uniq -c | head -20
if grep -E "[1-9][0-9]* bytes spill" "$OUT/cuda_build.log"; then echo "SPILLS"; fail=1; fi

step "smoke"
if ! timeout 120 $PY scripts/cuda_sanitizer_cases.py; then
  echo "SMOKE FAILED or timed out (a hang means a pipeline deadlock)"; exit 1
fi

step "pytest tests/test_cuda.py"
timeout 420 $PY -m pytest -q -x -rs tests/test_cuda.py 2>&1 | tee "$OUT/cuda_pytest.log" | tail -25
[ "${PIPESTATUS[0]}" -eq 0 ] || fail=1

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  step "benchmark"
  gpu=$($PY -c "import torch; print(torch.cuda.get_device_name().split()[1].lower())")
  timeout 300 $PY scripts/bench_cuda.py "$OUT/cuda_bench_${gpu}.csv" || fail=1
fi

if [ "${SKIP_SANITIZER:-0}" != 1 ]; then
  for tool in memcheck racecheck; do
    step "compute-sanitizer $tool"
    timeout 300 compute-sanitizer --tool $tool --error-exitcode 9 $PY scripts/cuda_sanitizer_cases.py \
      >"$OUT/cuda_sanitizer_$tool.log" 2>&1
    rc=$?; tail -4 "$OUT/cuda_sanitizer_$tool.log"; echo "$tool exit code $rc"
    [ $rc -eq 0 ] || fail=1
  done
fi
echo; echo "gpu_cuda.sh: $([ $fail -eq 0 ] && echo ALL OK || echo FAILURES)"
exit $fail
