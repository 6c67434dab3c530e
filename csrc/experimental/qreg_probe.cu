// Register probe for the experimental three-warpgroup kernel (not part of the build: setup.py and
// scripts/compile_csrc.sh compile csrc/*.cu only). Instantiates it so ptxas reports its
// registers, spills and wgmma serialisation:
//   nvcc -std=c++17 -O3 -gencode arch=compute_90a,code=sm_90a -Xptxas -v -Icsrc \
//        -c csrc/experimental/qreg_probe.cu -o /tmp/qreg_probe.o
// Status (2026-11-24): 32 bytes of spills and C7512 (wgmma serialised) at the only budget the
// launch allows, 184 (WG0) / 160 (PV warpgroups); clean at 192 / 160, which the pool does not
// have. See the header of mla_decode_qreg.cuh and docs/kernel-design.md section 6.5.
#include "mla_decode_qreg.cuh"

namespace flashmla {
template __global__ void mla_decode_qreg_kernel<__nv_bfloat16>(const __grid_constant__ CUtensorMap, const DecodeParams);
}  // namespace flashmla
