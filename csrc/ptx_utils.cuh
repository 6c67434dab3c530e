// Thin inline-PTX wrappers for the Hopper features the decode kernel uses: mbarriers, TMA tensor
// loads, wgmma descriptors/fences, named barriers and proxy fences. Each is one instruction, so
// the kernel reads as the algorithm rather than as library plumbing.
#pragma once

#include <cstdint>
#include <cuda.h>

namespace flashmla {

__device__ __forceinline__ uint32_t smem_addr(const void* ptr) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
}

// A 32-bit global load issued where it stands (asm volatile keeps it ahead of the waits that
// follow), for values needed much later: its latency overlaps whatever the thread waits for.
__device__ __forceinline__ int ld_global_early(const int* ptr) {
  int v;
  asm volatile("ld.global.nc.b32 %0, [%1];" : "=r"(v) : "l"(ptr));
  return v;
}

// Shared-memory accesses by 32-bit shared-window address. The kernels align their dynamic shared
// memory by integer arithmetic on the pointer, after which the compiler no longer knows the
// address space and emits generic 64-bit ld/st; these keep them st.shared/ld.shared.
__device__ __forceinline__ void st_shared_f32(uint32_t addr, float v) {
  asm volatile("st.shared.f32 [%0], %1;" ::"r"(addr), "f"(v) : "memory");
}
__device__ __forceinline__ void st_shared_f32_if(int pred, uint32_t addr, float v) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %2, 0;\n@p st.shared.f32 [%0], %1;\n}" ::"r"(addr), "f"(v), "r"(pred)
               : "memory");
}
// Four 8x8 matrices of 16-bit values: in each, thread t holds row t / 4, columns 2 (t % 4) and
// 2 (t % 4) + 1 (the mma accumulator layout), and threads 8 i .. 8 i + 7 give the 16-byte row
// addresses of matrix i.
__device__ __forceinline__ void stmatrix_x4(uint32_t addr, uint32_t m0, uint32_t m1, uint32_t m2, uint32_t m3) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(addr), "r"(m0), "r"(m1),
               "r"(m2), "r"(m3)
               : "memory");
}
__device__ __forceinline__ float ld_shared_f32(uint32_t addr) {
  float v;
  asm volatile("ld.shared.f32 %0, [%1];" : "=f"(v) : "r"(addr) : "memory");
  return v;
}
// Four 8x8 b16 matrices; lane i addresses a row of matrix i / 8. For a 16x16 tile whose matrices
// are (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15), the four
// registers are exactly an mma/wgmma A fragment.
__device__ __forceinline__ void ldmatrix_x4(uint32_t* r, uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// ---- mbarrier --------------------------------------------------------------------------------
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_fence_init() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}" ::"r"(smem_addr(bar))
               : "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}" ::"r"(
                   smem_addr(bar)),
               "r"(bytes)
               : "memory");
}
// Each try_wait may suspend the warp (up to the hint, in ns) until the phase completes, instead of
// returning at once into a spin loop: a waiting warp then takes no issue slots, and draws less power
// under the card's cap, beside the other warpgroup's softmax. Measured 1.1% faster on the rows with
// 256 query rows per kv head (docs/kernel-design.md 7.27, session 26). The same bound as CUTLASS's
// barrier wait, which FlashMLA's kernels use (their SASS: TRYWAIT, then NANOSLEEP.SYNCS).
constexpr uint32_t kMbarSuspendHintNs = 10000000;
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\nWAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1, %2;\n"
      "@!done bra WAIT_%=;\n}" ::"r"(smem_addr(bar)),
      "r"(parity), "n"(kMbarSuspendHintNs)
      : "memory");
}

// ---- TMA -------------------------------------------------------------------------------------
// One box of a 4-d tensor map into shared memory; completion is counted on `bar` in bytes.
__device__ __forceinline__ void tma_load_4d(void* dst, const CUtensorMap* map, uint64_t* bar, int c0,
                                            int c1, int c2, int c3, uint64_t cache_policy) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint"
      " [%0], [%1, {%2, %3, %4, %5}], [%6], %7;" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(smem_addr(bar)),
      "l"(cache_policy)
      : "memory");
}
// One box of a 3-d tensor map (dims, row, batch) into shared memory (a Q tile, +tmaq).
__device__ __forceinline__ void tma_load_3d(void* dst, const CUtensorMap* map, uint64_t* bar, int c0, int c1,
                                            int c2) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4}], [%5];" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(smem_addr(bar))
      : "memory");
}
// One box from shared memory to a 3-d tensor map (an output tile, +tmaout); rows past the
// tensor's extent are not written. Completion is tracked per thread by bulk groups: commit, then
// wait until the reads of shared memory are done (the buffer may be reused) or until all is done.
__device__ __forceinline__ void tma_store_3d(const CUtensorMap* map, uint32_t src, int c0, int c1, int c2) {
  asm volatile("cp.async.bulk.tensor.3d.global.shared::cta.bulk_group [%0, {%2, %3, %4}], [%1];" ::"l"(
                   reinterpret_cast<uint64_t>(map)),
               "r"(src), "r"(c0), "r"(c1), "r"(c2)
               : "memory");
}
__device__ __forceinline__ void bulk_commit_group() { asm volatile("cp.async.bulk.commit_group;" ::: "memory"); }
__device__ __forceinline__ void bulk_wait_group_read_all() {
  asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
}
__device__ __forceinline__ void bulk_wait_group_all() { asm volatile("cp.async.bulk.wait_group 0;" ::: "memory"); }
// Predicated forms (no branch): issued only where `pred` is non-zero. Used between wgmma issue
// and wait, where a divergent branch would make ptxas serialise the wgmmas.
__device__ __forceinline__ void mbar_arrive_expect_tx_if(int pred, uint64_t* bar, uint32_t bytes) {
  asm volatile(
      "{\n.reg .pred p;\n.reg .b64 st;\nsetp.ne.b32 p, %2, 0;\n"
      "@p mbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}" ::"r"(smem_addr(bar)),
      "r"(bytes), "r"(pred)
      : "memory");
}
__device__ __forceinline__ void tma_load_4d_if(int pred, void* dst, const CUtensorMap* map, uint64_t* bar, int c0,
                                               int c1, int c2, int c3, uint64_t cache_policy) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %8, 0;\n"
      "@p cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint"
      " [%0], [%1, {%2, %3, %4, %5}], [%6], %7;\n}" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(smem_addr(bar)),
      "l"(cache_policy), "r"(pred)
      : "memory");
}
__device__ __forceinline__ uint64_t make_evict_first_policy() {
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  return policy;
}
__device__ __forceinline__ uint64_t make_evict_normal_policy() {
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(policy));
  return policy;
}
__device__ __forceinline__ uint64_t make_evict_last_policy() {
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(policy));
  return policy;
}
// Nanoseconds on the GPU-wide timer (the same clock on every SM; for instrumented builds).
__device__ __forceinline__ long long global_timer_ns() {
  long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ void prefetch_tensor_map(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

// ---- fences and barriers ---------------------------------------------------------------------
// Generic-proxy shared-memory writes (st.shared) must be fenced before the async proxy (wgmma,
// TMA) reads them.
__device__ __forceinline__ void fence_proxy_async_smem() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;" ::"r"(id), "r"(threads) : "memory");
}
// A named barrier that also ANDs a predicate over the `threads` threads that reach it: 1 when
// every one of them passed a nonzero `pred` (one result for the whole group, so a uniform choice).
__device__ __forceinline__ int named_barrier_all(int id, int threads, int pred) {
  int all;
  asm volatile(
      "{\n.reg .pred p, q;\nsetp.ne.b32 p, %1, 0;\nbar.red.and.pred q, %2, %3, p;\nselp.b32 %0, 1, 0, q;\n}"
      : "=r"(all)
      : "r"(pred), "r"(id), "r"(threads)
      : "memory");
  return all;
}

// ---- wgmma -----------------------------------------------------------------------------------
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}
// Keeps the compiler from moving accumulator reads/writes across an async wgmma.
__device__ __forceinline__ void fence_regs(float& r) { asm volatile("" : "+f"(r)::"memory"); }

// Shared-memory matrix descriptor for 128-byte-swizzled tiles (PTX ISA "Matrix Descriptor
// Format"): start address, leading/stride byte offsets (all >> 4), swizzle mode 1 = 128B.
// Every tile we describe starts on a 1024-byte boundary plus an in-atom k offset, so the base
// offset field stays 0.
__device__ __forceinline__ uint64_t make_smem_desc_sw128(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  uint64_t desc = 0;
  desc |= static_cast<uint64_t>((addr & 0x3FFFF) >> 4);
  desc |= static_cast<uint64_t>((lbo & 0x3FFFF) >> 4) << 16;
  desc |= static_cast<uint64_t>((sbo & 0x3FFFF) >> 4) << 32;
  desc |= static_cast<uint64_t>(1) << 62;
  return desc;
}

}  // namespace flashmla
