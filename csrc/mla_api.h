// Plain C++ interface between the torch binding and the CUDA kernels.
// Nothing here knows about torch: the binding validates tensors, fills these structs with raw
// pointers and strides, and calls the launchers below. Every launcher returns a cudaError_t
// (never exits or traps) so the binding can turn failures into Python exceptions.
#pragma once

#include <cstdint>
#include <cuda_runtime_api.h>

namespace flashmla {

constexpr int kPageSize = 64;      // tokens per KV-cache page = tokens per inner-loop block
constexpr int kHeadDimQK = 576;    // 512 latent + 64 rope
constexpr int kHeadDimV = 512;     // V = K[..., :512]
constexpr int kRowsPerTile = 64;   // query rows per thread block (the wgmma M)
constexpr int kFixedOverheadBlocks = 5;
constexpr int kWholeRequestSlackBlocks = 12;  // = scheduler.WHOLE_REQUEST_SLACK_BLOCKS
constexpr int kMetadataWidth = 8;

enum class DType : int { kBF16 = 0, kFP16 = 1 };

struct DecodeParams {
  // q [b, s_q, h_q, 576]; strides in elements, last dim contiguous.
  const void* q;
  int64_t q_stride_b, q_stride_s, q_stride_h;
  // k_cache [num_blocks, 64, h_kv, 576]; strides in elements, last dim contiguous.
  const void* k_cache;
  int64_t k_stride_block, k_stride_token, k_stride_head;
  int num_blocks;
  // block_table [b, max_blocks] int32, row stride in elements.
  const int* block_table;
  int64_t block_table_stride;
  const int* cache_seqlens;         // [b]
  const int* tile_metadata;         // [num_sm_parts, 8]
  const int* num_splits;            // [b + 1]
  int num_sm_parts;
  // Outputs: out [b, s_q, h_q, 512] contiguous (q dtype), lse [b, h_q, s_q] fp32 contiguous.
  void* out;
  float* lse;
  // Partials: out_accum [b + num_sm_parts, h_kv, rows, 512], lse_accum [b + num_sm_parts, h_kv, rows].
  float* out_accum;
  float* lse_accum;
  // +overlapcombine (seesaw): [b, h_kv, num_m_blocks] int32, zeroed before the launch; the thread
  // block that stores a split chunk's partials adds 1 to its (request, kv head, m-block) entry
  // when they are stored, and the combine merges a request's rows once their entry counts all its
  // chunks. nullptr without the flag.
  int* chunk_done;
  int batch, s_q, h_q, h_kv;
  int heads_per_kv;                 // h_q / h_kv
  int rows;                         // s_q * h_q / h_kv query rows per kv head
  int num_m_blocks;                 // ceil(rows / 64)
  float softmax_scale;
  bool causal;
  // bits 0-1: 0 = auto (= serial, the faster one measured), 1 = serial, 2 = pipelined,
  // 3 = chained (docs/kernel-design.md section 6);
  // bit 2: rendezvous (bar.sync on both sides) instead of bar.arrive for the WG0/WG1 handoff;
  // bit 3: column-split combine kernel (4 warps per row);
  // bit 4: the seesaw main kernel (mla_decode_seesaw.cuh) instead of bits 0-2's;
  // bit 5: K pages with L2 evict_normal instead of evict_first;
  // bit 6: seesaw only, WG0 refills stage 0's V left before its second PV instead of behind it;
  // bit 7: the K tensor map asks for 128-byte instead of 256-byte L2 promotion;
  // bit 8: S waits for all 9 boxes of a K tile instead of taking each box as it lands.
  int schedule;
};

struct MetadataParams {
  const int* cache_seqlens;         // [b]
  int batch;
  int num_sm_parts;
  int* tile_metadata;               // [num_sm_parts, 8] (output)
  int* num_splits;                  // [b + 1] (output)
  long long* workspace;             // [2 * b] scratch
  int min_blocks_per_part;          // floor on line units per part (1 = no floor); scheduler.py
  // Column split (scheduler.py): 0 never, 1 always, 2 when half the parts would hold at most
  // kColumnSplitMaxUnits units each; never with fewer than two parts. A split schedule uses the
  // first num_sm_parts / 2 parts and sets column 7 (kColColumnSplit) of every row to 1.
  int column_split;
};
constexpr int kColColumnSplit = 7;
constexpr int kColumnSplitMaxUnits = 12;  // = scheduler.COLUMN_SPLIT_MAX_UNITS

// Main split-KV kernel followed by the combine kernel, on `stream`.
cudaError_t launch_mla_decode(const DecodeParams& params, DType dtype, cudaStream_t stream);
// The tile scheduler as one GPU thread block (no host synchronisation).
cudaError_t launch_mla_metadata(const MetadataParams& params, cudaStream_t stream);
// Shared memory the main kernel needs; the binding reports it when the device has less.
int mla_decode_smem_bytes();
// Instrumented builds (-DFLASHMLA_SEESAW_TRACE) only: copies up to `max_values` int64 values of
// the bf16 seesaw kernel's timeline buffer [blocks][2 warpgroups][steps][events] into `dst` and
// returns how many were copied (0 in a normal build); `dims` receives the four sizes.
int seesaw_trace_copy(long long* dst, int max_values, int* dims);

}  // namespace flashmla
