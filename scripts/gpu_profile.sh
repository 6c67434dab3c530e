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
bash scripts/gpu_build_if_needed.sh "$OUT/cuda_build.log"  # a failed build: flashmla-cuda is reported as skipped
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=("128,1,4K,64" "128,1,8K,16" "128,1,4K,64,1" "128,2,8K,128" "1,1,4K,128" "1,1,4K,16")
$PY -m flashmla.bench.kernel_profile --shapes "${shapes[@]}" \
  --providers ${PROFILE_PROVIDERS:-flashmla-cuda flashmla-triton flashinfer-fa3 flash_mla vllm-triton} --out "$OUT"
