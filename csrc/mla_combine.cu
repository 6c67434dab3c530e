// Combine kernel: merges the fp32 partial outputs of a request's chunks by their log-sum-exp,
// and writes out = 0 / lse = +inf for requests with no chunk (seqlen 0, or padding rows of a
// CUDA graph captured for a larger batch). Requests computed in one chunk were written directly
// by the main kernel and are left alone.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "mla_api.h"

namespace flashmla {

namespace {

constexpr int kCombineRowsPerBlock = 8;  // one warp per query row (split variant: per row quarter)
constexpr int kFlagSplitCombineBit = 8;  // DecodeParams::schedule bit; = kFlagSplitCombine of the main kernel
constexpr int kFlagOverlapCombineBit = 1048576;  // = kFlagOverlapCombine of the main kernel

__device__ __forceinline__ int ld_acquire_gpu(const int* ptr) {
  int v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(ptr) : "memory");
  return v;
}

template <typename T>
__device__ __forceinline__ void store4(T* dst, float a, float b, float c, float d);
template <>
__device__ __forceinline__ void store4<__nv_bfloat16>(__nv_bfloat16* dst, float a, float b, float c, float d) {
  __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
  uint2 v;
  v.x = *reinterpret_cast<uint32_t*>(&lo);
  v.y = *reinterpret_cast<uint32_t*>(&hi);
  *reinterpret_cast<uint2*>(dst) = v;
}
template <>
__device__ __forceinline__ void store4<__half>(__half* dst, float a, float b, float c, float d) {
  __half2 lo = __floats2half2_rn(a, b), hi = __floats2half2_rn(c, d);
  uint2 v;
  v.x = *reinterpret_cast<uint32_t*>(&lo);
  v.y = *reinterpret_cast<uint32_t*>(&hi);
  *reinterpret_cast<uint2*>(dst) = v;
}

// Where one query row's inputs and outputs live, shared by both combine kernels.
template <typename T>
struct CombineRow {
  T* out;               // the row's 512 outputs
  float* lse_out;       // the row's lse
  const float* lse_in;  // chunk 0's lse of this row; chunk c at lse_in[c * lse_stride]
  int64_t lse_stride;
};

template <typename T>
__device__ __forceinline__ CombineRow<T> combine_row(const DecodeParams& p, int req, int kv_head, int rho,
                                                     int first_slot) {
  const int t = rho / p.heads_per_kv;
  const int q_head = kv_head * p.heads_per_kv + rho % p.heads_per_kv;
  CombineRow<T> row;
  row.out = reinterpret_cast<T*>(p.out) + ((static_cast<int64_t>(req) * p.s_q + t) * p.h_q + q_head) * kHeadDimV;
  row.lse_out = p.lse + (static_cast<int64_t>(req) * p.h_q + q_head) * p.s_q + t;
  row.lse_in = p.lse_accum + (static_cast<int64_t>(first_slot) * p.h_kv + kv_head) * p.rows + rho;
  row.lse_stride = static_cast<int64_t>(p.h_kv) * p.rows;
  return row;
}

// Max over the row's chunk lse values, strided over the warp's lanes, then butterfly-reduced.
__device__ __forceinline__ float warp_max_lse(const float* lse_in, int64_t stride, int num_chunks, int lane) {
  float m = -INFINITY;
  for (int c = lane; c < num_chunks; c += 32) m = fmaxf(m, lse_in[c * stride]);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffff, m, off));
  return m;
}

// Sum of exp(lse - lse_max) over the row's chunks, reduced the same way.
__device__ __forceinline__ float warp_sum_exp(const float* lse_in, int64_t stride, int num_chunks, int lane,
                                              float lse_max) {
  float sum = 0.f;
  for (int c = lane; c < num_chunks; c += 32) sum += __expf(lse_in[c * stride] - lse_max);
#pragma unroll
  for (int off = 16; off > 0; off /= 2) sum += __shfl_xor_sync(0xffffffff, sum, off);
  return sum;
}

template <typename T>
__global__ void __launch_bounds__(32 * kCombineRowsPerBlock)
    mla_combine_kernel(const DecodeParams p) {
  const int req = blockIdx.z;
  const int kv_head = blockIdx.y;
  const int lane = threadIdx.x % 32;
  const int rho = blockIdx.x * kCombineRowsPerBlock + threadIdx.x / 32;
  // Launched with programmatic dependent launch: the grid is scheduled while the main kernel
  // drains. num_splits comes from the metadata kernel, which finished before the main kernel began.
  const bool overlap = (p.schedule & kFlagOverlapCombineBit) != 0;
  if (!overlap) {
    asm volatile("griddepcontrol.wait;" ::: "memory");  // everything the main kernel wrote is visible
  } else if (blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0 && threadIdx.x == 0) {
    // +overlapcombine: one thread waits for the main grid, so that this grid never completes
    // before it does (what follows in the stream may read the main kernel's outputs).
    asm volatile("griddepcontrol.wait;" ::: "memory");
  }
  const int first_slot = p.num_splits[req];
  const int num_chunks = p.num_splits[req + 1] - first_slot;
  if (overlap && num_chunks > 1) {
    // +overlapcombine: wait until every chunk of this request has published the partials of this
    // block's m-block (the block's 8 rows lie in one 64-row tile). Thread 0's acquire, then the
    // block barrier, order every thread's later loads after the main kernel's stores (the PTX
    // memory model's acquire pattern; the hardware invalidates the L1 for a gpu-scope acquire).
    if (threadIdx.x == 0) {
      const int* done = p.chunk_done + (static_cast<int64_t>(req) * p.h_kv + kv_head) * p.num_m_blocks +
                        blockIdx.x * kCombineRowsPerBlock / kRowsPerTile;
      while (ld_acquire_gpu(done) < num_chunks) __nanosleep(200);
    }
    __syncthreads();
  }
  if (num_chunks == 1 || rho >= p.rows) return;

  const CombineRow<T> row = combine_row<T>(p, req, kv_head, rho, first_slot);
  const float lse_max = warp_max_lse(row.lse_in, row.lse_stride, num_chunks, lane);

  float acc[16];
#pragma unroll
  for (int i = 0; i < 16; ++i) acc[i] = 0.f;
  float final_lse = INFINITY;  // nothing to attend: out = 0, lse = +inf
  if (lse_max != -INFINITY) {
    const float sum = warp_sum_exp(row.lse_in, row.lse_stride, num_chunks, lane, lse_max);
    const float inv_sum = 1.f / sum;
    const float* o_in = p.out_accum + ((static_cast<int64_t>(first_slot) * p.h_kv + kv_head) * p.rows + rho) * kHeadDimV;
    const int64_t o_stride = row.lse_stride * kHeadDimV;
    // No data-dependent branch in this loop, so the compiler keeps several chunks' loads in
    // flight (b = 1 requests are split into ~64 chunks). A chunk whose row saw no key has
    // lse = -inf (weight 0) and a zero partial, so it adds exactly nothing.
#pragma unroll 4
    for (int c = 0; c < num_chunks; ++c) {
      const float w = __expf(row.lse_in[c * row.lse_stride] - lse_max) * inv_sum;
      const float4* src = reinterpret_cast<const float4*>(o_in + c * o_stride);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float4 v = src[k * 32 + lane];
        acc[4 * k + 0] += w * v.x;
        acc[4 * k + 1] += w * v.y;
        acc[4 * k + 2] += w * v.z;
        acc[4 * k + 3] += w * v.w;
      }
    }
    final_lse = lse_max + __logf(sum);
  }
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    store4<T>(row.out + (k * 32 + lane) * 4, acc[4 * k], acc[4 * k + 1], acc[4 * k + 2], acc[4 * k + 3]);
  }
  if (lane == 0) *row.lse_out = final_lse;
}

// Column-split variant (schedule flag kFlagSplitCombineBit): each warp merges one quarter (128
// columns, one float4 per lane) of one row, so a row is served by 4 warps and the grid has 4x
// the blocks of the kernel above, with 16 chunk loads (16 B each) in flight per lane. Why: at
// b = 1 the row count is small (16 rows for h_q = 16 -> 2 blocks of the kernel above, on 2
// SMs), and merging ~64 partials of 2 KiB per row is then limited by the loads two SMs keep in
// flight (docs/kernel-design.md section 6). Same arithmetic per element as mla_combine_kernel:
// each of a row's 4 warps repeats the lse reduction (same inputs, same order), and each output
// element sums the same products in the same chunk order.
constexpr int kCombineColSplit = 4;
constexpr int kCombineColsPerWarp = kHeadDimV / kCombineColSplit;  // 128 = 32 lanes x float4

template <typename T>
__global__ void __launch_bounds__(32 * kCombineRowsPerBlock)
    mla_combine_split_kernel(const DecodeParams p) {
  asm volatile("griddepcontrol.wait;" ::: "memory");
  const int req = blockIdx.z;
  const int kv_head = blockIdx.y;
  const int lane = threadIdx.x % 32;
  const int unit = blockIdx.x * kCombineRowsPerBlock + threadIdx.x / 32;  // (row, quarter)
  const int rho = unit / kCombineColSplit;
  const int col0 = (unit % kCombineColSplit) * kCombineColsPerWarp + 4 * lane;
  const int first_slot = p.num_splits[req];
  const int num_chunks = p.num_splits[req + 1] - first_slot;
  if (num_chunks == 1 || rho >= p.rows) return;

  const CombineRow<T> row = combine_row<T>(p, req, kv_head, rho, first_slot);
  const float lse_max = warp_max_lse(row.lse_in, row.lse_stride, num_chunks, lane);

  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  float final_lse = INFINITY;
  if (lse_max != -INFINITY) {
    const float sum = warp_sum_exp(row.lse_in, row.lse_stride, num_chunks, lane, lse_max);
    const float inv_sum = 1.f / sum;
    const float* o_in = p.out_accum + ((static_cast<int64_t>(first_slot) * p.h_kv + kv_head) * p.rows + rho) * kHeadDimV + col0;
    const int64_t o_stride = row.lse_stride * kHeadDimV;
    // Batches of kBatch chunks: all loads of a batch are issued before the first use. Indices
    // past the last chunk are clamped (an in-bounds, finite partial) and weighted 0, which adds
    // exactly +0 and keeps the loop free of data-dependent branches.
    constexpr int kBatch = 16;
    for (int c0 = 0; c0 < num_chunks; c0 += kBatch) {
      float4 v[kBatch];
      float w[kBatch];
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const int c = min(c0 + u, num_chunks - 1);
        w[u] = row.lse_in[c * row.lse_stride];
        v[u] = *reinterpret_cast<const float4*>(o_in + c * o_stride);
      }
#pragma unroll
      for (int u = 0; u < kBatch; ++u) {
        const float wu = c0 + u < num_chunks ? __expf(w[u] - lse_max) * inv_sum : 0.f;
        acc.x += wu * v[u].x;
        acc.y += wu * v[u].y;
        acc.z += wu * v[u].z;
        acc.w += wu * v[u].w;
      }
    }
    final_lse = lse_max + __logf(sum);
  }
  store4<T>(row.out + col0, acc.x, acc.y, acc.z, acc.w);
  if (lane == 0 && col0 == 0) *row.lse_out = final_lse;
}

}  // namespace

template <typename T>
cudaError_t launch_combine_kernel(const DecodeParams& params, cudaStream_t stream) {
  cudaLaunchConfig_t config = {};
  const bool split = (params.schedule & kFlagSplitCombineBit) != 0;
  const int units = split ? params.rows * kCombineColSplit : params.rows;
  config.gridDim = dim3((units + kCombineRowsPerBlock - 1) / kCombineRowsPerBlock, params.h_kv, params.batch);
  config.blockDim = dim3(32 * kCombineRowsPerBlock);
  config.stream = stream;
  // Programmatic dependent launch: the combine grid is scheduled while the main kernel drains
  // (it waits in griddepcontrol.wait for the main grid's results), hiding the launch gap.
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  config.attrs = attr;
  config.numAttrs = 1;
  if (split) return cudaLaunchKernelEx(&config, mla_combine_split_kernel<T>, params);
  return cudaLaunchKernelEx(&config, mla_combine_kernel<T>, params);
}

template cudaError_t launch_combine_kernel<__nv_bfloat16>(const DecodeParams&, cudaStream_t);
template cudaError_t launch_combine_kernel<__half>(const DecodeParams&, cudaStream_t);

}  // namespace flashmla
