// The "seesaw" main kernel for compute-bound shapes (`auto` uses it from 128 query rows per kv
// head on, flashmla/cuda_backend.py), after the idea DeepSeek's FlashMLA described in April
// 2025: both warpgroups compute S for their own KV block, two blocks per step, and each owns
// one half of O. While one warpgroup runs its softmax on the CUDA cores, the other keeps the
// tensor cores busy, so the tensor pipe no longer idles for the softmax as it does in the serial
// kernel (docs/kernel-design.md section 7).
//
// One step over blocks A (pipeline stage 0, S by WG0) and B (stage 1, S by WG1) of one request:
//   WG0: S_A = Q K_A^T; m0 = max(m, rowmax S_A); P_A = 2^(S_A - m0); publish m0, s0 = 2^(m - m0)
//        and P_A (in stage 0's rope box, dead once S_A is done); O_L = O_L s0 + P_A V_A[:, :256];
//        then, with m1 and s1 from WG1: O_L = O_L s1 + P_B V_B[:, :256].
//   WG1: S_B = Q K_B^T, and right behind it O_R = O_R s0 + P_A V_A[:, 256:] (needs only WG0's
//        m0, s0, P_A), so that PV runs during WG1's softmax: m1 = max(m0, rowmax S_B);
//        P_B = 2^(S_B - m1); publish m1, s1 = 2^(m0 - m1), P_B (stage 1's rope box);
//        O_R = O_R s1 + P_B V_B[:, 256:].
// Both halves end relative to the same running max; each warpgroup keeps the row sums of the P
// it computed, and the two are added at the end. This is exact online softmax, reordered.
//
// Each K stage has one "full" mbarrier per box. The boxes are released in groups (V left = boxes
// 0-3, V right = boxes 4-7, rope = box 8) at different times by different warpgroups: the last
// reader of a group issues its refill (block + 2) as soon as its own wgmma that reads it has
// retired, with no "empty" barrier (the other readers are ordered before it through the P
// handoff barriers). S is issued box by box as the boxes land.
//
// A request whose blocks start on stage 1 begins with a step of block B alone; one that ends on
// stage 0 ends with a step of block A alone.
//
// +ahead (kAhead; `auto` from 256 query rows per kv head): the same math and the same wgmmas,
// issued in another order: each warpgroup queues the next pair's S right behind its last PV, so
// a step opens with the softmax and the tensor pipe does not drain at step boundaries
// (pair_step_ahead; docs/kernel-design.md 7.10).
//
// +chainpv +sbrightfirst (`auto` with +ahead): where block B leaves the lazy running max where m0
// put it in every row (a vote of WG1 before its first PV), s1 is 1, so WG1 queues PV_B,right right
// behind PV_A,right without the retirement and O rescale between them; stage 1's right half is
// then freed first, and the next S_B starts on it (docs/kernel-design.md 7.32).
#pragma once

#include <type_traits>

namespace flashmla {

constexpr int kFlagSeesaw = 16;  // DecodeParams::schedule bit: launch this kernel

namespace seesaw {

constexpr int kSmemQ = 0;
constexpr int kSmemK = kTileBytes;                            // stage s at kSmemK + s * kTileBytes
constexpr int kSmemRowVals = kSmemK + 2 * kTileBytes;         // 6 arrays of 64 floats (below)
constexpr int kSmemBars = kSmemRowVals + 6 * kRowsPerTile * 4;
constexpr int kSmemVote = kSmemBars + (2 * kNumBoxes + 3) * 8;  // after full[stage * 9 + box], zeroed[wg], q
constexpr int kSmemUsed = kSmemVote + 2 * 4 * 4;              // racecheck build's +chainpv vote: [2][4] floats
constexpr int kSmemBytes = kSmemUsed + 1024;                  // slack to align the base
static_assert(kSmemBytes <= 227 * 1024, "shared memory budget of one sm_90 thread block");

constexpr int kRopeBox = 8;  // holds P once S of its block is done

// Named barrier ids (1-4 belong to the serial kernel; ids are per thread block).
constexpr int kBarStats0 = 5;  // WG0 -> WG1: m0, s0 and P_A are published
constexpr int kBarStats1 = 6;  // WG1 -> WG0: m1, s1 and P_B are published
constexpr int kBarZero0 = 8;   // WG0 alone: tail rows of its stage zeroed
constexpr int kBarZero1 = 9;   // WG1 alone (and its +chainpv vote)
constexpr int kBarPVBIssued = 10;  // +pvbfirst, WG1 -> WG0: PV_B,right is issued (pair_step_ahead)

// Instrumented build only (FLASHMLA_NVCC_EXTRA=-DFLASHMLA_SEESAW_TRACE, scripts/seesaw_trace.py):
// clock64() at each handoff of the first kTraceSteps two-block steps of every thread block, so
// the timeline shows where each warpgroup waits. Every thread of a warpgroup stores the same
// slot (no branch, so the wgmma pipeline is not serialised by the instrumentation itself).
// Events 0-12 are per step (slot = step index); events 13-18 mark a request's boundary (slot =
// request index within the part): top of its iteration, Q tile loaded, first S retired (+ahead
// only), main loop done, row sums exchanged, output stores issued. Events 19-23 (slot 0): entry
// (clock64, global timer ns), barriers initialised, exit (clock64, global timer ns).
#ifdef FLASHMLA_SEESAW_TRACE
constexpr int kTraceSteps = 24;
constexpr int kTraceEvents = 24;
constexpr int kTraceBlocks = 512;
#endif

}  // namespace seesaw

#ifdef FLASHMLA_SEESAW_TRACE
__device__ long long g_seesaw_trace[seesaw::kTraceBlocks][2][seesaw::kTraceSteps][seesaw::kTraceEvents];
#define SEESAW_TRACE_VALUE(slot, event, value)                                                       \
  asm volatile("" ::: "memory");                                                                     \
  g_seesaw_trace[min(trace_block, seesaw::kTraceBlocks - 1)][wg][min(slot, seesaw::kTraceSteps - 1)][event] = \
      (value)
#define SEESAW_TRACE_AT(slot, event) SEESAW_TRACE_VALUE(slot, event, clock64())
#define SEESAW_TRACE(event) SEESAW_TRACE_AT(trace_step, event)
#define SEESAW_TRACE_REQ(event) SEESAW_TRACE_AT(trace_req, event)
#else
#define SEESAW_TRACE_VALUE(slot, event, value) ((void)0)
#define SEESAW_TRACE_AT(slot, event) ((void)0)
#define SEESAW_TRACE(event) ((void)0)
#define SEESAW_TRACE_REQ(event) ((void)0)
#endif

// wgmma_wait, then pin the accumulators behind it: the compiler does not know that the async
// wgmma writes them, so it must not move their next use above the wait.
template <int N>
__device__ __forceinline__ void wgmma_retire(float* acc) {
  wgmma_wait<0>();
#pragma unroll
  for (int i = 0; i < N; ++i) fence_regs(acc[i]);
}

// kAhead (schedule flag +ahead, kFlagAhead): each warpgroup queues the next pair's S on the tensor
// pipe right behind its last PV of the step, and the softmax opens the step (pair_step_ahead).
template <typename T, bool kAhead>
__global__ void __launch_bounds__(kNumThreads, 1)
    mla_decode_seesaw_kernel(const __grid_constant__ CUtensorMap kv_map, const __grid_constant__ CUtensorMap q_map,
                             const __grid_constant__ CUtensorMap out_map, const DecodeParams p) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) &
                                             ~static_cast<uintptr_t>(1023));
  uint8_t* sQ = smem + seesaw::kSmemQ;
  uint8_t* sK = smem + seesaw::kSmemK;
  float* sMax0 = reinterpret_cast<float*>(smem + seesaw::kSmemRowVals);  // m0 per row (WG0 -> WG1)
  float* sScale0 = sMax0 + kRowsPerTile;                           // s0
  float* sMax1 = sScale0 + kRowsPerTile;                           // m1 (WG1 -> WG0)
  float* sScale1 = sMax1 + kRowsPerTile;                           // s1
  float* sSum0 = sScale1 + kRowsPerTile;                           // row sums at a request's end
  float* sSum1 = sSum0 + kRowsPerTile;
  uint64_t* full_bar = reinterpret_cast<uint64_t*>(smem + seesaw::kSmemBars);
  uint64_t* zeroed_bar = full_bar + 2 * kNumBoxes;  // WarpgroupBarrier mbarriers (racecheck build)
  uint64_t* q_bar = zeroed_bar + 2;                  // +tmaq: the Q tile's 9 boxes
  float* sVote = reinterpret_cast<float*>(smem + seesaw::kSmemVote);  // racecheck build: +chainpv's vote

  const int m_block = blockIdx.x;
  const int kv_head = blockIdx.y;
  const int tid = threadIdx.x;
  const int wg = tid / 128;
  const int lane = tid % 32;
  const int warp_in_wg = (tid % 128) / 32;
#ifdef FLASHMLA_SEESAW_TRACE
  const int trace_block = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
  int trace_step = 0;
  int trace_req = 0;
  SEESAW_TRACE_AT(0, 19);  // thread block entry (clock64), and the same moment on the global timer
  SEESAW_TRACE_VALUE(0, 20, global_timer_ns());
#endif
  PartRange range;
  if (!range.read(p, blockIdx.z)) return;  // empty part (uniform across the block, before any barrier)
  const int begin_req = range.begin_req, begin_block = range.begin_block, end_req = range.end_req;
  const int end_block = range.end_block, begin_chunk = range.begin_chunk, num_iters = range.num_iters;

  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  if (tid == 0) {
    for (int i = 0; i < 2 * kNumBoxes; ++i) mbar_init(&full_bar[i], 1);
    if constexpr (kRacecheckBarriers) {
      mbar_init(&zeroed_bar[0], 128);
      mbar_init(&zeroed_bar[1], 128);
    }
    mbar_init(q_bar, 1);
    mbar_fence_init();
  }
  __syncthreads();
  SEESAW_TRACE_AT(0, 21);  // metadata read, barriers initialised
  const float scale_log2 = p.softmax_scale * 1.4426950408889634f;
  const int row_in_tile[2] = {warp_in_wg * 16 + (lane >> 2), warp_in_wg * 16 + (lane >> 2) + 8};
  const uint64_t policy = kv_load_policy(p);  // evict_first unless +l2keep
  // This warpgroup's own barrier: its sync after zeroing a page's tail rows (only the stage's owner
  // zeroes it; in the racecheck build as an mbarrier, while the normal build syncs on the named
  // barrier the caller passes, a constant there, so the instruction keeps an immediate id), and
  // WG1's +chainpv vote (WarpgroupBarrier::all).
  WarpgroupBarrier own_barrier{wg ? seesaw::kBarZero1 : seesaw::kBarZero0, &zeroed_bar[wg]};
  // A handoff's publishing side: bar.arrive, or bar.sync in a racecheck build (which reports
  // bar.arrive -> bar.sync handoffs as hazards: scripts/racecheck_toy.cu, mode 0) where the other
  // side waits (`consumer_waits`, uniform; where it does not, a bar.sync would never complete).
  auto publish_barrier = [](int id, bool consumer_waits = true) {
    if constexpr (kRacecheckBarriers) {
      if (consumer_waits) named_barrier_sync(id, kNumThreads);
      else named_barrier_arrive(id, kNumThreads);
    } else {
      named_barrier_arrive(id, kNumThreads);
    }
  };
  const bool early_refill = (p.schedule & kFlagEarlyRefill) != 0;
  // +tmaout / +tmaq (kFlagTmaOut): the request boundary's output and Q tile by TMA (7.13).
  const bool tma_out = (p.schedule & kFlagTmaOut) != 0;
  const bool tma_q = (p.schedule & kFlagTmaQ) != 0;
  const bool overlap_combine = (p.schedule & kFlagOverlapCombine) != 0;  // the binding checks chunk_done
  // +earlyq (kFlagEarlyQ): the next request's Q tile loads during this request's last step, and
  // the output is staged in the last block's K stage (only with +ahead and the TMA boundary).
  const bool early_q = kAhead && tma_q && tma_out && (p.schedule & kFlagEarlyQ) != 0;
  bool q_loaded_early = false;  // early_q: this request's Q tile was issued by the previous one
  uint32_t q_parity = 0;
  const bool whole_tile = (p.schedule & kFlagWholeTile) != 0;  // A/B switch: all boxes before S
  // Timing probes (kFlagProbeNoLoad, kFlagProbeL2Hot): wrong output by design. Without refills
  // every stage keeps its first page, whose mbarrier phase 0 has completed, so all waits use
  // parity 0.
  const bool probe_no_load = (p.schedule & kFlagProbeNoLoad) != 0;
  const bool probe_l2_hot = (p.schedule & kFlagProbeL2Hot) != 0;
  const int probe_page = probe_l2_hot ? p.block_table[static_cast<int64_t>(begin_req) * p.block_table_stride + begin_block] : 0;
  auto parity_of = [&](int idx) -> uint32_t { return probe_no_load ? 0u : (idx >> 1) & 1; };

  // Loads boxes [box_begin, box_end) of page `page` into `stage`, each counted on its own
  // mbarrier.
  auto load_boxes = [&](int page, int stage, int box_begin, int box_end) {
    uint8_t* dst = sK + stage * kTileBytes;
    for (int box = box_begin; box < box_end; ++box) {
      uint64_t* bar = &full_bar[stage * kNumBoxes + box];
      mbar_arrive_expect_tx(bar, kBoxBytes);
      tma_load_4d(dst + box * kBoxBytes, &kv_map, bar, box * kBoxDim, 0, kv_head, page, policy);
    }
  };
  // next_load[s]: the block that refills stage s (sequence index of its current block + 2).
  PartCursor next_load[2];
  {
    PartCursor c;
    c.start(p, begin_req, begin_block, end_req, end_block);
    for (int idx = 0; idx < 2; ++idx) {
      if (tid == 0 && idx < num_iters) {
        if (idx == 0) prefetch_tensor_map(&kv_map);
        load_boxes(p.block_table[static_cast<int64_t>(c.req) * p.block_table_stride + c.block], idx, 0, kNumBoxes);
      }
      c.advance(p, end_req, end_block);
    }
    next_load[0] = c;
    c.advance(p, end_req, end_block);
    next_load[1] = c;
  }
  // A refill is planned at the top of a step, where no wgmma is in flight: the page of the block
  // that will refill `stage` after its block at sequence index `idx` is consumed is loaded then,
  // so the load's latency hides under the K-tile wait. (Looked up at refill time, it stalled the
  // whole warpgroup about 800 cycles per refill: the other warps wait for the elected thread at
  // the next .sync.aligned wgmma. Measured with the trace build, docs/kernel-design.md 7.)
  struct Refill {
    int page, exists;
  };
  auto plan_refill = [&](int stage, int idx) {
    Refill r;
    const bool exists = idx + 2 < num_iters;
    const PartCursor& c = next_load[stage];
    // An address inside the table either way, so the load needs no branch and can be issued early.
    const int* slot = exists ? p.block_table + static_cast<int64_t>(c.req) * p.block_table_stride + c.block
                             : p.block_table;
    r.page = probe_l2_hot ? probe_page : ld_global_early(slot);
    r.exists = exists && !probe_no_load;
    next_load[stage].advance(p, end_req, end_block);
    next_load[stage].advance(p, end_req, end_block);
    return r;
  };
  // End of request `req`'s blocks in this part (its first is begin_block for begin_req, else 0).
  auto block_end_of = [&](int req) { return req == end_req ? end_block : PartCursor::num_blocks(p, req); };
  // early_q: the refill of the request's last block's stage (the next request's second block),
  // held back until the output staged there has been read by its TMA store. Thread 0 issues it.
  Refill deferred{0, 0};
  // The refill to issue now for `stage` after its block `idx`: the planned one, or, where `hold`
  // (early_q, the request's last block), none, the planned one being kept in `deferred`.
  auto plan_refill_unless_held = [&](int stage, int idx, bool hold) {
    const Refill planned = plan_refill(stage, idx);
    if (hold) deferred = planned;
    return Refill{planned.page, planned.exists && !hold};
  };
  // early_q: the first thread of warpgroup `issuer` loads the Q tile of the part's next non-empty
  // request after `req`, if there is one. Called once every S of `req` has retired (the caller's
  // own, and the other warpgroup's, which it has synchronised with since).
  auto issue_next_q = [&](int req, int issuer) {
    if (tid != issuer * 128) return;
    for (int n = req + 1; n <= end_req; ++n) {
      if (block_end_of(n) > 0) {
        issue_q_tile_tma(sQ, &q_map, q_bar, m_block, n);
        return;
      }
    }
  };
  // A refill is issued one box per lane: lane i of the warpgroup's first warp issues the i-th
  // box, so the warp issues each instruction once for all of them instead of one elected thread
  // issuing the boxes in turn (1.5% faster geomean on the compute-bound rows, up to 3.6%, and
  // bit-identical; docs/kernel-design.md 7.10). Predicated, no branch: usable while a wgmma is
  // in flight (a divergent branch there makes ptxas serialise every wgmma of the kernel).
  auto load_box_of_lane = [&](int pred, int page, int stage, int box) {
    uint64_t* bar = &full_bar[stage * kNumBoxes + box];
    mbar_arrive_expect_tx_if(pred, bar, kBoxBytes);
    tma_load_4d_if(pred, sK + stage * kTileBytes + box * kBoxBytes, &kv_map, bar, box * kBoxDim, 0, kv_head, page,
                   policy);
  };
  // Boxes [a_begin, a_end) and [b_begin, b_end) of a planned refill; called once this
  // warpgroup's last wgmma that reads them has retired (another may still be in flight).
  auto refill = [&](int stage, const Refill& r, int a_begin, int a_end, int b_begin, int b_end) {
    const int na = a_end - a_begin;
    const int mine = warp_in_wg == 0 && lane < na + (b_end - b_begin) && r.exists;
    load_box_of_lane(mine, r.page, stage, min(lane < na ? a_begin + lane : b_begin + lane - na, kNumBoxes - 1));
  };

  // S is issued box by box as the boxes land (issue_qk_as_boxes_land; docs/kernel-design.md 7.8:
  // 2.8% faster than waiting for the whole page on the compute-bound rows, 1.6% faster than box
  // groups; +wholetile waits for all boxes first, as an A/B switch). A request's last, partial
  // block first waits for the whole tile, to zero its V boxes' tail rows before any wgmma reads it.
  auto issue_qk = [&](float* s_acc, int stage, int idx, int seqlen, int block, bool last, int zero_bar) {
    uint8_t* tile = sK + stage * kTileBytes;
    const uint32_t parity = parity_of(idx);
    uint64_t* bars = &full_bar[stage * kNumBoxes];
    const int valid_rows = seqlen - block * kPageSize;
    const bool zero_tail = last && valid_rows < kPageSize;
    if (whole_tile || zero_tail) wait_all_boxes(bars, parity);
    if (zero_tail) {  // V boxes only
      if constexpr (kRacecheckBarriers) {
        zero_tail_rows(tile, valid_rows, 8, own_barrier);
      } else {
        NamedWarpgroupBarrier zeroed{zero_bar};
        zero_tail_rows(tile, valid_rows, 8, zeroed);
      }
    }
#ifdef FLASHMLA_SEESAW_TRACE
    mbar_wait(&bars[0], parity);
    SEESAW_TRACE(1);  // first K box landed
#endif
    issue_qk_as_boxes_land<T>(s_acc, smem_addr(sQ), smem_addr(tile), bars, parity);
    SEESAW_TRACE(12);  // last K box landed, S fully issued
  };
  // kUnmasked (a std::bool_constant): the block needs no masking (+nomask's steady state).
  auto softmax_step = [&](float* s_acc, float* row_max, float* rescale, float* p_sum, const int* key_limit,
                          int block, auto unmasked_constant) {
    constexpr bool kUnmasked = decltype(unmasked_constant)::value;
    online_softmax_step<false, false, kUnmasked>(s_acc, row_max, rescale, p_sum, key_limit, block, scale_log2, lane);
  };
  // Branch-free forms, for WG1's softmax while its first PV is in flight (see the pair step).
  auto softmax_step_in_flight = [&](float* s_acc, float* row_max, float* rescale, float* p_sum,
                                    const int* key_limit, int block, auto unmasked_constant) {
    constexpr bool kUnmasked = decltype(unmasked_constant)::value;
    online_softmax_step<true, false, kUnmasked>(s_acc, row_max, rescale, p_sum, key_limit, block, scale_log2, lane);
  };
  // +nomask (kFlagNoMask): the steady-state pair step of +ahead (one with a next pair behind it)
  // drops all masking code where that is exact (see kFlagNoMask): uniform for the whole launch.
  const bool steady_unmasked = (p.schedule & kFlagNoMask) != 0 && (!p.causal || p.s_q <= kUnmaskedMaxSq) &&
                               scale_log2 > 0.f;
  const bool pvb_first = (p.schedule & kFlagPVBFirst) != 0;
  const bool chain_pv = (p.schedule & kFlagChainPV) != 0;
  const bool sb_right_first = (p.schedule & kFlagSBRightFirst) != 0;
  auto rescale_o_in_flight = [&](float* o, const float* rescale) { rescale_rows(o, rescale); };
  auto pack_p = [&](const float* s_acc, uint32_t* p_frag) {
#pragma unroll
    for (int k = 0; k < 16; ++k) p_frag[k] = ElemOps<T>::pack(s_acc[2 * k], s_acc[2 * k + 1]);
  };
  // P of the block on `stage` into that stage's rope box (store_tile_64x64) for the other warpgroup's PV.
  auto store_p = [&](int stage, const uint32_t* p_frag) {
    store_tile_64x64(smem_addr(sK + stage * kTileBytes + seesaw::kRopeBox * kBoxBytes), p_frag);
  };
  auto publish_stats = [&](float* s_max, float* s_scale, const float* row_max, const float* rescale) {
    if ((lane & 3) == 0) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        st_shared_f32(smem_addr(s_max + row_in_tile[h]), row_max[h]);
        st_shared_f32(smem_addr(s_scale + row_in_tile[h]), rescale[h]);
      }
    }
  };
  auto publish_stats_in_flight = [&](float* s_max, float* s_scale, const float* row_max, const float* rescale) {
    const int writer = (lane & 3) == 0;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      st_shared_f32_if(writer, smem_addr(s_max + row_in_tile[h]), row_max[h]);
      st_shared_f32_if(writer, smem_addr(s_scale + row_in_tile[h]), rescale[h]);
    }
  };
  auto read_stats = [&](const float* s_max, const float* s_scale, float* row_max, float* rescale) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      row_max[h] = ld_shared_f32(smem_addr(s_max + row_in_tile[h]));
      rescale[h] = ld_shared_f32(smem_addr(s_scale + row_in_tile[h]));
    }
  };
  // O *= factor per row, skipped when all 16 rows of the warp have factor 1 (the running max did
  // not move, as in most blocks of a long sequence): x * 1.0f == x, so the skip is exact. The
  // branch is warp-uniform and never taken with a wgmma in flight.
  auto rescale_o = [&](float* o, const float* rescale) {
    if (__all_sync(0xffffffff, rescale[0] == 1.f && rescale[1] == 1.f)) return;
    rescale_rows(o, rescale);
  };
  // O_half += P V_half with P in registers (this warpgroup's own block).
  auto issue_pv_regs = [&](float* o, const uint32_t* p_frag, int stage) {
    issue_pv_wgmmas_regs<T>(o, p_frag, smem_addr(sK + stage * kTileBytes + wg * 4 * kBoxBytes));
  };
  // O_half += P V_half with P from the stage's rope box (the other warpgroup's block).
  auto issue_pv_smem = [&](float* o, int stage) {
    issue_pv_wgmmas_smem<T>(o, smem_addr(sK + stage * kTileBytes + seesaw::kRopeBox * kBoxBytes),
                            smem_addr(sK + stage * kTileBytes + wg * 4 * kBoxBytes));
  };
  auto scale_pair = [](float* v, const float* f) {
    v[0] *= f[0];
    v[1] *= f[1];
  };

  int it = 0;  // sequence index of the next block = pipeline slot counter
#pragma unroll 1
  for (int req = begin_req; req <= end_req; ++req) {
    SEESAW_TRACE_REQ(13);  // top of the request's iteration
    const int seqlen = p.cache_seqlens[req];
    const int block_lo = req == begin_req ? begin_block : 0;
    const int block_hi = block_end_of(req);
    if (block_lo >= block_hi) continue;  // zero-length request
    // The Q tile. Every QK^T of the previous request has retired: each warpgroup waited for its
    // own before the row-sum exchange barrier that ended that request.
    if (tma_q) {
      // By TMA: thread 0 first waits until its TMA stores of the previous output (+tmaout) have
      // read the tile's shared memory; rows past the tensor's end arrive as zeros.
      if (tid == 0 && !q_loaded_early) issue_q_tile_tma(sQ, &q_map, q_bar, m_block, req);
      mbar_wait(q_bar, q_parity);
      q_parity ^= 1;
      // As after the other path's load: neither warpgroup writes this request's row sums (sSum0/1)
      // before both have read the previous request's (nothing else orders a request of one block,
      // whose owner never waits for the other warpgroup).
      __syncthreads();
    } else {
      // By both warpgroups, 16 bytes at a time.
      load_q_tile<T, kNumThreads>(p, sQ, req, m_block, kv_head);
      fence_proxy_async_smem();
      __syncthreads();  // both warpgroups (racecheck still reports these accesses; kernel-design 7.4)
    }
    SEESAW_TRACE_REQ(14);  // Q tile loaded
    float o[128];
#pragma unroll
    for (int i = 0; i < 128; ++i) o[i] = 0.f;
    float row_max[2], row_sum[2];  // running max (the same in both warpgroups); own row sums
    int key_limit[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      row_max[h] = -INFINITY;
      row_sum[h] = 0.f;
      const int rho = m_block * kRowsPerTile + row_in_tile[h];
      const int t = min(rho / p.heads_per_kv, p.s_q - 1);
      key_limit[h] = p.causal ? seqlen - (p.s_q - 1 - t) : seqlen;
    }
    float s_acc[32];
    uint32_t p_frag[16];
    float s0[2], s1[2], p_sum[2];
    int block = block_lo;

    // A pair step's softmax in warpgroup `stage` of its block on that stage: the online softmax of
    // S, P packed for the warpgroup's own PV and stored into the stage's rope box for the other's,
    // and m with the rescale factor published to the other warpgroup; then the row sums. WG1 runs
    // it with its first PV in flight, so it uses the branch-free forms. unmasked_constant: see
    // softmax_step.
    auto softmax_and_publish = [&](auto stage_constant, float* rescale, int blk, auto unmasked_constant) {
      constexpr int stage = decltype(stage_constant)::value;
      if constexpr (stage == 1) softmax_step_in_flight(s_acc, row_max, rescale, p_sum, key_limit, blk, unmasked_constant);
      else softmax_step(s_acc, row_max, rescale, p_sum, key_limit, blk, unmasked_constant);
      fence_regs(p_sum[0]);  // (no-op: pins the softmax before the clock read)
      fence_regs(p_sum[1]);
      SEESAW_TRACE(9);  // softmax arithmetic done
      pack_p(s_acc, p_frag);
      store_p(stage, p_frag);
      if constexpr (stage == 1) publish_stats_in_flight(sMax1, sScale1, row_max, rescale);
      else publish_stats(sMax0, sScale0, row_max, rescale);
      SEESAW_TRACE(11);  // P stored, before the proxy fence
      fence_proxy_async_smem();
      SEESAW_TRACE(10);  // P stored and fenced
      publish_barrier(stage ? seesaw::kBarStats1 : seesaw::kBarStats0);
      SEESAW_TRACE(3);  // softmax done, stats published
      // This warpgroup's row sums, onto the new running max (WG1's also take block A's factor).
      if constexpr (stage == 1) scale_pair(row_sum, s0);
      scale_pair(row_sum, rescale);
      row_sum[0] += p_sum[0];
      row_sum[1] += p_sum[1];
    };

    // One block alone on `stage` (a request's first block on stage 1, or its last on stage 0):
    // its owner, warpgroup `stage`, computes S, the softmax and its half of PV; the other
    // warpgroup multiplies P from the rope box into its half. Each refills what it read last
    // (the owner its own V half; the other its V half and the rope box). The stage is a
    // compile-time constant, so every choice below folds away.
    auto single_block_step = [&](auto stage_constant, int idx, int blk, bool last) {
      constexpr int stage = decltype(stage_constant)::value;
      float* s_max = stage ? sMax1 : sMax0;
      float* s_scale = stage ? sScale1 : sScale0;
      constexpr int stats_bar = stage ? seesaw::kBarStats1 : seesaw::kBarStats0;
      float* rescale = stage ? s1 : s0;
      // Warpgroup w multiplies V boxes 4w..4w+3 (its half of O).
      constexpr int owner_half = stage;
      constexpr int other_half = 1 - stage;
      // early_q: the request's last block; its stage's refill waits for the output (deferred).
      const bool hold = early_q && last;
      const Refill r = plan_refill_unless_held(stage, idx, hold);
      if (wg == stage) {
        issue_qk(s_acc, stage, idx, seqlen, blk, last, stage ? seesaw::kBarZero1 : seesaw::kBarZero0);
        wgmma_retire<32>(s_acc);
        if (hold) issue_next_q(req, stage);  // the other warpgroup's last S retired before this step
        softmax_step(s_acc, row_max, rescale, p_sum, key_limit, blk, std::false_type{});
        pack_p(s_acc, p_frag);
        store_p(stage, p_frag);
        publish_stats(s_max, s_scale, row_max, rescale);
        fence_proxy_async_smem();
        publish_barrier(stats_bar);
        scale_pair(row_sum, rescale);
        row_sum[0] += p_sum[0];
        row_sum[1] += p_sum[1];
        rescale_o(o, rescale);
        issue_pv_regs(o, p_frag, stage);
        wgmma_retire<128>(o);
        refill(stage, r, 4 * owner_half, 4 * owner_half + 4, 0, 0);
      } else {
        named_barrier_sync(stats_bar, kNumThreads);
        read_stats(s_max, s_scale, row_max, rescale);
        scale_pair(row_sum, rescale);
        rescale_o(o, rescale);
        issue_pv_smem(o, stage);
        wgmma_retire<128>(o);
        refill(stage, r, 4 * other_half, 4 * other_half + 4, seesaw::kRopeBox, seesaw::kRopeBox + 1);
      }
    };

    if (it & 1) {  // block B alone
      single_block_step(std::integral_constant<int, 1>{}, it, block, block + 1 == block_hi);
      ++block;
      ++it;
    }

    // +ahead: one step over blocks A (stage 0, index it) and B (stage 1, index it + 1) whose S
    // are already in s_acc (WG0: S_A, WG1: S_B). The softmax opens the step; with kNextPair each
    // warpgroup queues the next pair's S (blocks A' = block + 2, B' = block + 3) right behind
    // its last PV, so the tensor pipe never drains at a step boundary, and refills are issued
    // as soon as their last reader has retired:
    //   stage 0 left (A')  by WG0 after its first PV, while it waits for WG1's softmax anyway;
    //   stage 0 right+rope by WG1 after its first PV (P_A in the rope box was its operand);
    //   stage 1 left+rope  by WG0 after its second PV (P_B in the rope box);
    //   stage 1 right      by WG1 after its second PV.
    // A' is never a request's last block here (B' follows it), so S_A' needs no tail zeroing and
    // can be issued with PV_B,left in flight; WG1 issues S_B' (which may need it) with nothing
    // in flight. kNextPair is a compile-time constant: no branch sits between wgmmas.
    // kUnmasked (unmasked_constant): no masking code in either softmax (+nomask; only with kNextPair,
    // where the caller has checked steady_unmasked).
    auto pair_step_ahead = [&](auto next_pair_constant, auto unmasked_constant) {
      constexpr bool kNextPair = decltype(next_pair_constant)::value;
      const Refill r0 = plan_refill(0, it);
      // early_q: block B is the request's last; stage 1's refill waits for the output (deferred).
      const bool hold = !kNextPair && early_q && block + 2 == block_hi;
      const Refill r1 = plan_refill_unless_held(1, it + 1, hold);
      SEESAW_TRACE(0);  // step starts (this pair's S retired)
      if (wg == 0) {
        softmax_and_publish(std::integral_constant<int, 0>{}, s0, block, unmasked_constant);
        rescale_o(o, s0);
        issue_pv_regs(o, p_frag, 0);                    // O_L += P_A V_A,left
        SEESAW_TRACE(4);  // first PV issued
        wgmma_retire<128>(o);
        SEESAW_TRACE(6);  // first PV retired
        refill(0, r0, 0, 4, 0, 0);                      // A' left
        named_barrier_sync(seesaw::kBarStats1, kNumThreads);    // m1, s1, P_B from WG1
        SEESAW_TRACE(5);  // other warpgroup's stats received
        if (hold) issue_next_q(req, 0);  // S_A retired here, S_B before WG1 published its stats
        read_stats(sMax1, sScale1, row_max, s1);
        scale_pair(row_sum, s1);
        rescale_o(o, s1);
        issue_pv_smem(o, 1);                            // O_L += P_B V_B,left
        if constexpr (kNextPair) {
          // S_A' in two commit groups, as FlashMLA's kernel does: first the left boxes, which
          // WG0 refilled itself mid-step, then, once PV_B,left has retired, stage 1's refill
          // (which must not wait for the late right boxes), then the right and rope boxes.
          SEESAW_TRACE(7);  // second PV issued
          // +pvbfirst ("auto" with +ahead since session 29): S_A' queues behind WG1's PV_B,right,
          // whose retirement frees stage 1's right half for the next B page.
          if (pvb_first) named_barrier_sync(seesaw::kBarPVBIssued, kNumThreads);
          issue_qk_as_boxes_land<T, 0, 4>(s_acc, smem_addr(sQ), smem_addr(sK), &full_bar[0], parity_of(it + 2));
          SEESAW_TRACE(1);  // S_A' left boxes issued
          wgmma_wait<1>();                              // PV_B,left retired; S_A' may still run
#pragma unroll
          for (int i = 0; i < 128; ++i) fence_regs(o[i]);
          SEESAW_TRACE(8);  // second PV retired
          refill(1, r1, 0, 4, seesaw::kRopeBox, seesaw::kRopeBox + 1);  // B' left and rope (P_B's box)
          issue_qk_as_boxes_land<T, 4, kNumBoxes>(s_acc, smem_addr(sQ), smem_addr(sK), &full_bar[0],
                                                  parity_of(it + 2));
          SEESAW_TRACE(12);  // S_A' fully issued
          wgmma_retire<32>(s_acc);
          SEESAW_TRACE(2);  // S_A' retired
        } else {
          wgmma_retire<128>(o);
          refill(1, r1, 0, 4, seesaw::kRopeBox, seesaw::kRopeBox + 1);
        }
      } else {
        // +chainpv (unmasked steady state only): block B's row max before the wait, so that the
        // lazy-max decision for block B is known before any PV is issued.
        constexpr bool kMayChain = kNextPair && decltype(unmasked_constant)::value;
        float mx_b[2] = {0.f, 0.f};
        if constexpr (kMayChain) {
          if (chain_pv) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {  // as online_softmax_step: the thread's tree, then the quad's
              mx_b[h] = thread_row_max(s_acc, h);
              mx_b[h] = fmaxf(mx_b[h], __shfl_xor_sync(0xffffffff, mx_b[h], 1));
              mx_b[h] = fmaxf(mx_b[h], __shfl_xor_sync(0xffffffff, mx_b[h], 2));
            }
          }
        }
        named_barrier_sync(seesaw::kBarStats0, kNumThreads);    // m0, s0, P_A from WG0
        SEESAW_TRACE(5);
        read_stats(sMax0, sScale0, row_max, s0);
        bool chained = false;
        if constexpr (kMayChain) {
          // online_softmax_step moves the max of row h iff mx * scale > m0 + kLazyMaxLog2; where no
          // row of the tile does, s1 = 2^0 = 1 exactly in every row. One answer for the warpgroup
          // (its wgmmas are collective); nothing is in flight here, so the branch is safe.
          if (chain_pv) {
            const int keeps = !(mx_b[0] * scale_log2 > row_max[0] + kLazyMaxLog2) &&
                              !(mx_b[1] * scale_log2 > row_max[1] + kLazyMaxLog2);
            // WG1's own barrier (the one its tail zeroing syncs on); the racecheck build's slot
            // sets alternate by step.
            chained = own_barrier.all(keeps, sVote + 4 * ((it >> 1) & 1), seesaw::kBarZero1);
          }
        }
        // Both branches start alike (PV_A,right, then the softmax): branching after PV_A,right's
        // issue would put a branch beside a wgmma in flight, which makes ptxas serialise them all.
        if (chained) {
          rescale_o(o, s0);
          issue_pv_smem(o, 0);                          // O_R += P_A V_A,right, during the softmax
          SEESAW_TRACE(4);
          softmax_and_publish(std::integral_constant<int, 1>{}, s1, block + 1, unmasked_constant);
          issue_pv_regs(o, p_frag, 1);                  // O_R += P_B V_B,right (s1 = 1: no rescale)
          SEESAW_TRACE(7);
          publish_barrier(seesaw::kBarPVBIssued, pvb_first);
          wgmma_wait<1>();                              // PV_A,right retired; PV_B,right may run
#pragma unroll
          for (int i = 0; i < 128; ++i) fence_regs(o[i]);
          SEESAW_TRACE(6);
          refill(0, r0, 4, 8, seesaw::kRopeBox, seesaw::kRopeBox + 1);  // A' right and rope
          wgmma_retire<128>(o);
          refill(1, r1, 4, 8, 0, 0);                    // B' right
          SEESAW_TRACE(8);  // second PV retired
        } else {
          rescale_o(o, s0);
          issue_pv_smem(o, 0);                            // O_R += P_A V_A,right, during the softmax
          SEESAW_TRACE(4);
          softmax_and_publish(std::integral_constant<int, 1>{}, s1, block + 1, unmasked_constant);
          wgmma_retire<128>(o);
          SEESAW_TRACE(6);
          refill(0, r0, 4, 8, seesaw::kRopeBox, seesaw::kRopeBox + 1);  // A' right and rope
          rescale_o(o, s1);
          issue_pv_regs(o, p_frag, 1);                    // O_R += P_B V_B,right
          SEESAW_TRACE(7);
          // For +pvbfirst; without it nobody waits, and every second step's arrivals just complete
          // the barrier's phase.
          if constexpr (kNextPair) publish_barrier(seesaw::kBarPVBIssued, pvb_first);
          wgmma_retire<128>(o);
          refill(1, r1, 4, 8, 0, 0);                      // B' right
          SEESAW_TRACE(8);  // second PV retired
        }
        if constexpr (kNextPair) {
          if (chained && sb_right_first && block + 4 != block_hi) {  // nothing in flight: safe branch
            // (+sbrightfirst) S_B' over the right boxes first; not the request's last block (no tail).
            const uint32_t k1 = smem_addr(sK + kTileBytes);
            uint64_t* bars1 = &full_bar[kNumBoxes];
            issue_qk_as_boxes_land<T, 4, 8, 4>(s_acc, smem_addr(sQ), k1, bars1, parity_of(it + 3));
            issue_qk_as_boxes_land<T, 0, 4, 4>(s_acc, smem_addr(sQ), k1, bars1, parity_of(it + 3));
            issue_qk_as_boxes_land<T, 8, kNumBoxes, 4>(s_acc, smem_addr(sQ), k1, bars1, parity_of(it + 3));
          } else {
            issue_qk(s_acc, 1, it + 3, seqlen, block + 3, block + 4 == block_hi, seesaw::kBarZero1);
          }
          wgmma_retire<32>(s_acc);
          SEESAW_TRACE(2);  // S_B' retired
        }
      }
#ifdef FLASHMLA_SEESAW_TRACE
      ++trace_step;
#endif
    };

    if constexpr (kAhead) {
      if (block + 1 < block_hi) {  // the first pair's S, issued at the top
        if (wg == 0) issue_qk(s_acc, 0, it, seqlen, block, false, seesaw::kBarZero0);
        else issue_qk(s_acc, 1, it + 1, seqlen, block + 1, block + 2 == block_hi, seesaw::kBarZero1);
        wgmma_retire<32>(s_acc);
        SEESAW_TRACE_REQ(15);  // the request's first S retired
      }
      // Two copies of the steady-state loop, one without masking code (+nomask, where exact).
      if (steady_unmasked) {
#pragma unroll 1
        for (; block + 3 < block_hi; block += 2, it += 2) pair_step_ahead(std::true_type{}, std::true_type{});
      } else {
#pragma unroll 1
        for (; block + 3 < block_hi; block += 2, it += 2) pair_step_ahead(std::true_type{}, std::false_type{});
      }
      if (block + 1 < block_hi) {
        pair_step_ahead(std::false_type{}, std::false_type{});
        block += 2;
        it += 2;
      }
    }

#pragma unroll 1
    for (; !kAhead && block + 1 < block_hi; block += 2, it += 2) {
      // ---- Block A (stage 0, index it) and block B (stage 1, index it + 1).
      SEESAW_TRACE(0);  // step starts
      const Refill r0 = plan_refill(0, it);
      const Refill r1 = plan_refill(1, it + 1);
      if (wg == 0) {
        issue_qk(s_acc, 0, it, seqlen, block, false, seesaw::kBarZero0);
        wgmma_retire<32>(s_acc);
        SEESAW_TRACE(2);  // S retired
        softmax_and_publish(std::integral_constant<int, 0>{}, s0, block, std::false_type{});
        rescale_o(o, s0);
        issue_pv_regs(o, p_frag, 0);                    // O_L += P_A V_A,left
        SEESAW_TRACE(4);  // first PV issued
        named_barrier_sync(seesaw::kBarStats1, kNumThreads);    // m1, s1, P_B from WG1
        SEESAW_TRACE(5);  // other warpgroup's stats received
        read_stats(sMax1, sScale1, row_max, s1);
        scale_pair(row_sum, s1);
        wgmma_retire<128>(o);
        SEESAW_TRACE(6);  // first PV retired
        // Stage 0's V left is free now. +earlyrefill (an experiment) issues its refill here (no
        // wgmma in flight, so the branch is safe), ~700 cycles earlier than behind the second PV;
        // the TMA issue then delays that PV, and it measured slower (docs/kernel-design.md 5.3).
        if (early_refill) refill(0, r0, 0, 4, 0, 0);
        rescale_o(o, s1);
        issue_pv_smem(o, 1);                            // O_L += P_B V_B,left
        const Refill r0_late = {r0.page, r0.exists && !early_refill};
        refill(0, r0_late, 0, 4, 0, 0);
        SEESAW_TRACE(7);  // second PV issued
        wgmma_retire<128>(o);
        SEESAW_TRACE(8);  // second PV retired
        refill(1, r1, 0, 4, seesaw::kRopeBox, seesaw::kRopeBox + 1);
      } else {
        // WG1 multiplies block A (which needs only WG0's m0, s0, P_A) before its own softmax, so
        // that PV runs on the tensor pipe during the softmax and stage 0's right half is freed
        // about 1,500 cycles earlier than after the softmax (the refill the next step's S_A
        // waits for; docs/kernel-design.md 7). Everything between the wgmma issues is branch-free.
        issue_qk(s_acc, 1, it + 1, seqlen, block + 1, block + 2 == block_hi, seesaw::kBarZero1);
        named_barrier_sync(seesaw::kBarStats0, kNumThreads);    // m0, s0, P_A from WG0
        SEESAW_TRACE(5);
        read_stats(sMax0, sScale0, row_max, s0);
        rescale_o_in_flight(o, s0);
        issue_pv_smem(o, 0);                            // O_R += P_A V_A,right (behind S_B)
        SEESAW_TRACE(4);
        wgmma_wait<1>();                                // S_B retired; the PV may still run
#pragma unroll
        for (int i = 0; i < 32; ++i) fence_regs(s_acc[i]);
        SEESAW_TRACE(2);
        softmax_and_publish(std::integral_constant<int, 1>{}, s1, block + 1, std::false_type{});
        wgmma_retire<128>(o);
        SEESAW_TRACE(6);
        refill(0, r0, 4, 8, seesaw::kRopeBox, seesaw::kRopeBox + 1);
        rescale_o(o, s1);
        issue_pv_regs(o, p_frag, 1);                    // O_R += P_B V_B,right
        SEESAW_TRACE(7);
        wgmma_retire<128>(o);
        SEESAW_TRACE(8);
        refill(1, r1, 4, 8, 0, 0);
      }
#ifdef FLASHMLA_SEESAW_TRACE
      ++trace_step;
#endif
    }

    if (block < block_hi) {  // block A alone
      single_block_step(std::integral_constant<int, 0>{}, it, block, true);
      ++block;
      ++it;
    }

    SEESAW_TRACE_REQ(16);  // main loop done
    // Row sums: over the 4 lanes of a quad, then over the two warpgroups.
    float total_l[2], inv_l[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float l = row_sum[h];
      l += __shfl_xor_sync(0xffffffff, l, 1);
      l += __shfl_xor_sync(0xffffffff, l, 2);
      row_sum[h] = l;
    }
    if ((lane & 3) == 0) {
      float* mine = wg == 0 ? sSum0 : sSum1;
      st_shared_f32(smem_addr(mine + row_in_tile[0]), row_sum[0]);
      st_shared_f32(smem_addr(mine + row_in_tile[1]), row_sum[1]);
    }
    __syncthreads();  // both warpgroups (racecheck still reports these accesses; kernel-design 7.4)
    SEESAW_TRACE_REQ(17);  // row sums exchanged
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      total_l[h] = ld_shared_f32(smem_addr(sSum0 + row_in_tile[h])) + ld_shared_f32(smem_addr(sSum1 + row_in_tile[h]));
      inv_l[h] = total_l[h] > 0.f ? 1.f / total_l[h] : 0.f;
    }
    const int chunk_idx = req == begin_req ? begin_chunk : 0;
    const bool whole_request = num_chunks_of(p, req) == 1;  // output in q's dtype
    // early_q: the last block's K stage (its refill is held back; the Q tile holds the next Q).
    const int last_stage = (it - 1) & 1;
    uint8_t* staging = early_q ? sK + last_stage * kTileBytes : sQ;
    if (tma_out && whole_request) {
      // +tmaout: both halves staged in the Q tile's shared memory (free: every S has retired) or,
      // with early_q, in the last block's K stage; then thread 0 writes the 8 boxes with TMA
      // stores. Whoever next writes that memory waits for the stores to have read it: thread 0
      // itself (its next Q load, or early_q's held-back refill) or, after it, everyone.
      stage_output_half<T>(staging, o, wg, inv_l);
      fence_proxy_async_smem();
      __syncthreads();
      if (tid == 0) issue_output_tile_tma(staging, &out_map, m_block, req);
      if (!tma_q) {
        if (tid == 0) bulk_wait_group_read_all();
        __syncthreads();
      }
    } else if (whole_request || !(p.schedule & kFlagProbeNoPartial)) {
      store_output_half<T>(p, o, req, chunk_idx, m_block, kv_head, wg * 256, inv_l);
    }
    if (wg == 0 && (lane & 3) == 0) store_lse(p, req, chunk_idx, m_block, kv_head, row_in_tile, row_max, total_l);
    if (overlap_combine && !whole_request) {
      // +overlapcombine: this chunk's partials and lse are published with one count (the
      // threadfence-reduction pattern: every thread fences its own stores, then one adds).
      __threadfence();
      __syncthreads();
      if (tid == 0) atomicAdd(p.chunk_done + (static_cast<int64_t>(req) * p.h_kv + kv_head) * p.num_m_blocks + m_block, 1);
    }
    if (early_q) {
      // The held-back refill, once the output store (if any) has read the stage; every PV that
      // read it retired before the row-sum barrier above.
      if (tid == 0 && deferred.exists) {
        bulk_wait_group_read_all();
        load_boxes(deferred.page, last_stage, 0, kNumBoxes);
      }
      deferred.exists = 0;
      q_loaded_early = true;  // the last step issued the next non-empty request's Q, if any
    }
    SEESAW_TRACE_REQ(18);  // output stores issued
#ifdef FLASHMLA_SEESAW_TRACE
    ++trace_req;
#endif
  }  // requests
  if (tma_out && tid == 0) bulk_wait_group_all();  // the shared memory stays until the stores are done
  SEESAW_TRACE_AT(0, 22);  // exit (clock64), and on the global timer
  SEESAW_TRACE_VALUE(0, 23, global_timer_ns());
#endif
}

}  // namespace flashmla
