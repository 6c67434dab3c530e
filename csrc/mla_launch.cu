// Host-side launcher: builds the TMA descriptor of the KV cache and launches the main kernel and
// the combine kernel on the caller's stream. No torch here; errors come back as cudaError_t.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cudaTypedefs.h>

#include "mla_decode_kernel.cuh"

namespace flashmla {

template <typename T>
cudaError_t launch_combine_kernel(const DecodeParams& params, cudaStream_t stream);

namespace {

// cuTensorMapEncodeTiled is a driver API; fetching it through the runtime avoids linking
// libcuda directly (the runtime already loaded it).
PFN_cuTensorMapEncodeTiled_v12000 get_encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  if (fn == nullptr) {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult status;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault,
                                         &status) == cudaSuccess &&
        status == cudaDriverEntryPointSuccess) {
      fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr);
    }
  }
  return fn;
}

// The cache as a 4-d tensor (dims, token, kv head, page), innermost first. A box is 64 dims x
// 64 tokens of one head of one page, written to shared memory with the 128-byte swizzle that
// wgmma descriptors expect. Pages past num_blocks read as zeros instead of faulting.
cudaError_t make_kv_tensor_map(const DecodeParams& p, DType dtype, CUtensorMap* map) {
  auto encode = get_encode_fn();
  if (encode == nullptr) return cudaErrorNotSupported;
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(kHeadDimQK), static_cast<cuuint64_t>(kPageSize),
                              static_cast<cuuint64_t>(p.h_kv), static_cast<cuuint64_t>(p.num_blocks)};
  const cuuint64_t strides[3] = {static_cast<cuuint64_t>(p.k_stride_token) * 2,
                                 static_cast<cuuint64_t>(p.k_stride_head) * 2,
                                 static_cast<cuuint64_t>(p.k_stride_block) * 2};
  const cuuint32_t box[4] = {static_cast<cuuint32_t>(kBoxDim), static_cast<cuuint32_t>(kPageSize), 1, 1};
  const cuuint32_t elem_strides[4] = {1, 1, 1, 1};
  const CUtensorMapDataType type =
      dtype == DType::kBF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  // L2 promotion 256 B by default; +l2promo128 asks for 128 B, one box row.
  const CUtensorMapL2promotion promotion =
      (p.schedule & kFlagL2Promo128) ? CU_TENSOR_MAP_L2_PROMOTION_L2_128B : CU_TENSOR_MAP_L2_PROMOTION_L2_256B;
  const CUresult res = encode(map, type, 4, const_cast<void*>(p.k_cache), dims, strides, box, elem_strides,
                              CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, promotion,
                              CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return res == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

// Q or the output of one kv head as a 3-d tensor (dims, row, batch) with row = s * h_q + head, a
// box being 64 dims x 64 rows in the 128-byte swizzle (+tmaq / +tmaout). Rows past
// s_q * h_q read as zeros and are not written. False when the tensor does not fit that shape
// (more than one kv head, rows not evenly strided, strides not multiples of 16 bytes) or the
// encoding fails; the kernel then takes its other path.
bool make_rows_tensor_map(const void* base, int dims_per_row, int64_t row_stride, int64_t s_stride,
                          int64_t batch_stride, const DecodeParams& p, DType dtype, CUtensorMap* map) {
  auto encode = get_encode_fn();
  const int64_t rows = static_cast<int64_t>(p.s_q) * p.h_q;
  const bool fits = encode != nullptr && p.h_kv == 1 && s_stride == p.h_q * row_stride &&
                    reinterpret_cast<uintptr_t>(base) % 16 == 0 && (row_stride * 2) % 16 == 0 &&
                    (batch_stride * 2) % 16 == 0;
  if (!fits) return false;
  const cuuint64_t dims[3] = {static_cast<cuuint64_t>(dims_per_row), static_cast<cuuint64_t>(rows),
                              static_cast<cuuint64_t>(p.batch)};
  const cuuint64_t strides[2] = {static_cast<cuuint64_t>(row_stride) * 2, static_cast<cuuint64_t>(batch_stride) * 2};
  const cuuint32_t box[3] = {static_cast<cuuint32_t>(kBoxDim), static_cast<cuuint32_t>(kRowsPerTile), 1};
  const cuuint32_t elem_strides[3] = {1, 1, 1};
  const CUtensorMapDataType type =
      dtype == DType::kBF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  return encode(map, type, 3, const_cast<void*>(base), dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace

int mla_decode_smem_bytes() { return kSmemBytes; }

cudaError_t launch_mla_decode(const DecodeParams& params, DType dtype, cudaStream_t stream) {
  KernelMaps maps = {};
  cudaError_t err = make_kv_tensor_map(params, dtype, &maps.kv);
  if (err != cudaSuccess) return err;
  // +tmaq / +tmaout stay set only where their tensor map could be made (one kv head, evenly
  // strided rows); otherwise the kernel loads Q and stores the output as it does without them.
  DecodeParams p = params;
  if ((p.schedule & kFlagTmaQ) &&
      !make_rows_tensor_map(p.q, kHeadDimQK, p.q_stride_h, p.q_stride_s, p.q_stride_b, p, dtype, &maps.q)) {
    p.schedule &= ~kFlagTmaQ;
  }
  const int64_t out_row = kHeadDimV;  // out is contiguous [b, s_q, h_q, 512]
  if ((p.schedule & kFlagTmaOut) &&
      !make_rows_tensor_map(p.out, kHeadDimV, out_row, out_row * p.h_q, out_row * p.h_q * p.s_q, p, dtype,
                            &maps.out)) {
    p.schedule &= ~kFlagTmaOut;
  }
  const bool combine = !(p.schedule & kFlagProbeNoCombine);  // the +nocombine timing probe skips it
  if (dtype == DType::kBF16) {
    err = launch_main_kernel<__nv_bfloat16>(p, maps, stream);
    if (err == cudaSuccess && combine) err = launch_combine_kernel<__nv_bfloat16>(p, stream);
  } else {
    err = launch_main_kernel<__half>(p, maps, stream);
    if (err == cudaSuccess && combine) err = launch_combine_kernel<__half>(p, stream);
  }
  return err;
}

}  // namespace flashmla
