// Instantiates the main decode kernel for one element type (one file per type so the two
// compile in parallel).
#include "mla_decode_kernel.cuh"

namespace flashmla {

template <>
cudaError_t launch_main_kernel<__half>(const DecodeParams& params, const CUtensorMap& kv_map,
                                   cudaStream_t stream) {
  // auto (0) = serial: the pipelined variant measured slower on every benchmark row (kernel-design.md).
  int kind = params.schedule & 3;
  if (kind == 0) kind = kScheduleSerial;
  auto kernel = kind == kSchedulePipelined ? mla_decode_kernel<__half, kSchedulePipelined>
                : kind == kScheduleChained ? mla_decode_kernel<__half, kScheduleChained>
                                           : mla_decode_kernel<__half, kScheduleSerial>;
  // The opt-in shared-memory size is a per-function attribute; set it once per process.
  static bool configured[4] = {false, false, false, false};
  if (!configured[kind]) {
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemBytes);
    if (err != cudaSuccess) return err;
    configured[kind] = true;
  }
  dim3 grid(params.num_m_blocks, params.h_kv, params.num_sm_parts);
  kernel<<<grid, kNumThreads, kSmemBytes, stream>>>(kv_map, params);
  return cudaGetLastError();
}

}  // namespace flashmla
