#!/usr/bin/env bash
# Build DeepSeek FlashMLA's sm90 dense decode (scheduler + split-KV kernel + combine) into one shared
# library with a C entry point (benchmarks/comparators/flashmla_head_abi.cu), so that the benchmark's
# `flashmla-head` provider can time FlashMLA at a pinned commit beside our kernel in one process.
# FlashMLA is not on PyPI and is never copied into this repository: you give the script a checkout.
#
# Usage (any machine with nvcc >= 12.3; no GPU needed):
#   git clone https://github.com/deepseek-ai/FlashMLA /tmp/FlashMLA && git -C /tmp/FlashMLA checkout 9241ae3
#   bash scripts/build_flashmla_head.sh /tmp/FlashMLA [.gpu/flashmla-head]
# Then carry the output folder to the GPU host (scripts/gpu_bench.sh picks up
# .gpu/flashmla-head/libflashmla_head.so), or point FLASHMLA_BENCH_FLASHMLA_HEAD at the .so.
# CUTLASS/CuTe headers come from the nvidia-cutlass wheel on PyPI (installed into a temp folder
# unless CUTLASS_INCLUDE names an include dir). About 3-5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=${1:?usage: build_flashmla_head.sh FLASHMLA_CHECKOUT [OUT_DIR]}
OUT=${2:-.gpu/flashmla-head}
NVCC=${NVCC:-nvcc}
[ -f "$SRC/csrc/sm90/decode/dense/instantiations/bf16.cu" ] ||
  { echo "build_flashmla_head: $SRC does not look like a FlashMLA checkout (no csrc/sm90/decode/dense)"; exit 2; }
command -v "$NVCC" >/dev/null || { echo "build_flashmla_head: nvcc not found (set NVCC or PATH)"; exit 2; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SRC=$(cd "$SRC" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [ -z "${CUTLASS_INCLUDE:-}" ]; then
  python3 -m pip install -q --no-deps --target "$WORK/cutlass" "nvidia-cutlass==4.2.0.0"
  CUTLASS_INCLUDE=$WORK/cutlass/cutlass_library/source/include
  CUTLASS_FROM="nvidia-cutlass 4.2.0.0 from PyPI"
fi
CUDA_INC=$(dirname "$(dirname "$(command -v "$NVCC")")")/include
# FlashMLA's own setup.py flags for its sm90 kernels (bf16 only), plus CUDA 13's cccl include dir.
FLAGS=(-O3 -std=c++20 -DNDEBUG -D_USE_MATH_DEFINES -DFLASH_MLA_DISABLE_FP16 -Wno-deprecated-declarations
       -U__CUDA_NO_HALF_OPERATORS__ -U__CUDA_NO_HALF_CONVERSIONS__ -U__CUDA_NO_HALF2_OPERATORS__
       -U__CUDA_NO_BFLOAT16_CONVERSIONS__ --expt-relaxed-constexpr --expt-extended-lambda --use_fast_math
       "-Xptxas=-v,--register-usage-level=10,--warn-on-spills" -gencode arch=compute_90a,code=sm_90a
       -Xcompiler -fPIC -I"$SRC/csrc" -I"$SRC/csrc/kerutils/include" -I"$SRC/csrc/sm90"
       -I"$CUTLASS_INCLUDE" -I"$CUTLASS_INCLUDE/../tools/util/include" -I"$CUDA_INC/cccl")
SOURCES=("$SRC/csrc/sm90/decode/dense/instantiations/bf16.cu"
         "$SRC/csrc/smxx/decode/get_decoding_sched_meta/get_decoding_sched_meta.cu"
         "$SRC/csrc/smxx/decode/combine/combine.cu"
         "$PWD/benchmarks/comparators/flashmla_head_abi.cu")
objects=()
for s in "${SOURCES[@]}"; do
  o="$WORK/$(basename "$(dirname "$s")")_$(basename "$s" .cu).o"
  echo "== nvcc $s"
  "$NVCC" "${FLAGS[@]}" -c "$s" -o "$o" >"$o.log" 2>&1 || { cat "$o.log"; echo "build_flashmla_head: FAILED on $s"; exit 1; }
  grep -E "registers|spill" "$o.log" | sed 's/^ptxas info *: /  /' | sort | uniq -c | sed 's/^ */  /' || true
  objects+=("$o")
done
"$NVCC" -shared -gencode arch=compute_90a,code=sm_90a "${objects[@]}" -o "$OUT/libflashmla_head.so"
commit=$(git -C "$SRC" rev-parse HEAD 2>/dev/null || echo "unknown (not a git checkout)")
{ echo "FlashMLA commit: $commit"
  echo "built: $(date -u '+%Y-%m-%d %H:%M UTC') with $("$NVCC" --version | tail -1)"
  echo "cutlass headers: ${CUTLASS_FROM:-$CUTLASS_INCLUDE}"; } >"$OUT/libflashmla_head.txt"
echo "build_flashmla_head: wrote $OUT/libflashmla_head.so (FlashMLA $commit)"
