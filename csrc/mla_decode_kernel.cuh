// Split-KV MLA decode main kernel for sm_90a (one thread block = one "part" of the schedule for
// one 64-row query tile of one kv head).
//
// Schedule inside a thread block (see docs/kernel-design.md for why):
//   * 256 threads = 2 warpgroups. WG0 computes S = Q K^T (64 x 64 x 576) with wgmma from shared
//     memory, the online softmax in fp32, and the left half of O (dims 0..255) with P taken from
//     its registers. WG1 computes the right half of O (dims 256..511) from P that WG0 writes to
//     shared memory; one thread of WG1 also issues the TMA loads.
//   * K pages arrive by TMA, 9 boxes of 64 tokens x 64 dims (128-byte swizzle), into a 2-stage
//     ring guarded by "full" (TMA bytes landed) and "empty" (both warpgroups done) mbarriers.
//   * V is the first 512 dims of the same shared tile, read by wgmma as an N-major operand, so
//     each page is loaded once for both GEMMs.
//   * Handshake between the warpgroups per block: named barrier P_READY (WG0 -> WG1: P, the row
//     rescale factors and, at a request's end, 1/rowsum are in shared memory) and P_FREE
//     (WG1 -> WG0: the previous P has been consumed).
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "mla_api.h"
#include "ptx_utils.cuh"
#include "wgmma_ops.cuh"

namespace flashmla {

constexpr int kNumThreads = 256;

// The tensor maps a main kernel may use: the KV cache (always) and, for +tmaq /
// +tmaout, Q and the output as (dims, row, batch) with row = s * h_q + head (mla_launch.cu).
struct KernelMaps {
  CUtensorMap kv, q, out;
};
// Defined at the end of this file; instantiated once per element type in
// mla_decode_{bf16,fp16}.cu (one file per type so the two compile in parallel).
template <typename T>
cudaError_t launch_main_kernel(const DecodeParams& params, const KernelMaps& maps, cudaStream_t stream);
extern template cudaError_t launch_main_kernel<__nv_bfloat16>(const DecodeParams&, const KernelMaps&, cudaStream_t);
extern template cudaError_t launch_main_kernel<__half>(const DecodeParams&, const KernelMaps&, cudaStream_t);
constexpr int kBoxDim = 64;                                   // 64 dims x 64 tokens per TMA box
constexpr int kBoxBytes = kBoxDim * kPageSize * 2;            // 8 KiB
constexpr int kNumBoxes = kHeadDimQK / kBoxDim;               // 9
constexpr int kTileBytes = kNumBoxes * kBoxBytes;             // 72 KiB: one page of one kv head
constexpr int kNumStages = 2;

// Shared memory map (byte offsets from a 1024-byte aligned base).
constexpr int kSmemQ = 0;
constexpr int kSmemK = kSmemQ + kTileBytes;
constexpr int kSmemP = kSmemK + kNumStages * kTileBytes;
constexpr int kSmemScale = kSmemP + kBoxBytes;                // 64 floats: per-row rescale
constexpr int kSmemInvL = kSmemScale + kRowsPerTile * 4;      // 64 floats: 1 / row sum
constexpr int kSmemBars = kSmemInvL + kRowsPerTile * 4;       // full[stage * 9 + box], empty[2], wg0[2], q
constexpr int kSmemUsed = kSmemBars + (kNumStages * kNumBoxes + kNumStages + 3) * 8;
constexpr int kSmemBytes = kSmemUsed + 1024;                  // slack to align the base
static_assert(kSmemBytes <= 227 * 1024, "shared memory budget of one sm_90 thread block");

// Named barrier ids (0 is __syncthreads).
constexpr int kBarPReady = 1;
constexpr int kBarPFree = 2;
constexpr int kBarQLoaded = 3;
constexpr int kBarTailZeroed = 4;
constexpr int kBarOutStaged = 5;  // +tmaout: both halves of a request's output are in the Q tile

template <typename T>
struct ElemOps;

template <>
struct ElemOps<__nv_bfloat16> {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
  static __device__ __forceinline__ void qk(float* d, uint64_t a, uint64_t b, int acc) {
    wgmmaM64N64K16SSBf16(d, a, b, acc);
  }
  static __device__ __forceinline__ void qk_regs(float* d, const uint32_t* a, uint64_t b, int acc) {
    wgmmaM64N64K16RSBf16(d, a, b, acc);
  }
  static __device__ __forceinline__ void pv_regs(float* d, const uint32_t* a, uint64_t b) {
    wgmmaM64N256K16RSBf16(d, a, b, 1);
  }
  static __device__ __forceinline__ void pv_smem(float* d, uint64_t a, uint64_t b) {
    wgmmaM64N256K16SSTransBBf16(d, a, b, 1);
  }
  static __device__ __forceinline__ void pv_regs_n128(float* d, const uint32_t* a, uint64_t b) {
    wgmmaM64N128K16RSBf16(d, a, b, 1);
  }
  static __device__ __forceinline__ void pv_smem_n128(float* d, uint64_t a, uint64_t b) {
    wgmmaM64N128K16SSTransBBf16(d, a, b, 1);
  }
};

template <>
struct ElemOps<__half> {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
  static __device__ __forceinline__ void qk(float* d, uint64_t a, uint64_t b, int acc) {
    wgmmaM64N64K16SSF16(d, a, b, acc);
  }
  static __device__ __forceinline__ void qk_regs(float* d, const uint32_t* a, uint64_t b, int acc) {
    wgmmaM64N64K16RSF16(d, a, b, acc);
  }
  static __device__ __forceinline__ void pv_regs(float* d, const uint32_t* a, uint64_t b) {
    wgmmaM64N256K16RSF16(d, a, b, 1);
  }
  static __device__ __forceinline__ void pv_smem(float* d, uint64_t a, uint64_t b) {
    wgmmaM64N256K16SSTransBF16(d, a, b, 1);
  }
  static __device__ __forceinline__ void pv_regs_n128(float* d, const uint32_t* a, uint64_t b) {
    wgmmaM64N128K16RSF16(d, a, b, 1);
  }
  static __device__ __forceinline__ void pv_smem_n128(float* d, uint64_t a, uint64_t b) {
    wgmmaM64N128K16SSTransBF16(d, a, b, 1);
  }
};

// S[64 x 64] = Q K^T over 576 dims is 9 boxes x 4 k-steps of 16: Q and the K tile are K-major,
// 128-byte-swizzled shared tiles of one layout. Descriptors advance by adding the byte offset >> 4
// to the start-address field, which never carries out of its 14 bits inside shared memory.
// issue_qk_box issues the 4 k-steps of one box, with no fence and no commit (the kernels issue S
// box by box as the boxes land); the first k-step of the `first` box overwrites S.
template <typename T>
__device__ __forceinline__ void issue_qk_box(float* s_acc, uint32_t q_addr, uint32_t k_addr, int box, bool first) {
  const uint64_t q_desc = make_smem_desc_sw128(q_addr, 16, 1024);
  const uint64_t k_desc = make_smem_desc_sw128(k_addr, 16, 1024);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint32_t off16 = (box * kBoxBytes + k * 32) >> 4;
    ElemOps<T>::qk(s_acc, q_desc + off16, k_desc + off16, !first || k > 0);
  }
}
// Waits for all 9 boxes of a stage (`bars`: its per-box mbarriers).
__device__ __forceinline__ void wait_all_boxes(uint64_t* bars, uint32_t parity) {
  for (int box = 0; box < kNumBoxes; ++box) mbar_wait(&bars[box], parity);
}
// S issued box by box, each box as soon as its mbarrier completes, so the tensor pipe starts on
// the first boxes while the rest of the page is still landing; one commit group. Each wait is a
// spin loop: the explicit fence after it keeps ptxas from inserting its own on that path, which
// would make it serialise every wgmma of the kernel (C7520). Boxes [kBoxBegin, kBoxEnd) only:
// the seesaw's +ahead issues S in two commit groups (the range from box 0 begins S).
// kFirstBox: the box S starts on (its range zeroes the accumulators), for S in another box order.
template <typename T, int kBoxBegin = 0, int kBoxEnd = kNumBoxes, int kFirstBox = 0>
__device__ __forceinline__ void issue_qk_as_boxes_land(float* s_acc, uint32_t q_addr, uint32_t k_addr, uint64_t* bars,
                                                       uint32_t parity) {
  if constexpr (kBoxBegin == kFirstBox) {
#pragma unroll
    for (int i = 0; i < 32; ++i) s_acc[i] = 0.f;
  }
#pragma unroll
  for (int box = kBoxBegin; box < kBoxEnd; ++box) {
    mbar_wait(&bars[box], parity);
    wgmma_fence();
    issue_qk_box<T>(s_acc, q_addr, k_addr, box, box == kFirstBox);
  }
  wgmma_commit();
}
// All of S at once: zeroes the accumulators, one fence, 36 k-steps, one commit group.
template <typename T>
__device__ __forceinline__ void issue_qk_wgmmas(float* s_acc, uint32_t q_addr, uint32_t k_addr) {
#pragma unroll
  for (int i = 0; i < 32; ++i) s_acc[i] = 0.f;
  wgmma_fence();
#pragma unroll
  for (int box = 0; box < kNumBoxes; ++box) issue_qk_box<T>(s_acc, q_addr, k_addr, box, box == 0);
  wgmma_commit();
}

// O[:, cols] += P V[:, cols] over one 64-token block (4 k-steps of 16) for kN = 256 (or, with
// +colsplit, 128) output columns, V read N-major straight from the K tile's boxes starting at
// v_addr; one commit group. P from registers (A fragments) or from a K-major shared tile at p_addr.
template <typename T, int kN = 256>
__device__ __forceinline__ void issue_pv_wgmmas_regs(float* o, const uint32_t* p_frag, uint32_t v_addr) {
  static_assert(kN == 256 || kN == 128, "PV is 64 x 256 or 64 x 128 per warpgroup");
  wgmma_fence();
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint64_t v_desc = make_smem_desc_sw128(v_addr + k * 2048, kBoxBytes, 1024);
    if constexpr (kN == 256) ElemOps<T>::pv_regs(o, &p_frag[4 * k], v_desc);
    else ElemOps<T>::pv_regs_n128(o, &p_frag[4 * k], v_desc);
  }
  wgmma_commit();
}
template <typename T, int kN = 256>
__device__ __forceinline__ void issue_pv_wgmmas_smem(float* o, uint32_t p_addr, uint32_t v_addr) {
  static_assert(kN == 256 || kN == 128, "PV is 64 x 256 or 64 x 128 per warpgroup");
  wgmma_fence();
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint64_t p_desc = make_smem_desc_sw128(p_addr + k * 32, 16, 1024);
    const uint64_t v_desc = make_smem_desc_sw128(v_addr + k * 2048, kBoxBytes, 1024);
    if constexpr (kN == 256) ElemOps<T>::pv_smem(o, p_desc, v_desc);
    else ElemOps<T>::pv_smem_n128(o, p_desc, v_desc);
  }
  wgmma_commit();
}

// O *= factor of each of this thread's two rows (a warpgroup's 64 x 2 kFloats accumulator tile:
// 64 x 256 columns, or 64 x 128 with +colsplit).
template <int kFloats = 128>
__device__ __forceinline__ void rescale_rows(float* o, const float* factor) {
#pragma unroll
  for (int i = 0; i < kFloats / 4; ++i) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      o[4 * i + 2 * h] *= factor[h];
      o[4 * i + 2 * h + 1] *= factor[h];
    }
  }
}

// threadIdx.x read through asm volatile: the compiler cannot hoist index arithmetic built on it
// out of the request loop. Without this it precomputes all 36 Q-load addresses and the epilogue
// addresses once per thread, keeps them live across the main loop and spills them.
__device__ __forceinline__ int opaque_tid() {
  int t;
  asm volatile("mov.u32 %0, %%tid.x;" : "=r"(t));
  return t;
}

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// The online softmax's running max may lag the true row max by up to this much (log2 units), as
// FlashAttention-4 does: P = 2^(s - max) is then at most 2^8 = 256 (well inside fp16's range, which
// ends at 65504), and O and the row sums carry the same reference, which cancels in O / l and in
// lse = max + log2(l). What it saves: with random data a new max appears in some row of a warp in
// most 64-token blocks up to ~8K tokens, and each time the warp rescaled its 128 O accumulators
// (128 FMULs) on the seesaw's critical path, between a statistics handoff and the next PV.
constexpr float kLazyMaxLog2 = 8.f;

// The max of this thread's 16 scores of row h (0: row r, 1: row r + 8) of a 64-column S tile, by
// a depth-4 tree (NaN-ignoring fmaxf). online_softmax_step's default form, and the seesaw's
// +chainpv, which must reach the same lazy-max decision before the softmax runs.
__device__ __forceinline__ float thread_row_max(const float* s_acc, int h) {
  float m8[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) m8[i] = fmaxf(s_acc[4 * i + 2 * h], s_acc[4 * i + 2 * h + 1]);
  return fmaxf(fmaxf(fmaxf(m8[0], m8[1]), fmaxf(m8[2], m8[3])), fmaxf(fmaxf(m8[4], m8[5]), fmaxf(m8[6], m8[7])));
}

// Online-softmax step on one thread's two accumulator rows (16 of a block's 64 columns each; a
// row's columns live in the 4 lanes of a quad): masks, raises the running max `row_max` (scaled,
// base 2; lazily, see kLazyMaxLog2), turns s_acc into P = 2^(s scale - max) in place, and returns
// in `rescale` the factor that brings values relative to the old max to the new one, and P's
// partial row sums in `p_sum`.
// Only one warp per SM sub-partition runs this while the other warpgroup waits on the tensor
// pipe, so its instruction count and latency set its time (docs/kernel-design.md section 7): the
// max is taken on the raw scores and the scale folded into one FFMA per element (for a positive
// scale; otherwise the scores are scaled first), columns are masked only in a block that reaches
// past the row's key limit, and the max and sum are depth-4 trees.
// kBranchFree: the same values without any branch (masking by select, a non-positive scale by a
// multiply), for use while a wgmma is in flight, where a divergent branch would make ptxas
// serialise every wgmma of the kernel.
// kLowRegisters: chains instead of depth-4 trees for the max and the sum (fewer live temporaries;
// for the qreg kernel's QK^T warpgroup, which holds Q in registers beside S).
// kUnmasked: for a block that the caller knows lies wholly below every row's key limit, with a
// positive scale (the seesaw's steady-state pair step under +nomask): no masking code and no scale
// test at all, neither branches nor selects. The values are the same as the other forms give there.
template <bool kBranchFree = false, bool kLowRegisters = false, bool kUnmasked = false>
__device__ __forceinline__ void online_softmax_step(float* s_acc, float* row_max, float* rescale, float* p_sum,
                                                    const int* key_limit, int block, float scale_log2, int lane) {
    const int col_base = 2 * (lane & 3);
    float scale = scale_log2;
    if constexpr (kUnmasked) {
      // nothing to prepare: scale > 0 and no column to mask
    } else if constexpr (kBranchFree) {
      const float pre = scale > 0.f ? 1.f : scale;
#pragma unroll
      for (int i = 0; i < 32; ++i) s_acc[i] *= pre;
      scale = scale > 0.f ? scale : 1.f;
    } else if (scale <= 0.f) {  // order-reversing (or zero) scale: scale first, then fold 1.0 below
#pragma unroll
      for (int i = 0; i < 32; ++i) s_acc[i] *= scale;
      scale = 1.f;
    }
    float mx[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int limit = key_limit[h] - block * kPageSize;
      if (!kUnmasked && (kBranchFree || limit < kPageSize)) {
        // kLowRegisters: column 8i + col_base + e is kept if 8i + e < limit - col_base, compared
        // with an immediate, so no register holds a column index.
        const int lane_limit = limit - col_base;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int idx = 4 * i + 2 * h + e;
            const bool keep = kLowRegisters ? 8 * i + e < lane_limit : 8 * i + col_base + e < limit;
            s_acc[idx] = keep ? s_acc[idx] : -INFINITY;
          }
        }
      }
      if constexpr (kLowRegisters) {
        mx[h] = fmaxf(s_acc[2 * h], s_acc[2 * h + 1]);
#pragma unroll
        for (int i = 1; i < 8; ++i) mx[h] = fmaxf(mx[h], fmaxf(s_acc[4 * i + 2 * h], s_acc[4 * i + 2 * h + 1]));
      } else {
        mx[h] = thread_row_max(s_acc, h);
      }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffff, mx[h], 1));
#pragma unroll
    for (int h = 0; h < 2; ++h) mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffff, mx[h], 2));
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      // Lazy (kLazyMaxLog2): in most blocks the max stays, every rescale factor is exactly 1 and
      // O is not rescaled (docs/kernel-design.md 7.29).
      const float candidate = mx[h] * scale;
      const float new_max = candidate > row_max[h] + kLazyMaxLog2 ? candidate : row_max[h];
      const float ref = new_max == -INFINITY ? 0.f : new_max;  // all masked so far: no NaN
      rescale[h] = fast_exp2(row_max[h] - ref);
      row_max[h] = new_max;
      float part[4];
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float p0 = fast_exp2(fmaf(s_acc[4 * i + 2 * h], scale, -ref));
        const float p1 = fast_exp2(fmaf(s_acc[4 * i + 2 * h + 1], scale, -ref));
        s_acc[4 * i + 2 * h] = p0;
        s_acc[4 * i + 2 * h + 1] = p1;
        if constexpr (kLowRegisters) part[0] = i == 0 ? p0 + p1 : part[0] + (p0 + p1);
        else part[i % 4] = i < 4 ? p0 + p1 : part[i % 4] + (p0 + p1);
      }
      if constexpr (kLowRegisters) p_sum[h] = part[0];
      else p_sum[h] = (part[0] + part[1]) + (part[2] + part[3]);
    }
}

// A warpgroup's 64 x 64 tile of packed 16-bit accumulators into a K-major, 128-byte-swizzled box
// (the layout TMA gives and takes): P, where it is the A operand of another warpgroup's PV, or a
// box of the output for a TMA store. p_frag[2 c] holds row r, p_frag[2 c + 1] row r + 8, of
// 8-column group c. One stmatrix.x4 stores groups 2 j and 2 j + 1 of both rows: 4 instructions
// per thread instead of 16 st.shared.
__device__ __forceinline__ void store_tile_64x64(uint32_t box_addr, const uint32_t* p_frag) {
  // Unsigned, so that % and / are masks and shifts (a signed int needs sign fix-ups for them).
  const uint32_t ltid = static_cast<uint32_t>(opaque_tid());  // recomputed rather than kept live
  const uint32_t lane = ltid % 32;
  const uint32_t matrix = lane / 8;  // this lane gives the address of row lane % 8 of that matrix
  const uint32_t row = (ltid % 128) / 32 * 16 + (matrix & 1) * 8 + lane % 8;
  // Group 2 j + (matrix >> 1) of the row sits at 16-byte chunk (group ^ row) % 8 of its 128 bytes.
  // The box is 1024-byte aligned, so bits 4-6 of the address are that chunk, and for j > 0 the
  // address is the j = 0 address with j << 5 XORed in: one LOP3 each.
  const uint32_t addr0 = box_addr + row * 128 + ((((matrix >> 1) ^ row) % 8) << 4);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    stmatrix_x4(addr0 ^ (j << 5), p_frag[4 * j], p_frag[4 * j + 1], p_frag[4 * j + 2], p_frag[4 * j + 3]);
  }
}

// One part's share of the schedule: a row of tile_scheduler_metadata (docs/internals.md).
struct PartRange {
  int begin_req, begin_block, end_req, end_block, begin_chunk, num_iters;
  // False for an empty part (no request, or no blocks); the caller's whole thread block then
  // returns, before any barrier. Every field is loaded unconditionally (an empty row holds valid
  // integers too), so the loads are one memory round trip.
  __device__ __forceinline__ bool read(const DecodeParams& p, int part) {
    const int* md = p.tile_metadata + part * kMetadataWidth;
    begin_req = md[0];
    begin_block = md[1];
    end_req = md[2];
    end_block = md[3];
    begin_chunk = md[4];
    num_iters = md[6] - md[5];  // global blocks g1 - g0
    return begin_req >= 0 && num_iters > 0;
  }
};

// The (request, block) sequence a part walks; identical in every role so that the producer and
// both consumers agree on what lives in each pipeline stage.
struct PartCursor {
  int req, block, block_hi;

  __device__ __forceinline__ static int num_blocks(const DecodeParams& p, int r) {
    return (max(p.cache_seqlens[r], 0) + kPageSize - 1) / kPageSize;
  }
  __device__ __forceinline__ void start(const DecodeParams& p, int begin_req, int begin_block,
                                        int end_req, int end_block) {
    req = begin_req;
    block = begin_block;
    block_hi = begin_req == end_req ? end_block : num_blocks(p, begin_req);
  }
  // Next block; zero-length requests between begin_req and end_req are skipped.
  __device__ __forceinline__ void advance(const DecodeParams& p, int end_req, int end_block) {
    ++block;
    while (block >= block_hi && req < end_req) {
      ++req;
      block = 0;
      block_hi = req == end_req ? end_block : num_blocks(p, req);
    }
  }
};

// How many chunks (parts) request `req` is split into; 1 = its output goes straight to `out` in
// q's dtype, more = fp32 partials that the combine kernel merges.
__device__ __forceinline__ int num_chunks_of(const DecodeParams& p, int req) {
  return p.num_splits[req + 1] - p.num_splits[req];
}

// Writes one warpgroup's share of the normalised output rows: kGroups groups of 8 columns (256
// columns, or 128 in a column-split thread block: the first 64 accumulators) from column
// col_begin on. (A run-time count would put a test in front of every store of this phase, the
// longest of a thread block's life at b = 1; docs/kernel-design.md 7.15.)
template <typename T, int kGroups = 32>
__device__ __forceinline__ void store_output_half(const DecodeParams& p, const float* o, int req,
                                                  int chunk_idx, int m_block, int kv_head,
                                                  int col_begin, const float (&inv_l)[2]) {
  const int ltid = opaque_tid();
  const int lane = ltid % 32;
  const int warp_in_wg = (ltid % 128) / 32;
  const int num_chunks = num_chunks_of(p, req);
  const int col0 = col_begin + 2 * (lane & 3);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int rho = m_block * kRowsPerTile + warp_in_wg * 16 + (lane >> 2) + 8 * h;
    if (rho >= p.rows) continue;
    const int t = rho / p.heads_per_kv;
    const int q_head = kv_head * p.heads_per_kv + rho % p.heads_per_kv;
    if (num_chunks == 1) {
      T* dst = reinterpret_cast<T*>(p.out) +
               ((static_cast<int64_t>(req) * p.s_q + t) * p.h_q + q_head) * kHeadDimV + col0;
#pragma unroll
      for (int i = 0; i < kGroups; ++i) {
        *reinterpret_cast<uint32_t*>(dst + 8 * i) =
            ElemOps<T>::pack(o[4 * i + 2 * h] * inv_l[h], o[4 * i + 2 * h + 1] * inv_l[h]);
      }
    } else {
      const int64_t slot = p.num_splits[req] + chunk_idx;
      float* dst = p.out_accum + ((slot * p.h_kv + kv_head) * p.rows + rho) * kHeadDimV + col0;
#pragma unroll
      for (int i = 0; i < kGroups; ++i) {
        *reinterpret_cast<float2*>(dst + 8 * i) =
            make_float2(o[4 * i + 2 * h] * inv_l[h], o[4 * i + 2 * h + 1] * inv_l[h]);
      }
    }
  }
}

// The same rows as store_output_half, normalised and packed, into boxes 4 half .. 4 half + 3 of
// `staging` (64 rows x 64 columns each, the swizzled layout of a TMA box) for a TMA store: the
// seesaw's +tmaout epilogue (one bulk store of whole lines instead of 64 scattered 4-byte stores
// per thread; docs/kernel-design.md 7.13).
template <typename T>
__device__ __forceinline__ void stage_output_half(uint8_t* staging, const float* o, int half,
                                                  const float (&inv_l)[2]) {
#pragma unroll
  for (int box = 0; box < 4; ++box) {
    uint32_t frag[16];
#pragma unroll
    for (int c = 0; c < 8; ++c) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int i = 4 * (8 * box + c) + 2 * h;
        frag[2 * c + h] = ElemOps<T>::pack(o[i] * inv_l[h], o[i + 1] * inv_l[h]);
      }
    }
    store_tile_64x64(smem_addr(staging + (4 * half + box) * kBoxBytes), frag);
  }
}

// +tmaq, thread 0 only: after its TMA stores of the previous output (+tmaout) have read the Q
// tile's shared memory, loads the 9 Q boxes of row tile m_block of request `req` on `q_bar` (rows
// past the tensor's end arrive as zeros). The caller's threads then wait on q_bar.
__device__ __forceinline__ void issue_q_tile_tma(uint8_t* sQ, const CUtensorMap* q_map, uint64_t* q_bar,
                                                 int m_block, int req) {
  bulk_wait_group_read_all();
  mbar_arrive_expect_tx(q_bar, kTileBytes);
  for (int box = 0; box < kNumBoxes; ++box)
    tma_load_3d(sQ + box * kBoxBytes, q_map, q_bar, box * kBoxDim, m_block * kRowsPerTile, req);
}

// +tmaout, thread 0 only: writes the 8 staged output boxes (stage_output_half) of row tile m_block
// of request `req` with TMA stores (rows past the tensor's end are not written), as one bulk group.
__device__ __forceinline__ void issue_output_tile_tma(const uint8_t* staging, const CUtensorMap* out_map,
                                                      int m_block, int req) {
  for (int box = 0; box < 8; ++box)
    tma_store_3d(out_map, smem_addr(staging + box * kBoxBytes), box * kBoxDim, m_block * kRowsPerTile, req);
  bulk_commit_group();
}

// Loads kBoxes 64-column boxes of one request's 64-row Q tile, starting at column box
// `first_box`, into shared memory at sQ (box after box, 8 KiB each) in the swizzled layout TMA
// would produce, so the same descriptors describe Q and K. Rows past `rows` are zero. kThreads
// threads share the 64 x (8 kBoxes) 16-byte chunks, all loads in flight at once (one memory round
// trip). The caller fences and synchronises. The main kernels load all 9 boxes (load_q_tile);
// the experimental qreg kernel stages one box at a time.
// Each thread keeps one row (kThreadsPerRow threads per row, neighbours on neighbouring chunks), so
// the row's query token and head, which need a division by the run-time heads_per_kv, are worked
// out once and every load and store after that is a constant offset. With a row per chunk instead
// (chunk idx / 72), those divisions were unrolled 36 times: ~30 KB of the serial kernel's code,
// which a thread block at small batch runs once and fetches cold (docs/kernel-design.md 7.17).
template <typename T, int kThreads, int kBoxes>
__device__ __forceinline__ void load_q_boxes(const DecodeParams& p, uint8_t* sQ, int req, int m_block, int kv_head,
                                             int first_box) {
  constexpr int kChunksPerRow = kBoxes * kBoxDim / 8;   // 16-byte chunks; 8 per 128-byte box row
  constexpr int kThreadsPerRow = kThreads / kRowsPerTile;
  constexpr int kPerThread = kChunksPerRow / kThreadsPerRow;  // 36 (all boxes, 128 threads)
  static_assert(kThreads % kRowsPerTile == 0 && 8 % kThreadsPerRow == 0 && kChunksPerRow % kThreadsPerRow == 0,
                "the threads of a row share its chunks evenly, none crossing a box");
  const int ltid = opaque_tid();  // < kThreads: the loading threads are the first kThreads
  const int row = ltid / kThreadsPerRow;
  const int first_chunk = ltid % kThreadsPerRow;  // this thread's chunks: first_chunk + u * kThreadsPerRow
  const int rho = m_block * kRowsPerTile + row;
  const bool valid = rho < p.rows;
  const T* q_row = reinterpret_cast<const T*>(p.q);
  if (valid) {
    const int t = rho / p.heads_per_kv;
    const int q_head = kv_head * p.heads_per_kv + rho % p.heads_per_kv;
    q_row += static_cast<int64_t>(req) * p.q_stride_b + static_cast<int64_t>(t) * p.q_stride_s +
             static_cast<int64_t>(q_head) * p.q_stride_h + first_box * kBoxDim + first_chunk * 8;
  }
  uint4 v[kPerThread];
#pragma unroll
  for (int u = 0; u < kPerThread; ++u) {
    v[u] = valid ? __ldg(reinterpret_cast<const uint4*>(q_row + u * kThreadsPerRow * 8)) : make_uint4(0, 0, 0, 0);
  }
  // Chunk c of a box row sits at 16-byte slot c ^ (row % 8) (the 128-byte swizzle).
  uint8_t* s_row = sQ + row * 128;
  const int swizzle = (row & 7) ^ first_chunk;  // chunk u * kThreadsPerRow has no bit in common with first_chunk
#pragma unroll
  for (int u = 0; u < kPerThread; ++u) {
    const int chunk = u * kThreadsPerRow;  // of this thread's row, less first_chunk
    *reinterpret_cast<uint4*>(s_row + (chunk / 8) * kBoxBytes + (((chunk % 8) ^ swizzle) << 4)) = v[u];
  }
}
template <typename T, int kThreads>
__device__ __forceinline__ void load_q_tile(const DecodeParams& p, uint8_t* sQ, int req, int m_block, int kv_head) {
  load_q_boxes<T, kThreads, kNumBoxes>(p, sQ, req, m_block, kv_head, 0);
}

// A barrier of one warpgroup alone (128 threads). Normally a named barrier; in a racecheck build
// (-DFLASHMLA_RACECHECK_BARRIERS, scripts/gpu_racecheck.sh) an mbarrier: compute-sanitizer's
// racecheck reports correct cross-warpgroup handoffs as hazards as soon as a warpgroup-only named
// barrier is in the block, and not with an mbarrier (scripts/racecheck_toy.cu, modes 8 and 9).
#ifdef FLASHMLA_RACECHECK_BARRIERS
constexpr bool kRacecheckBarriers = true;
#else
constexpr bool kRacecheckBarriers = false;
#endif
struct WarpgroupBarrier {
  int id;         // named barrier id (normal build)
  uint64_t* bar;  // mbarrier with 128 expected arrivals (racecheck build)
  uint32_t parity = 0;
  __device__ __forceinline__ void sync() {
    if constexpr (kRacecheckBarriers) {
      mbar_arrive(bar);
      mbar_wait(bar, parity);
      parity ^= 1;
    } else {
      named_barrier_sync(id, 128);
    }
  }
  // sync() that also tells whether `pred` was nonzero in all 128 threads (one answer for the whole
  // warpgroup). The normal build reduces on the named barrier (bar.red.and; `named_id` is `id`,
  // passed by a caller that knows it as a constant, so the instruction keeps an immediate id); the
  // racecheck build passes one flag per warp through `slots` (4 floats in shared memory; consecutive
  // calls must alternate between two such sets, so that a set is rewritten only after the sync() in
  // between has ordered every read of it).
  __device__ __forceinline__ bool all(int pred, float* slots, int named_id) {
    if constexpr (kRacecheckBarriers) {
      const int lane = opaque_tid() % 32;
      const int warp = (opaque_tid() % 128) / 32;
      const int warp_all = __all_sync(0xffffffff, pred);
      if (lane == 0) st_shared_f32(smem_addr(slots + warp), warp_all ? 1.f : 0.f);
      sync();
      float every = 1.f;
#pragma unroll
      for (int w = 0; w < 4; ++w) every = fminf(every, ld_shared_f32(smem_addr(slots + w)));
      return every > 0.5f;
    } else {
      return named_barrier_all(named_id, 128, pred) != 0;
    }
  }
};

// The same, always a named barrier (an id known at the call site stays an immediate operand).
struct NamedWarpgroupBarrier {
  int id;
  __device__ __forceinline__ void sync() { named_barrier_sync(id, 128); }
};

// Rows past the sequence end may hold anything (NaN included). The softmax masks their scores,
// but P = 0 times V = NaN is still NaN, so one warpgroup zeroes those rows of the first
// `num_boxes` boxes of a K tile, then fences them for the async proxy and syncs its 128 threads
// (`sync()`: a WarpgroupBarrier or a named barrier of that warpgroup).
template <typename Sync>
__device__ __forceinline__ void zero_tail_rows(uint8_t* tile, int valid_rows, int num_boxes, Sync& sync) {
  const int zero_rows = kPageSize - valid_rows;
  for (int idx = opaque_tid() % 128; idx < zero_rows * num_boxes * 8; idx += 128) {
    const int box = idx / (zero_rows * 8);
    const int rem = idx % (zero_rows * 8);
    const int row = valid_rows + rem / 8;
    *reinterpret_cast<uint4*>(tile + box * kBoxBytes + row * 128 + (rem % 8) * 16) = make_uint4(0, 0, 0, 0);
  }
  fence_proxy_async_smem();
  sync.sync();
}

// lse of this thread's two rows (called by one lane per quad): natural log, +inf for an empty
// row of a request with one chunk (its output is 0), -inf for an empty partial.
__device__ __forceinline__ void store_lse(const DecodeParams& p, int req, int chunk_idx, int m_block, int kv_head,
                                          const int* row_in_tile, const float* row_max, const float* total_l) {
  const int num_chunks = num_chunks_of(p, req);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int rho = m_block * kRowsPerTile + row_in_tile[h];
    if (rho >= p.rows) continue;
    const float l = total_l[h];
    const float lse_val = (row_max[h] + __log2f(l)) * 0.6931471805599453f;
    if (num_chunks == 1) {
      const int t = rho / p.heads_per_kv;
      const int q_head = kv_head * p.heads_per_kv + rho % p.heads_per_kv;
      p.lse[(static_cast<int64_t>(req) * p.h_q + q_head) * p.s_q + t] = l > 0.f ? lse_val : INFINITY;
    } else {
      const int64_t slot = p.num_splits[req] + chunk_idx;
      p.lse_accum[(slot * p.h_kv + kv_head) * p.rows + rho] = l > 0.f ? lse_val : -INFINITY;
    }
  }
}

// Inner-loop schedules (DecodeParams::schedule bits 0-1; docs/kernel-design.md section 3, 6).
constexpr int kScheduleSerial = 1;
constexpr int kSchedulePipelined = 2;
constexpr int kScheduleChained = 3;
// DecodeParams::schedule flag bits.
constexpr int kFlagRendezvous = 4;     // bar.sync on both sides of the P handoff
constexpr int kFlagSplitCombine = 8;   // combine kernel splits each row's 512 columns over 4 warps
constexpr int kFlagL2Keep = 32;        // K pages loaded with L2 evict_normal instead of evict_first
constexpr int kFlagEarlyRefill = 64;   // seesaw: WG0 refills stage 0's V left before its second PV
constexpr int kFlagL2Promo128 = 128;   // K tensor map with 128-byte L2 promotion (mla_launch.cu)
constexpr int kFlagWholeTile = 256;   // wait for all 9 boxes of a page before S (A/B switch; default: box by box)
constexpr int kFlagAhead = 512;       // seesaw: the next pair's S queued behind each warpgroup's last PV
// Timing probes of the seesaw kernel (wrong output by design; docs/kernel-design.md 7.12): what
// the kernel's time would be if the K refills cost nothing (+noload: no refill is issued, S and
// PV read whatever the stage holds) or never missed L2 (+l2hot: every refill reloads the part's
// first page, which its m-block thread blocks keep hot in L2).
constexpr int kFlagProbeNoLoad = 1024;
constexpr int kFlagProbeL2Hot = 2048;
// What a split request's ends cost (docs/kernel-design.md 7.19): +nopartial skips the seesaw's
// fp32 partial stores (lse still written), +nocombine does not launch the combine kernel.
constexpr int kFlagProbeNoPartial = 8192;
constexpr int kFlagProbeNoCombine = 16384;
// seesaw: launch the m-block thread blocks of one part (which read the same pages) in clusters of
// two, so that each pair runs at the same time on one GPC (an experiment; docs/kernel-design.md 7.12).
constexpr int kFlagCluster = 4096;
// One kv head only (the host clears them otherwise, mla_launch.cu): +tmaout stages a whole
// request's bf16/fp16 output in the Q tile's shared memory and writes it with TMA stores;
// +tmaq loads the Q tile with TMA (9 boxes on one mbarrier) instead of 16-byte loads by every
// thread. Seesaw (docs/kernel-design.md 7.13) and serial family (7.25; not the column split).
constexpr int kFlagTmaOut = 32768;
constexpr int kFlagTmaQ = 65536;
// serial only: launch mla_decode_colsplit_kernel, which follows the scheduler's column-split mark:
// where the metadata is marked, two thread blocks share each part and row tile, each computing S
// for the whole tile but PV and the output for only 256 of the 512 columns (128 per warpgroup). At
// small batches, where half the SMs would idle, this halves each thread block's PV and its fp32
// partial store, the two longest phases of its life after S (docs/kernel-design.md 7.16).
constexpr int kFlagColSplit = 131072;
// seesaw +ahead: the steady-state pair step (one with a next pair behind it) runs a softmax without
// any masking code, where that is exact: without causal masking, or with s_q <= kUnmaskedMaxSq, a
// block that has two more blocks of its request behind it lies below every row's key limit; and
// the scale is positive. Same values as without the flag (docs/kernel-design.md 7.20).
constexpr int kFlagNoMask = 262144;
constexpr int kUnmaskedMaxSq = 66;
// seesaw +ahead (an experiment): WG0 queues the next pair's S only after WG1 has issued its
// second PV (so that PV_B,right, which frees stage 1's right half, is not queued behind S_A').
constexpr int kFlagPVBFirst = 524288;
// seesaw: the combine merges each split request as soon as all its chunks are stored (counted in
// DecodeParams::chunk_done), while the main kernel's last thread blocks still run, instead of
// after the whole main grid (docs/kernel-design.md 7.22). Same values as without the flag.
constexpr int kFlagOverlapCombine = 1048576;
// seesaw +ahead with +tmaout +tmaq: the part's next request's Q tile is loaded as soon as this
// request's last S has retired (during its last step, not after its output), and a whole request's
// output is staged in its last block's K stage instead of the Q tile; that stage's refill (the
// next request's second block) is issued once the output's TMA store has read it
// (docs/kernel-design.md 7.28). Same values as without the flag.
constexpr int kFlagEarlyQ = 2097152;
// seesaw +ahead +nomask ("auto" adds it with +sbrightfirst from 256 query rows per kv head): in the
// unmasked steady state WG1 takes block B's row max before its statistics wait; where block B keeps
// the running max m0 in every row of the tile (a warpgroup vote, with no wgmma in flight), s1 is 1
// everywhere, O_R needs no rescale between its two PVs, and PV_B,right is queued right behind
// PV_A,right instead of after PV_A,right has retired and the next A page's refill has been issued.
// Same values as without the flag. Alone it is 3-4% slower (PV_B,right now runs before PV_B,left,
// so stage 1's right half is refilled first while S_B' starts on the left half): with
// kFlagSBRightFirst 1.5-3.5% faster (docs/kernel-design.md 7.32).
constexpr int kFlagChainPV = 4194304;
// with +chainpv: where WG1 chained its PVs, the next S_B takes stage 1's right boxes first (WG1
// refills them as soon as PV_B,right retires), then the left and rope boxes (another summation
// order of S: not the same bits as without it).
constexpr int kFlagSBRightFirst = 8388608;

// L2 policy of the K-page loads: evict_first, or evict_normal with +l2keep, which `auto` adds
// when one row tile serves a kv head (2.5-3.5% faster there; slower with two or more tiles, whose
// thread blocks read each page in turn: docs/kernel-design.md 5.3).
__device__ __forceinline__ uint64_t kv_load_policy(const DecodeParams& p) {
  return (p.schedule & kFlagL2Keep) ? make_evict_normal_policy() : make_evict_first_policy();
}

// One thread block's work: the part `range` (not empty) for row tile m_block of kv head blockIdx.y.
// kSplitCapable (serial only) adds the column split, chosen at run time: with `split`, PV and the
// output for columns 256 col_half .. 256 col_half + 255 only (128 per warpgroup, N = 128 wgmmas
// on the first 64 accumulators); the other half is another thread block's, which computes the
// same S. One body for both, so the kernel's code is not duplicated.
template <typename T, int kSchedule, bool kSplitCapable>
__device__ __forceinline__ void decode_part(const CUtensorMap& kv_map, const CUtensorMap& q_map,
                                            const CUtensorMap& out_map, const DecodeParams& p,
                                            const PartRange& range, int m_block, int col_half, bool split) {
  static_assert(!kSplitCapable || kSchedule == kScheduleSerial, "+colsplit is a variant of the serial schedule");
  split = kSplitCapable && split;
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) &
                                             ~static_cast<uintptr_t>(1023));
  uint8_t* sQ = smem + kSmemQ;
  uint8_t* sK = smem + kSmemK;
  uint8_t* sP = smem + kSmemP;
  float* sScale = reinterpret_cast<float*>(smem + kSmemScale);
  float* sInvL = reinterpret_cast<float*>(smem + kSmemInvL);
  uint64_t* full_bar = reinterpret_cast<uint64_t*>(smem + kSmemBars);
  uint64_t* empty_bar = full_bar + kNumStages * kNumBoxes;
  uint64_t* wg0_bar = empty_bar + kNumStages;  // WarpgroupBarrier mbarriers (racecheck build)
  uint64_t* q_bar = wg0_bar + 2;                // +tmaq: the Q tile's 9 boxes

  const int kv_head = blockIdx.y;
  const int tid = threadIdx.x;
  const int wg = tid / 128;
  // This warpgroup's first output column, and where its V columns start in a K tile (64 per box).
  const int col_begin = split ? col_half * 256 + wg * 128 : wg * 256;
  const uint32_t v_offset = col_begin / kBoxDim * kBoxBytes;
  const bool writes_lse = !split || col_half == 0;  // both halves hold the same lse
  // +tmaout / +tmaq (7.25): a whole request's output, and the Q tile, by TMA (never in the
  // column-split kernel, whose thread blocks own half the columns).
  const bool tma_out = !kSplitCapable && (p.schedule & kFlagTmaOut) != 0;
  const bool tma_q = !kSplitCapable && (p.schedule & kFlagTmaQ) != 0;
  // A warpgroup's output rows: 256 columns, or the first 128 (64 accumulators) when split.
  // With +tmaout a whole request's rows go through the Q tile (free: every S of the request has
  // retired, WG0 waited for its own and WG1 got the last P after that): each warpgroup stages its
  // half, both meet, and thread 0 writes the 8 boxes with TMA stores. Whoever next writes the
  // tile (thread 0's Q load, or WG0 after thread 0) first waits until those stores have read it.
  auto store_output = [&](const float* o, int req, int chunk_idx, const float (&inv_l)[2]) {
    if (tma_out && num_chunks_of(p, req) == 1) {
      stage_output_half<T>(sQ, o, wg, inv_l);
      fence_proxy_async_smem();
      named_barrier_sync(kBarOutStaged, kNumThreads);
      if (tid == 0) issue_output_tile_tma(sQ, &out_map, m_block, req);
    } else if (split) store_output_half<T, 16>(p, o, req, chunk_idx, m_block, kv_head, col_begin, inv_l);
    else store_output_half<T>(p, o, req, chunk_idx, m_block, kv_head, col_begin, inv_l);
  };
  // O *= the row factors; only the 64 accumulators in use when split (no wgmma is in flight here).
  auto rescale_accumulators = [&](float* o, const float* rescale) {
    if (split) rescale_rows<64>(o, rescale);
    else rescale_rows(o, rescale);
  };
  const int lane = tid % 32;
  const int warp_in_wg = (tid % 128) / 32;
  const int begin_req = range.begin_req, begin_block = range.begin_block, end_req = range.end_req;
  const int end_block = range.end_block, begin_chunk = range.begin_chunk, num_iters = range.num_iters;

  // Let the combine kernel (launched with programmatic dependent launch) be scheduled now; it
  // waits for this whole grid's completion before reading any result.
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  if (tid == 0) {
    for (int s = 0; s < kNumStages; ++s) {
      for (int box = 0; box < kNumBoxes; ++box) mbar_init(&full_bar[s * kNumBoxes + box], 1);
      mbar_init(&empty_bar[s], kNumThreads);
    }
    if constexpr (kRacecheckBarriers) {
      mbar_init(&wg0_bar[0], 128);
      mbar_init(&wg0_bar[1], 128);
    }
    mbar_init(q_bar, 1);
    mbar_fence_init();
  }
  __syncthreads();

  const float scale_log2 = p.softmax_scale * 1.4426950408889634f;
  // barrier mode of the WG0 <-> WG1 handoff (always bar.sync in a racecheck build, which reports
  // bar.arrive -> bar.sync handoffs as hazards: scripts/racecheck_toy.cu, mode 0)
  const bool rendezvous = kRacecheckBarriers || (p.schedule & kFlagRendezvous) != 0;
  const bool whole_tile = (p.schedule & kFlagWholeTile) != 0;
  const int row_in_tile[2] = {warp_in_wg * 16 + (lane >> 2), warp_in_wg * 16 + (lane >> 2) + 8};

  PartCursor cur;
  cur.start(p, begin_req, begin_block, end_req, end_block);

  if (wg == 0) {
    // ------------------------------------------------------------------ WG0: QK^T, softmax, PV left
    const uint32_t q_desc_addr = smem_addr(sQ);
    WarpgroupBarrier q_loaded{kBarQLoaded, &wg0_bar[0]};
    WarpgroupBarrier tail_zeroed{kBarTailZeroed, &wg0_bar[1]};

    // Issues S = Q K^T over 576 dims (9 boxes x 4 k-steps of 16), each box as soon as it has
    // landed (every box has its own mbarrier), so S starts while the rest of the page is still
    // arriving. With +wholetile (an A/B switch) all boxes are waited for first. A request's last,
    // partial block waits for the whole tile, to zero its tail rows before any wgmma reads it.
    auto issue_qk = [&](float* s_acc, int stage, int it_idx, int seqlen, int block, bool last) {
      uint8_t* tile = sK + stage * kTileBytes;
      uint64_t* bars = &full_bar[stage * kNumBoxes];
      const uint32_t parity = (it_idx >> 1) & 1;
      const int valid_rows = seqlen - block * kPageSize;
      const bool zero_tail = last && valid_rows < kPageSize;
      // (the pipelined experiment keeps whole tiles: per-box waits cost it 12 bytes of spills)
      if (whole_tile || zero_tail || kSchedule == kSchedulePipelined) wait_all_boxes(bars, parity);
      if (zero_tail) zero_tail_rows(tile, valid_rows, kNumBoxes, tail_zeroed);
      if constexpr (kSchedule == kSchedulePipelined) {
        issue_qk_wgmmas<T>(s_acc, q_desc_addr, smem_addr(tile));
      } else {
        issue_qk_as_boxes_land<T>(s_acc, q_desc_addr, smem_addr(tile), bars, parity);
      }
    };
    // The chained schedule splits issue_qk in two: wait_tile (mbarrier waits and tail zeroing,
    // which branch) runs while no wgmma is in flight, and issue_qk_math is queued on the tensor
    // pipe right behind the PV of the previous block.
    auto wait_tile = [&](int stage, int it_idx, int seqlen, int block, bool last) {
      uint8_t* tile = sK + stage * kTileBytes;
      wait_all_boxes(&full_bar[stage * kNumBoxes], (it_idx >> 1) & 1);
      const int valid_rows = seqlen - block * kPageSize;
      if (last && valid_rows < kPageSize) zero_tail_rows(tile, valid_rows, kNumBoxes, tail_zeroed);
    };
    auto issue_qk_math = [&](float* s_acc, int stage) {
      issue_qk_wgmmas<T>(s_acc, q_desc_addr, smem_addr(sK + stage * kTileBytes));
    };
    // Online softmax in base 2 on this thread's two rows (online_softmax_step above), then the
    // row sums and P as wgmma A-operand registers (k-step k covers columns 16k..16k+15).
    auto softmax = [&](float* s_acc, uint32_t* p_frag, float* rescale, float* row_max, float* row_sum,
                       const int* key_limit, int block) {
      float p_sum[2];
      online_softmax_step(s_acc, row_max, rescale, p_sum, key_limit, block, scale_log2, lane);
#pragma unroll
      for (int h = 0; h < 2; ++h) row_sum[h] = row_sum[h] * rescale[h] + p_sum[h];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        p_frag[4 * k + 0] = ElemOps<T>::pack(s_acc[8 * k + 0], s_acc[8 * k + 1]);
        p_frag[4 * k + 1] = ElemOps<T>::pack(s_acc[8 * k + 2], s_acc[8 * k + 3]);
        p_frag[4 * k + 2] = ElemOps<T>::pack(s_acc[8 * k + 4], s_acc[8 * k + 5]);
        p_frag[4 * k + 3] = ElemOps<T>::pack(s_acc[8 * k + 6], s_acc[8 * k + 7]);
      }
    };
    // Hands P (swizzled K-major, like a TMA tile), the rescale factors and, at a request's last
    // block, 1/rowsum to WG1. P_FREE is a rendezvous of both warpgroups: WG1 has finished the
    // previous PV (and its reads of sScale/sInvL) before anything here is overwritten.
    auto hand_off = [&](const uint32_t* p_frag, const float* rescale, bool last, const float* row_sum,
                        float* total_l, float* inv_l) {
      if (last) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float l = row_sum[h];
          l += __shfl_xor_sync(0xffffffff, l, 1);
          l += __shfl_xor_sync(0xffffffff, l, 2);
          total_l[h] = l;
          inv_l[h] = l > 0.f ? 1.f / l : 0.f;
        }
      }
      named_barrier_sync(kBarPFree, kNumThreads);
      store_tile_64x64(smem_addr(sP), p_frag);
      if ((lane & 3) == 0) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          st_shared_f32(smem_addr(sScale + row_in_tile[h]), rescale[h]);
          if (last) st_shared_f32(smem_addr(sInvL + row_in_tile[h]), inv_l[h]);
        }
      }
      fence_proxy_async_smem();
      // bar.arrive (release) suffices for WG1's bar.sync to see these writes; the rendezvous
      // variant makes WG0 wait for WG1 as well (an experiment for compute-sanitizer racecheck,
      // which reports hazards on this handoff either way; see docs/kernel-design.md).
      if (rendezvous) named_barrier_sync(kBarPReady, kNumThreads);
      else named_barrier_arrive(kBarPReady, kNumThreads);
    };
    // Exact shortcut of rescale_accumulators: once a row's maximum has settled its factor is exactly 1.0f,
    // and x * 1.0f == x, so a warp whose 16 rows all have factor 1 skips the 128 multiplies.
    // The branch is warp-uniform and no wgmma is in flight here.
    auto rescale_o_unless_unit = [&](float* o, const float* rescale) {
      if (!__all_sync(0xffffffff, rescale[0] == 1.f && rescale[1] == 1.f)) rescale_accumulators(o, rescale);
    };
    auto issue_pv = [&](float* o, const uint32_t* p_frag, int stage) {
      issue_pv_wgmmas_regs<T>(o, p_frag, smem_addr(sK + stage * kTileBytes) + v_offset);
    };
    // The serial schedule's PV, waited for; N = 128 in a column-split thread block. Each branch
    // waits for its own wgmmas, so none is in flight across the branch (ptxas would serialise).
    auto issue_pv_and_wait = [&](float* o, const uint32_t* p_frag, int stage) {
      const uint32_t v_addr = smem_addr(sK + stage * kTileBytes) + v_offset;
      if (split) {
        issue_pv_wgmmas_regs<T, 128>(o, p_frag, v_addr);
        wgmma_wait<0>();
      } else {
        issue_pv_wgmmas_regs<T>(o, p_frag, v_addr);
        wgmma_wait<0>();
      }
    };
    // Same, with P read back from shared memory (where hand_off put it for WG1): frees the 16
    // P registers while the PV is in flight, which the pipelined schedule needs to avoid spills.
    auto issue_pv_from_smem = [&](float* o, int stage) {
      issue_pv_wgmmas_smem<T>(o, smem_addr(sP), smem_addr(sK + stage * kTileBytes) + v_offset);
    };

    int it = 0;  // position in the part's block sequence = pipeline slot counter
    uint32_t q_parity = 0;
#pragma unroll 1
    for (int req = begin_req; req <= end_req; ++req) {
      const int seqlen = p.cache_seqlens[req];
      const int block_lo = req == begin_req ? begin_block : 0;
      const int block_hi = req == end_req ? end_block : PartCursor::num_blocks(p, req);
      if (block_lo >= block_hi) continue;  // zero-length request
      if (tma_q) {
        // By TMA (thread 0, after its stores of the previous output have read the tile); rows
        // past the tensor's end arrive as zeros.
        if (tid == 0) issue_q_tile_tma(sQ, &q_map, q_bar, m_block, req);
        mbar_wait(q_bar, q_parity);
        q_parity ^= 1;
      } else {
        if (tma_out) {  // the previous output's TMA stores must have read the tile
          if (tid == 0) bulk_wait_group_read_all();
          q_loaded.sync();
        }
        load_q_tile<T, 128>(p, sQ, req, m_block, kv_head);  // WG0 alone
        fence_proxy_async_smem();
        q_loaded.sync();
      }
      float o[128];
#pragma unroll
      for (int i = 0; i < 128; ++i) o[i] = 0.f;
      float row_max[2], row_sum[2];
      int key_limit[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        row_max[h] = -INFINITY;
        row_sum[h] = 0.f;
        const int rho = m_block * kRowsPerTile + row_in_tile[h];
        const int t = min(rho / p.heads_per_kv, p.s_q - 1);
        key_limit[h] = p.causal ? seqlen - (p.s_q - 1 - t) : seqlen;
      }
      float inv_l[2] = {0.f, 0.f};
      float total_l[2] = {0.f, 0.f};
      float s_acc[32];
      uint32_t p_frag[16];
      float rescale[2];

      if constexpr (kSchedule == kScheduleSerial) {
        // Serial: each block's PV is issued and waited for before the next QK^T, so a K stage is
        // released as early as possible (what memory-bound shapes need).
#pragma unroll 1
        for (int block = block_lo; block < block_hi; ++block, ++it) {
          const int stage = it & 1;
          const bool last = block + 1 == block_hi;
          issue_qk(s_acc, stage, it, seqlen, block, last);
          wgmma_wait<0>();
          softmax(s_acc, p_frag, rescale, row_max, row_sum, key_limit, block);
          hand_off(p_frag, rescale, last, row_sum, total_l, inv_l);
          rescale_accumulators(o, rescale);
          issue_pv_and_wait(o, p_frag, stage);
          mbar_arrive(&empty_bar[stage]);
        }
      } else if constexpr (kSchedule == kScheduleChained) {
        // Chained: as serial, but QK^T(j+1) is queued on the tensor pipe right behind PV(j)
        // instead of after PV(j) has been waited for, so the pipe does not drain between blocks.
        // The K stage of block j is still released as soon as PV(j) is done (wait_group 1: groups
        // retire in order), exactly when the serial schedule releases it. Numerics are those of
        // serial: same instructions on the same values, only issue order and waits move.
        // wait_tile for block j+1 (a spin loop, and a branch for the tail) runs before PV(j) is
        // issued, so no branch sits between a wgmma and its wait (ptxas would serialise them).
        issue_qk(s_acc, it & 1, it, seqlen, block_lo, block_lo + 1 == block_hi);
        wgmma_wait<0>();
#pragma unroll 1
        for (int block = block_lo; block + 1 < block_hi; ++block, ++it) {
          const int stage = it & 1;
          softmax(s_acc, p_frag, rescale, row_max, row_sum, key_limit, block);
          hand_off(p_frag, rescale, false, row_sum, total_l, inv_l);
          rescale_o_unless_unit(o, rescale);
          wait_tile((it + 1) & 1, it + 1, seqlen, block + 1, block + 2 == block_hi);
          issue_pv_from_smem(o, stage);  // P is in sP already (hand_off); frees p_frag
          issue_qk_math(s_acc, (it + 1) & 1);
          wgmma_wait<1>();  // PV(j) done: release its stage now
          mbar_arrive(&empty_bar[stage]);
          wgmma_wait<0>();  // S(j+1) ready
        }
        softmax(s_acc, p_frag, rescale, row_max, row_sum, key_limit, block_hi - 1);
        hand_off(p_frag, rescale, true, row_sum, total_l, inv_l);
        rescale_o_unless_unit(o, rescale);
        issue_pv(o, p_frag, it & 1);
        wgmma_wait<0>();
        mbar_arrive(&empty_bar[it & 1]);
        ++it;
      } else {
        // Pipelined: QK^T of block j+1 is issued before PV of block j, and the softmax of j+1 runs
        // while PV(j) (both halves) keeps the tensor cores busy. The K stage of block j is
        // released only after that softmax, which is fine when compute, not memory, limits.
        issue_qk(s_acc, it & 1, it, seqlen, block_lo, block_lo + 1 == block_hi);
        wgmma_wait<0>();
        softmax(s_acc, p_frag, rescale, row_max, row_sum, key_limit, block_lo);
        hand_off(p_frag, rescale, block_lo + 1 == block_hi, row_sum, total_l, inv_l);
        // Steady state has no branch around in-flight wgmmas (ptxas would serialize them), so
        // the request's last block is peeled off below.
#pragma unroll 1
        for (int block = block_lo; block + 1 < block_hi; ++block, ++it) {
          const int stage = it & 1;
          rescale_accumulators(o, rescale);
          issue_qk(s_acc, (it + 1) & 1, it + 1, seqlen, block + 1, block + 2 == block_hi);
          issue_pv_from_smem(o, stage);
          wgmma_wait<1>();  // QK^T(j+1) done; PV(j) may still run
          softmax(s_acc, p_frag, rescale, row_max, row_sum, key_limit, block + 1);
          wgmma_wait<0>();  // PV(j) done: its K stage and sP may be reused
          mbar_arrive(&empty_bar[stage]);
          hand_off(p_frag, rescale, block + 2 == block_hi, row_sum, total_l, inv_l);
        }
        rescale_accumulators(o, rescale);
        issue_pv_from_smem(o, it & 1);
        wgmma_wait<0>();
        mbar_arrive(&empty_bar[it & 1]);
        ++it;
      }

      const int chunk_idx = req == begin_req ? begin_chunk : 0;
      store_output(o, req, chunk_idx, inv_l);
      if ((lane & 3) == 0 && writes_lse) store_lse(p, req, chunk_idx, m_block, kv_head, row_in_tile, row_max, total_l);
    }  // requests
    named_barrier_sync(kBarPFree, kNumThreads);  // pairs with WG1's last P_FREE arrival
    if (tma_out && tid == 0) bulk_wait_group_all();  // the shared memory stays until the stores are done
  } else {
    // ------------------------------------------------------------------ WG1: TMA producer, PV right
    const bool producer = tid == 128;
    PartCursor load_cur = cur;
    uint64_t policy = 0;
    auto issue_load = [&](int stage) {
      const int page = p.block_table[static_cast<int64_t>(load_cur.req) * p.block_table_stride +
                                     load_cur.block];
      uint8_t* dst = sK + stage * kTileBytes;
#pragma unroll
      for (int box = 0; box < kNumBoxes; ++box) {
        uint64_t* bar = &full_bar[stage * kNumBoxes + box];
        mbar_arrive_expect_tx(bar, kBoxBytes);
        tma_load_4d(dst + box * kBoxBytes, &kv_map, bar, box * kBoxDim, 0, kv_head, page, policy);
      }
      load_cur.advance(p, end_req, end_block);
    };
    if (producer) {
      prefetch_tensor_map(&kv_map);
      // evict_first, or evict_normal with +l2keep (kv_load_policy). (evict_normal for
      // num_m_blocks > 1, hoping sibling CTAs would hit in L2, measured 3-9% slower.)
      policy = kv_load_policy(p);
      for (int it = 0; it < kNumStages && it < num_iters; ++it) issue_load(it);
    }
    __syncwarp();
    // P buffer starts free. (With the rendezvous, WG1 meets WG0 at P_FREE at the top of each block
    // instead, and once more after its last request: never between a request's last PV and its
    // output, where with +tmaout both warpgroups meet at kBarOutStaged and a P_FREE rendezvous
    // pending there would wait for WG0 forever, which waits at kBarOutStaged for WG1.)
    if (!rendezvous) named_barrier_arrive(kBarPFree, kNumThreads);

    int it = 0;
#pragma unroll 1
    for (int req = begin_req; req <= end_req; ++req) {
      const int block_lo = req == begin_req ? begin_block : 0;
      const int block_hi = req == end_req ? end_block : PartCursor::num_blocks(p, req);
      if (block_lo >= block_hi) continue;
      float o[128];
#pragma unroll
      for (int i = 0; i < 128; ++i) o[i] = 0.f;
      float inv_l[2] = {0.f, 0.f};
#pragma unroll 1
      for (int block = block_lo; block < block_hi; ++block, ++it) {
        const int stage = it & 1;
        const bool last = block + 1 == block_hi;
        if (rendezvous) named_barrier_sync(kBarPFree, kNumThreads);  // WG1's previous PV is done
        named_barrier_sync(kBarPReady, kNumThreads);
        float rescale[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          rescale[h] = ld_shared_f32(smem_addr(sScale + row_in_tile[h]));
          if (last) inv_l[h] = ld_shared_f32(smem_addr(sInvL + row_in_tile[h]));
        }
        // Chained: skip the exact no-op of a unit rescale (as WG0 does; warp-uniform branch).
        const bool unit = kSchedule == kScheduleChained &&
                          __all_sync(0xffffffff, rescale[0] == 1.f && rescale[1] == 1.f);
        if (!unit) rescale_accumulators(o, rescale);
        const uint32_t v_addr = smem_addr(sK + stage * kTileBytes) + v_offset;
        if (split) {  // N = 128 in a column-split thread block; each branch waits for its wgmmas
          issue_pv_wgmmas_smem<T, 128>(o, smem_addr(sP), v_addr);
          wgmma_wait<0>();
        } else {
          issue_pv_wgmmas_smem<T>(o, smem_addr(sP), v_addr);
          wgmma_wait<0>();
        }
        // WG0 may overwrite sP/sScale/sInvL only after this point of WG1.
        if (!rendezvous) named_barrier_arrive(kBarPFree, kNumThreads);
        mbar_arrive(&empty_bar[stage]);
        if (producer && it + kNumStages < num_iters) {
          mbar_wait(&empty_bar[stage], (it >> 1) & 1);
          issue_load(stage);
        }
        __syncwarp();
      }
      const int chunk_idx = req == begin_req ? begin_chunk : 0;
      store_output(o, req, chunk_idx, inv_l);
    }
    if (rendezvous) named_barrier_sync(kBarPFree, kNumThreads);  // pairs with WG0's last one
  }
#endif
}

// The main kernel: one part per thread block.
template <typename T, int kSchedule>
__global__ void __launch_bounds__(kNumThreads, 1)
    mla_decode_kernel(const __grid_constant__ CUtensorMap kv_map, const __grid_constant__ CUtensorMap q_map,
                      const __grid_constant__ CUtensorMap out_map, const DecodeParams p) {
  PartRange range;
  if (!range.read(p, blockIdx.z)) return;  // empty part (uniform across the block, before any barrier)
  decode_part<T, kSchedule, false>(kv_map, q_map, out_map, p, range, blockIdx.x, 0, false);
}

// +colsplit: the serial kernel that follows the scheduler's column-split mark (column 7 of every
// metadata row, scheduler.py). Marked: thread blocks 2k and 2k + 1 share part k (the scheduler
// filled only the first half of the parts), each computing S for the whole tile and PV and the
// output for one half of the columns. Not marked: one part per thread block, as mla_decode_kernel.
// Both candidate rows and the mark are loaded at once (one memory round trip).
template <typename T>
__global__ void __launch_bounds__(kNumThreads, 1)
    mla_decode_colsplit_kernel(const __grid_constant__ CUtensorMap kv_map, const __grid_constant__ CUtensorMap q_map,
                               const __grid_constant__ CUtensorMap out_map, const DecodeParams p) {
  const int part = blockIdx.z;
  PartRange own, shared;
  const bool own_busy = own.read(p, part);
  const bool shared_busy = shared.read(p, part / 2);
  const bool split = p.tile_metadata[part * kMetadataWidth + kColColumnSplit] != 0;
  if (!(split ? shared_busy : own_busy)) return;  // empty part (uniform across the block)
  decode_part<T, kScheduleSerial, true>(kv_map, q_map, out_map, p, split ? shared : own, blockIdx.x, part % 2, split);
}

}  // namespace flashmla

#include "mla_decode_seesaw.cuh"

namespace flashmla {

// Whether each kernel's opt-in shared-memory size is set yet (once per process and kernel). In an
// unnamed namespace, not as static locals of launch_main_kernel: g++ gives a function template's
// static locals STB_GNU_UNIQUE binding, which the dynamic loader merges across every loaded copy
// of this library, so a second build loaded into the same process (scripts/ab_cuda.py's
// build/NAME variants) would skip the call for its own kernels and fail to launch.
namespace {
bool seesaw_configured[2] = {false, false};  // [ahead]
bool serial_configured[4] = {false, false, false, false};  // [schedule kind]; slot 0 serves +colsplit
}  // namespace

// The opt-in shared-memory size is a per-function attribute: set it on the first launch only.
template <typename Kernel>
cudaError_t opt_in_smem_once(Kernel kernel, int bytes, bool& configured) {
  if (configured) return cudaSuccess;
  const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  configured = err == cudaSuccess;
  return err;
}

template <typename T>
cudaError_t launch_main_kernel(const DecodeParams& params, const KernelMaps& maps, cudaStream_t stream) {
  const CUtensorMap& kv_map = maps.kv;
  dim3 grid(params.num_m_blocks, params.h_kv, params.num_sm_parts);
  if (params.schedule & kFlagSeesaw) {
    if (params.schedule & kFlagColSplit) return cudaErrorInvalidValue;  // serial only (refused in the binding)
    const int ahead = (params.schedule & kFlagAhead) ? 1 : 0;  // +ahead (mla_decode_seesaw.cuh)
    auto kernel = ahead ? mla_decode_seesaw_kernel<T, true> : mla_decode_seesaw_kernel<T, false>;
    if (cudaError_t err = opt_in_smem_once(kernel, seesaw::kSmemBytes, seesaw_configured[ahead]); err != cudaSuccess)
      return err;
    // Pairs of m-blocks (clusters of 4 do not all fit on the GPCs of an H100 at one block per
    // SM: 32 of 33 resident, a second wave, 1.8x slower; docs/kernel-design.md 7.12).
    if ((params.schedule & kFlagCluster) && params.num_m_blocks % 2 == 0) {
      cudaLaunchAttribute attr[1];
      attr[0].id = cudaLaunchAttributeClusterDimension;
      attr[0].val.clusterDim.x = 2;
      attr[0].val.clusterDim.y = 1;
      attr[0].val.clusterDim.z = 1;
      cudaLaunchConfig_t config = {grid, dim3(kNumThreads), static_cast<size_t>(seesaw::kSmemBytes), stream, attr, 1};
      return cudaLaunchKernelEx(&config, kernel, kv_map, maps.q, maps.out, params);
    }
    kernel<<<grid, kNumThreads, seesaw::kSmemBytes, stream>>>(kv_map, maps.q, maps.out, params);
    return cudaGetLastError();
  }
  // auto (0) = serial: the pipelined variant measured slower on every benchmark row (kernel-design.md).
  int kind = params.schedule & 3;
  if (kind == 0) kind = kScheduleSerial;
  const bool col_split = (params.schedule & kFlagColSplit) != 0;
  if (col_split && kind != kScheduleSerial) return cudaErrorInvalidValue;  // refused in the binding
  auto kernel = col_split                    ? mla_decode_colsplit_kernel<T>
                : kind == kSchedulePipelined ? mla_decode_kernel<T, kSchedulePipelined>
                : kind == kScheduleChained   ? mla_decode_kernel<T, kScheduleChained>
                                             : mla_decode_kernel<T, kScheduleSerial>;
  const int slot = col_split ? 0 : kind;  // kind 0 never launches: its slot serves +colsplit
  if (cudaError_t err = opt_in_smem_once(kernel, kSmemBytes, serial_configured[slot]); err != cudaSuccess) return err;
  kernel<<<grid, kNumThreads, kSmemBytes, stream>>>(kv_map, maps.q, maps.out, params);
  return cudaGetLastError();
}

}  // namespace flashmla
