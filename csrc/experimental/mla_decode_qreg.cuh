// EXPERIMENT, NOT BUILT (csrc/experimental/qreg_probe.cu compiles it for ptxas' report only).
// Status 2026-11-24 (session 8): ptxas still spills 32 bytes and serialises every wgmma (C7512)
// at the only register split the launch allows, 184 for WG0 and 160 for each PV warpgroup (the
// three must sum to at most 3 x 168: setmaxnreg.inc draws on the thread block's own pool, and
// the PV warpgroups spill ~1.5 KB at 152). At 192 for WG0 it compiles clean, and nvdisasm's
// live-register count then peaks at 178 (in the softmax) and is 173 at every QK^T wgmma, i.e.
// below 184; the spill at 184 stays the same 32 bytes (Q's first k-step fragment, swapped in
// from the stack around the first wgmma) with 96, 112 or 124 of Q's registers resident, with Q
// loaded by ldmatrix.x4 into aligned quads, with the shared-memory rope k-steps issued first and
// with the low-register softmax. So it is how ptxas places Q and S in this region, not the count
// of live values, and none of the source-level levers tried moves it (docs/kernel-design.md 6.5).
// It has never run; treat it as unverified.
//
// "qreg" schedule of the main kernel: three warpgroups and three K stages, beside the default
// kernel in mla_decode_kernel.cuh; same metadata, outputs and partials, same masking and NaN
// rules.
//
//   WG0 (threads   0-127): holds Q[:, 0:512] of its 64-row tile in registers as wgmma A
//                          fragments (32 k-steps x 4 registers) and computes S = Q K^T with the
//                          RS form (the rope part Q[:, 512:576] stays in shared memory), so
//                          QK^T reads about half the shared-memory bytes of the SS form; then the
//                          online softmax. P of block j is written into the rope box of K stage j,
//                          which only QK^T(j) reads and which is dead once it is done; the row
//                          factors go to per-stage slots. WG0 therefore never waits for the PV
//                          warpgroups to free a P buffer and can run up to three blocks ahead.
//   WG1 (threads 128-255): O[:, 0:256] += P V[:, 0:256]   (P and V from shared memory)
//   WG2 (threads 256-383): O[:, 256:512] += P V[:, 256:512]; thread 256 issues the TMA loads.
//
// Why three warpgroups: Q in registers does not fit beside an O half (128 registers) in one
// thread, and moving Q out of shared memory frees the space of a third K stage, so QK^T(j+1) on
// WG0 overlaps PV(j) on WG1/WG2 without delaying the refill of a stage (the reason the
// two-warpgroup "pipelined" schedule lost). setmaxnreg moves registers from the PV warpgroups
// (O half + bookkeeping) to WG0 (Q + S + softmax state).
#pragma once

#include "../mla_decode_kernel.cuh"

namespace flashmla {
namespace qreg {

constexpr int kThreads = 384;
constexpr int kStages = 3;
constexpr int kSmemK = 0;
constexpr int kSmemQRope = kSmemK + kStages * kTileBytes;       // 216 KiB of K stages
constexpr int kSmemScale = kSmemQRope + kBoxBytes;              // [stage][64] row factors
constexpr int kSmemInvL = kSmemScale + kStages * kRowsPerTile * 4;  // [stage][64] 1 / row sum
constexpr int kSmemBars = kSmemInvL + kStages * kRowsPerTile * 4;   // full[3], empty[3], p_ready[3]
constexpr int kSmemCursor = kSmemBars + 3 * kStages * 8;       // the producer's PartCursor
constexpr int kSmemKeyLimit = kSmemCursor + 16;                 // [64] per-row key limit (WG0)
constexpr int kSmemUsed = kSmemKeyLimit + kRowsPerTile * 4;
constexpr int kSmemBytes = kSmemUsed + 1024;                    // slack to align the base
static_assert(kSmemBytes <= 227 * 1024, "shared memory budget of one sm_90 thread block");
constexpr int kPBox = kNumBoxes - 1;  // the rope box of a K stage, reused for P after QK^T

// Register budgets per thread (multiples of 8). The launch gives every thread 65536 / 384 -> 168
// (a wgmma m64n256 needs at least 154 by itself, which rules out a fourth warpgroup); setmaxnreg
// moves registers between warpgroups, so the three budgets must sum to at most 3 x 168 (more would
// make setmaxnreg.inc wait forever). The PV warpgroups issue m64n128 wgmmas; their region still
// needs 160 beside the 128 accumulators (at 152 ptxas spills about 1.5 KB).
constexpr int kRegsQk = 184;
constexpr int kRegsPv = 160;
static_assert(kRegsQk + 2 * kRegsPv <= 3 * 168, "the pool the launch allocates");

// Named barrier ids (0 is __syncthreads); WG0 only.
constexpr int kBarTailZeroed = 4;
constexpr int kBarQLoaded = 5;

}  // namespace qreg

template <typename T>
__global__ void __launch_bounds__(qreg::kThreads, 1)
    mla_decode_qreg_kernel(const __grid_constant__ CUtensorMap kv_map, const DecodeParams p) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) &
                                             ~static_cast<uintptr_t>(1023));
  uint8_t* sK = smem + qreg::kSmemK;
  uint8_t* sQRope = smem + qreg::kSmemQRope;
  float* sScale = reinterpret_cast<float*>(smem + qreg::kSmemScale);
  float* sInvL = reinterpret_cast<float*>(smem + qreg::kSmemInvL);
  uint64_t* full_bar = reinterpret_cast<uint64_t*>(smem + qreg::kSmemBars);
  uint64_t* empty_bar = full_bar + qreg::kStages;
  uint64_t* p_ready_bar = empty_bar + qreg::kStages;

  const int m_block = blockIdx.x;
  const int kv_head = blockIdx.y;
  const int part = blockIdx.z;
  const int tid = threadIdx.x;
  const int wg = tid / 128;
  const int lane = tid % 32;
  const int warp_in_wg = (tid % 128) / 32;

  const int* md = p.tile_metadata + part * kMetadataWidth;
  const int begin_req = md[0];
  if (begin_req < 0) return;  // empty part (uniform across the block, before any barrier)
  const int begin_block = md[1];
  const int end_req = md[2];
  const int end_block = md[3];
  const int begin_chunk = md[4];
  const int num_iters = md[6] - md[5];
  if (num_iters <= 0) return;

  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  if (tid == 0) {
    for (int s = 0; s < qreg::kStages; ++s) {
      mbar_init(&full_bar[s], 1);
      mbar_init(&empty_bar[s], qreg::kThreads);
      mbar_init(&p_ready_bar[s], 128);
    }
    mbar_fence_init();
  }
  __syncthreads();

  const int row_in_tile[2] = {warp_in_wg * 16 + (lane >> 2), warp_in_wg * 16 + (lane >> 2) + 8};

  if (wg == 0) {
    // ------------------------------------------------------------ WG0: Q in registers, QK^T, softmax
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(qreg::kRegsQk));
    // Per-row key limits live in shared memory (WG0 only): registers here are for Q and S.
    int* sKeyLimit = reinterpret_cast<int*>(smem + qreg::kSmemKeyLimit);
    // This thread's two rows, recomputed where needed rather than kept live beside Q.
    auto wg0_row = [](int h) { const int t = opaque_tid(); return (t % 128) / 32 * 16 + (t % 32) / 4 + 8 * h; };
    int it = 0;
#pragma unroll 1
    for (int req = begin_req; req <= end_req; ++req) {
      const int seqlen = p.cache_seqlens[req];
      const int block_lo = req == begin_req ? begin_block : 0;
      const int block_hi = req == end_req ? end_block : PartCursor::num_blocks(p, req);
      if (block_lo >= block_hi) continue;  // zero-length request

      // Q[:, 0:512] as wgmma A fragments: registers 4k..4k+3 of k-step k hold (row g, cols
      // 16k+2c..+1), (row g+8, same), (row g, +8), (row g+8, +8); g = this thread's row among
      // its warp's 16, c = lane % 4: exactly what one ldmatrix.x4 returns. So each 64-column box
      // of Q is staged through the rope tile sQRope (swizzled like a TMA box) and read back with
      // 4 ldmatrix.x4; the rope part is loaded last and stays there for the shared-memory k-steps.
      // (Loaded straight from global memory into registers instead, ptxas at the 184-register
      // budget spilled the first k-step's fragment and serialised every wgmma.) Rows past `rows`
      // are zero. The previous request's QK^T is complete: WG0 waited for it.
      uint32_t q_frag[(kNumBoxes - 1) * 16];
      // One 64-column box of Q into sQRope (WG0 = threads 0-127 load it).
      auto stage_q_box = [&](int box) { load_q_boxes<T, 128, 1>(p, sQRope, req, m_block, kv_head, box); };
#pragma unroll
      for (int box = 0; box < kNumBoxes - 1; ++box) {
        stage_q_box(box);
        named_barrier_sync(qreg::kBarQLoaded, 128);
        const int ltid = opaque_tid();
        // ldmatrix.x4: lanes 0-7 address rows 0-7 (k 0-7), 8-15 rows 8-15, 16-23 rows 0-7 at k 8-15,
        // 24-31 rows 8-15 at k 8-15, of this warp's 16 rows.
        const int row = (ltid % 128) / 32 * 16 + (ltid % 8) + 8 * ((ltid % 32) / 8 % 2);
        const int k_chunk = (ltid % 32) / 16;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const uint32_t addr = smem_addr(sQRope) + row * 128 + (((2 * k + k_chunk) ^ (row & 7)) << 4);
          ldmatrix_x4(&q_frag[4 * (4 * box + k)], addr);
        }
        named_barrier_sync(qreg::kBarQLoaded, 128);  // before the next box overwrites the tile
      }
      stage_q_box(kNumBoxes - 1);
      fence_proxy_async_smem();
      named_barrier_sync(qreg::kBarQLoaded, 128);
      float row_max[2], row_sum[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        row_max[h] = -INFINITY;
        row_sum[h] = 0.f;
        const int rho = m_block * kRowsPerTile + wg0_row(h);
        const int t = min(rho / p.heads_per_kv, p.s_q - 1);
        // Each row is owned by the 4 lanes of a quad; they write the same value (no race), and
        // the same lanes read it back (the previous request's reads are program-ordered before).
        sKeyLimit[wg0_row(h)] = p.causal ? seqlen - (p.s_q - 1 - t) : seqlen;
      }
      __syncwarp();

#pragma unroll 1
      for (int block = block_lo; block < block_hi; ++block, ++it) {
        const int stage = it % qreg::kStages;
        const bool last = block + 1 == block_hi;
        uint8_t* tile = sK + stage * kTileBytes;
        mbar_wait(&full_bar[stage], (it / qreg::kStages) & 1);
        const int valid_rows = p.cache_seqlens[req] - block * kPageSize;
        if (last && valid_rows < kPageSize) {
          // Rows past the sequence end may hold NaN: P = 0 times V = NaN is NaN, so zero them
          // before the PV warpgroups read this stage (they wait for p_ready, after this).
          const int zero_rows = kPageSize - valid_rows;
          for (int idx = opaque_tid() % 128; idx < zero_rows * kNumBoxes * 8; idx += 128) {
            const int box = idx / (zero_rows * 8);
            const int rem = idx % (zero_rows * 8);
            const int row = valid_rows + rem / 8;
            *reinterpret_cast<uint4*>(tile + box * kBoxBytes + row * 128 + (rem % 8) * 16) = make_uint4(0, 0, 0, 0);
          }
          fence_proxy_async_smem();
          named_barrier_sync(qreg::kBarTailZeroed, 128);
        }
        float s_acc[32];
#pragma unroll
        for (int i = 0; i < 32; ++i) s_acc[i] = 0.f;
        wgmma_fence();
        {
          // The rope part (both operands in shared memory) first: it starts S from zero, so no
          // register-A wgmma has the non-accumulating form (with that form first, ptxas at the
          // 184-register budget spilled Q's first k-step and serialised every wgmma).
          const uint64_t k_desc = make_smem_desc_sw128(smem_addr(tile), 16, 1024);
          const uint64_t q_desc = make_smem_desc_sw128(smem_addr(sQRope), 16, 1024);
#pragma unroll
          for (int kk = 0; kk < 4; ++kk) {
            ElemOps<T>::qk(s_acc, q_desc + ((kk * 32) >> 4), k_desc + ((qreg::kPBox * kBoxBytes + kk * 32) >> 4), kk > 0);
          }
#pragma unroll
          for (int kk = 0; kk < (kNumBoxes - 1) * 4; ++kk) {
            const uint32_t off16 = ((kk / 4) * kBoxBytes + (kk % 4) * 32) >> 4;
            ElemOps<T>::qk_regs(s_acc, &q_frag[4 * kk], k_desc + off16, 1);
          }
        }
        wgmma_commit();
        wgmma_wait<0>();  // the rope box of this stage is dead from here on: P goes there

        // Online softmax in base 2, the step the other kernels use (online_softmax_step).
        float rescale[2];
        {
          const int key_limit[2] = {__float_as_int(ld_shared_f32(smem_addr(sKeyLimit + wg0_row(0)))),
                                   __float_as_int(ld_shared_f32(smem_addr(sKeyLimit + wg0_row(1))))};
          float p_sum[2];
          online_softmax_step<false, true>(s_acc, row_max, rescale, p_sum, key_limit, block,
                              p.softmax_scale * 1.4426950408889634f, lane);
#pragma unroll
          for (int h = 0; h < 2; ++h) row_sum[h] = row_sum[h] * rescale[h] + p_sum[h];
        }
        // P into the rope box of this stage (swizzled K-major, like a TMA tile); factors and, at
        // the request's last block, 1/rowsum into this stage's slots.
        {
          const int ltid = opaque_tid();
          const int row0 = (ltid % 128) / 32 * 16 + (ltid % 32) / 4;  // row1 = row0 + 8: same swizzle
          uint8_t* p_row0 = tile + qreg::kPBox * kBoxBytes + row0 * 128 + (ltid % 4) * 4;
#pragma unroll
          for (int i = 0; i < 8; ++i) {  // 16-byte chunk i = key columns 8i..8i+7
            const int chunk_off = (i ^ (row0 & 7)) << 4;
            *reinterpret_cast<uint32_t*>(p_row0 + chunk_off) = ElemOps<T>::pack(s_acc[4 * i], s_acc[4 * i + 1]);
            *reinterpret_cast<uint32_t*>(p_row0 + 8 * 128 + chunk_off) =
                ElemOps<T>::pack(s_acc[4 * i + 2], s_acc[4 * i + 3]);
          }
        }
        if (last) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            float l = row_sum[h];
            l += __shfl_xor_sync(0xffffffff, l, 1);
            l += __shfl_xor_sync(0xffffffff, l, 2);
            row_sum[h] = l;  // the full row sum from here on (lse below)
          }
        }
        if ((lane & 3) == 0) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            sScale[stage * kRowsPerTile + wg0_row(h)] = rescale[h];
            if (last) sInvL[stage * kRowsPerTile + wg0_row(h)] = row_sum[h] > 0.f ? 1.f / row_sum[h] : 0.f;
          }
        }
        fence_proxy_async_smem();
        mbar_arrive(&p_ready_bar[stage]);  // release: P and the factors are visible to WG1/WG2
        mbar_arrive(&empty_bar[stage]);    // WG0 is done with this stage
      }

      if ((lane & 3) == 0) {
        const int chunk_idx = req == begin_req ? md[4] : 0;
        const int rows[2] = {wg0_row(0), wg0_row(1)};
        store_lse(p, req, chunk_idx, m_block, kv_head, rows, row_max, row_sum);
      }
    }  // requests
  } else {
    // ------------------------------------------------------------ WG1 / WG2: PV halves; TMA producer
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(qreg::kRegsPv));
    const int half = wg - 1;
    const bool producer = tid == 256;
    // The producer's cursor lives in shared memory (only thread 256 touches it), so that the PV
    // warpgroups' register budget holds just O and the loop state.
    PartCursor* load_cur = reinterpret_cast<PartCursor*>(smem + qreg::kSmemCursor);
    auto issue_load = [&](int stage) {
      PartCursor cur = *load_cur;
      const int page = p.block_table[static_cast<int64_t>(cur.req) * p.block_table_stride + cur.block];
      uint8_t* dst = sK + stage * kTileBytes;
      const uint64_t policy = make_evict_first_policy();
      mbar_arrive_expect_tx(&full_bar[stage], kTileBytes);
#pragma unroll
      for (int box = 0; box < kNumBoxes; ++box) {
        tma_load_4d(dst + box * kBoxBytes, &kv_map, &full_bar[stage], box * kBoxDim, 0, kv_head, page, policy);
      }
      cur.advance(p, end_req, end_block);
      *load_cur = cur;
    };
    if (producer) {
      prefetch_tensor_map(&kv_map);
      PartCursor cur;
      cur.start(p, begin_req, begin_block, end_req, end_block);
      *load_cur = cur;
      for (int i = 0; i < qreg::kStages && i < num_iters; ++i) issue_load(i);
    }
    __syncwarp();

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
        const int stage = it % qreg::kStages;
        const bool last = block + 1 == block_hi;
        mbar_wait(&p_ready_bar[stage], (it / qreg::kStages) & 1);
        float rescale[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          rescale[h] = sScale[stage * kRowsPerTile + row_in_tile[h]];
          if (last) inv_l[h] = sInvL[stage * kRowsPerTile + row_in_tile[h]];
        }
        // A unit factor (row maximum unchanged) is an exact no-op: skip it (warp-uniform).
        if (!__all_sync(0xffffffff, rescale[0] == 1.f && rescale[1] == 1.f)) {
#pragma unroll
          for (int i = 0; i < 32; ++i) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              o[4 * i + 2 * h] *= rescale[h];
              o[4 * i + 2 * h + 1] *= rescale[h];
            }
          }
        }
        const uint32_t tile_addr = smem_addr(sK + stage * kTileBytes);
        const uint32_t p_addr = tile_addr + qreg::kPBox * kBoxBytes;
        const uint32_t v_addr = tile_addr + half * 4 * kBoxBytes;
        wgmma_fence();
#pragma unroll
        for (int k = 0; k < 4; ++k) {
#pragma unroll
          for (int n = 0; n < 2; ++n) {  // columns 128n..128n+127 of this half = boxes 2n, 2n+1
            ElemOps<T>::pv_smem_n128(o + 64 * n, make_smem_desc_sw128(p_addr + k * 32, 16, 1024),
                                     make_smem_desc_sw128(v_addr + 2 * n * kBoxBytes + k * 2048, kBoxBytes, 1024));
          }
        }
        wgmma_commit();
        wgmma_wait<0>();
        mbar_arrive(&empty_bar[stage]);  // this warpgroup is done with the stage (V and P)
        if (producer && it + qreg::kStages < num_iters) {
          mbar_wait(&empty_bar[stage], (it / qreg::kStages) & 1);
          issue_load(stage);
        }
        __syncwarp();
      }
      const int chunk_idx = req == begin_req ? begin_chunk : 0;
      store_output_half<T>(p, o, req, chunk_idx, m_block, kv_head, half * 256, inv_l);
    }
  }
#endif
}

}  // namespace flashmla
