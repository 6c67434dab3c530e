#!/usr/bin/env bash
# Per-kernel device time and host time per call (flashmla.bench.kernel_profile) for our kernels
# and the competitors, on a GPU host. Carry .gpu/flashinfer and .gpu/vllm-kernels.tar.xz for the
# competitors (scripts/gpu_payloads.sh unpacks them; missing ones are reported as skipped).
#   OUT=prof bash scripts/gpu_profile.sh ["128,1,4K,64" ...]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/profile-$(date +%Y%m%d-%H%M)}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
bash scripts/gpu_payloads.sh
export PYTHONPATH=$PWD:/tmp/flashmla-bench/site${PYTHONPATH:+:$PYTHONPATH}
[ -d /tmp/flashmla-bench/vllm-kernels ] && export FLASHMLA_BENCH_VLLM_KERNELS=/tmp/flashmla-bench/vllm-kernels
if ! $PY -c "import flashmla.cuda_backend as c, sys; sys.exit(0 if c._C is not None else 1)" 2>/dev/null; then
  t0=$SECONDS
  FLASHMLA_BUILD_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} $PY setup.py build_ext --inplace >"$OUT/cuda_build.log" 2>&1 ||
    { tail -30 "$OUT/cuda_build.log"; echo "CUDA build FAILED"; }
  echo "build: $((SECONDS - t0)) s"
fi
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=("128,1,4K,64" "128,1,8K,16" "128,1,4K,64,1" "128,2,8K,128" "1,1,4K,128" "1,1,4K,16")
$PY -m flashmla.bench.kernel_profile --shapes "${shapes[@]}" \
  --providers ${PROFILE_PROVIDERS:-flashmla-cuda flashmla-triton flashinfer-fa3 flash_mla vllm-triton} --out "$OUT"
