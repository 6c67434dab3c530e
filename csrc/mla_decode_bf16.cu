// Instantiates the main decode kernel and its launcher for bf16 (one file per element type
// so the two compile in parallel).
#include "mla_decode_kernel.cuh"

namespace flashmla {
template cudaError_t launch_main_kernel<__nv_bfloat16>(const DecodeParams&, const KernelMaps&, cudaStream_t);

int seesaw_trace_copy(long long* dst, int max_values, int* dims) {
#ifdef FLASHMLA_SEESAW_TRACE
  dims[0] = seesaw::kTraceBlocks;
  dims[1] = 2;
  dims[2] = seesaw::kTraceSteps;
  dims[3] = seesaw::kTraceEvents;
  const int n = min(max_values, static_cast<int>(sizeof(g_seesaw_trace) / sizeof(long long)));
  if (cudaMemcpyFromSymbol(dst, g_seesaw_trace, n * sizeof(long long)) != cudaSuccess) return 0;
  return n;
#else
  (void)dst;
  (void)max_values;
  dims[0] = dims[1] = dims[2] = dims[3] = 0;
  return 0;
#endif
}
}  // namespace flashmla
