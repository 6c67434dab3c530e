// Instantiates the main decode kernel and its launcher for fp16 (one file per element type
// so the two compile in parallel).
#include "mla_decode_kernel.cuh"

namespace flashmla {
template cudaError_t launch_main_kernel<__half>(const DecodeParams&, const KernelMaps&, cudaStream_t);
}  // namespace flashmla
