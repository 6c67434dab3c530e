// Instantiates the main decode kernel for one element type (one file per type so the two
// compile in parallel).
#include "mla_decode_kernel.cuh"

namespace flashmla {

template <>
cudaError_t launch_main_kernel<__nv_bfloat16>(const DecodeParams& params, const CUtensorMap& kv_map,
                                   cudaStream_t stream) {
  auto kernel = mla_decode_kernel<__nv_bfloat16>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
  if (err != cudaSuccess) return err;
  dim3 grid(params.num_m_blocks, params.h_kv, params.num_sm_parts);
  kernel<<<grid, kNumThreads, kSmemBytes, stream>>>(kv_map, params);
  return cudaGetLastError();
}

}  // namespace flashmla
