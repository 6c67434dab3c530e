// A plain C entry point around DeepSeek FlashMLA's sm90 dense decode (its scheduler, split-KV main
// kernel and combine), so that `flashmla.bench` can time FlashMLA at a pinned commit beside our
// kernel in one process through ctypes, without building FlashMLA's torch extension.
//
// Nothing from FlashMLA is copied here: this file only fills FlashMLA's parameter structs and calls
// its launch functions. scripts/build_flashmla_head.sh compiles it against a FlashMLA checkout the
// user provides (tested with commit 9241ae3, the one shared/perf-targets.md names).
//
// Layouts (as FlashMLA's own Python wrapper passes them, h_kv = 1, bf16 only):
//   q [b, s_q, h_q, 576], kcache [num_blocks, 64, 1, 576], out [b, s_q, h_q, 512],
//   lse [b, s_q * h_q] fp32 (natural log), block_table [b, >= max pages] int32 (row stride given),
//   seqlens [b] int32. Scratch: sched_meta [num_sm_parts, 8] int32, num_splits [b + 1] int32,
//   lse_accum [b + num_sm_parts, s_q * h_q] fp32, o_accum [b + num_sm_parts, s_q * h_q, 512] fp32.
// compute_meta != 0 also (re)computes the tile schedule into sched_meta / num_splits first.
// Returns the CUDA error code of the launches (0 = success).
#include "sm90/decode/dense/splitkv_mla.h"
#include "smxx/decode/combine/combine.h"
#include "smxx/decode/get_decoding_sched_meta/get_decoding_sched_meta.h"

#include <cmath>

namespace {
constexpr int kHeadDimQK = 576;
constexpr int kHeadDimV = 512;
constexpr int kPageSize = 64;
constexpr int kKvHeads = 1;
// FlashMLA's Python wrapper charges each split this many blocks of extra work when balancing.
constexpr int kFixedOverheadBlocks = 5;
}  // namespace

extern "C" int flashmla_head_decode(int b, int s_q, int h_q, int num_blocks, void* q, void* kcache, void* out,
                                    float* lse, int* block_table, int block_table_stride, int* seqlens,
                                    int causal, float softmax_scale, int* sched_meta, int* num_splits,
                                    float* lse_accum, float* o_accum, int num_sm_parts, int compute_meta,
                                    void* stream_handle) {
  cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  const int rows_per_kv_head = s_q * h_q;
  auto* meta = reinterpret_cast<DecodingSchedMeta*>(sched_meta);
  if (compute_meta) {
    GetDecodeSchedMetaParams sched = {b, s_q, kPageSize, kFixedOverheadBlocks, -1, -1, nullptr, nullptr,
                                      seqlens, meta, num_splits, num_sm_parts, stream};
    smxx::decode::run_get_decoding_sched_meta_kernel(sched);
  }

  DenseAttnDecodeParams p;
  p.b = b;
  p.s_q = s_q;
  p.q_seq_per_hk = rows_per_kv_head;
  p.seqlens_k_ptr = seqlens;
  p.h_q = h_q;
  p.h_k = kKvHeads;
  p.num_blocks = num_blocks;
  p.q_head_per_hk = h_q;
  p.is_causal = s_q > 1 && causal != 0;  // with one query token causal changes nothing
  p.d = kHeadDimQK;
  p.d_v = kHeadDimV;
  p.scale_softmax = softmax_scale;
  p.scale_softmax_log2 = float(softmax_scale * M_LOG2E);
  p.q_ptr = q;
  p.k_ptr = kcache;
  p.o_ptr = out;
  p.softmax_lse_ptr = lse;
  p.q_batch_stride = int64_t(rows_per_kv_head) * kHeadDimQK;
  p.k_batch_stride = int64_t(kPageSize) * kHeadDimQK;
  p.o_batch_stride = int64_t(rows_per_kv_head) * kHeadDimV;
  p.q_row_stride = kHeadDimQK;
  p.k_row_stride = kHeadDimQK;
  p.o_row_stride = kHeadDimV;
  p.q_head_stride = kHeadDimQK;
  p.k_head_stride = kHeadDimQK;
  p.o_head_stride = int64_t(rows_per_kv_head) * kHeadDimV;
  p.block_table = block_table;
  p.block_table_batch_stride = block_table_stride;
  p.page_block_size = kPageSize;
  p.tile_scheduler_metadata_ptr = meta;
  p.num_sm_parts = num_sm_parts;
  p.num_splits_ptr = num_splits;
  p.total_num_splits = b + num_sm_parts;
  p.softmax_lseaccum_ptr = lse_accum;
  p.oaccum_ptr = o_accum;
  p.stream = stream;
  sm90::run_flash_splitkv_mla_kernel<cutlass::bfloat16_t>(p);

  const int lse_batch_stride = kKvHeads * rows_per_kv_head;
  const int out_batch_stride = h_q * s_q * kHeadDimV;
  CombineParams combine = {b, s_q, h_q, kHeadDimV,
                           lse, out, lse_batch_stride, h_q, out_batch_stride, h_q * kHeadDimV, kHeadDimV,
                           lse_accum, o_accum, lse_batch_stride, h_q, out_batch_stride, h_q * kHeadDimV, kHeadDimV,
                           meta, num_splits, num_sm_parts, nullptr, stream};
  smxx::decode::run_flash_mla_combine_kernel<cutlass::bfloat16_t>(combine);
  return int(cudaGetLastError());
}
