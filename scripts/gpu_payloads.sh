#!/usr/bin/env bash
# Unpack the carried competitor packages where scripts/gpu_bench.sh and the notebooks stage of
# scripts/gpu_check.sh look for them, without running the benchmark:
#   .gpu/flashinfer/flashinfer-site.tar.xz + apache_tvm_ffi-*.whl  -> /tmp/flashmla-bench/site
#   .gpu/vllm-kernels.tar.xz                                       -> /tmp/flashmla-bench/vllm-kernels
#   .gpu/flashmla-head/libflashmla_head.so   (scripts/build_flashmla_head.sh; used in place)
# Says loudly what was not carried (those providers are then reported as skipped).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WORK=${BENCH_WORK:-/tmp/flashmla-bench}
mkdir -p "$WORK/site"
if ls .gpu/flashinfer/flashinfer-site.tar.xz >/dev/null 2>&1; then
  tar -xJf .gpu/flashinfer/flashinfer-site.tar.xz -C "$WORK/site" &&
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
      .gpu/flashinfer/apache_tvm_ffi-*.whl && echo "flashinfer unpacked into $WORK/site" ||
    echo "flashinfer: unpacking FAILED (its providers will be skipped)"
else
  echo "flashinfer: .gpu/flashinfer/flashinfer-site.tar.xz NOT carried (its providers will be skipped)"
fi
if [ -f .gpu/vllm-kernels.tar.xz ]; then
  tar -xJf .gpu/vllm-kernels.tar.xz -C "$WORK" && echo "vLLM kernels unpacked into $WORK/vllm-kernels" ||
    echo "vLLM kernels: unpacking FAILED"
else
  echo "vLLM kernels: .gpu/vllm-kernels.tar.xz NOT carried (flash_mla / vllm-triton need an installed vllm)"
fi
if [ -f .gpu/flashmla-head/libflashmla_head.so ]; then
  echo "FlashMLA at a pinned commit: .gpu/flashmla-head/libflashmla_head.so ($(head -1 .gpu/flashmla-head/libflashmla_head.txt 2>/dev/null))"
else
  echo "FlashMLA at a pinned commit: .gpu/flashmla-head/libflashmla_head.so NOT carried (flashmla-head will be skipped; build it with scripts/build_flashmla_head.sh)"
fi
