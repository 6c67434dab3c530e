// The tile scheduler as one GPU thread block, so that a decode step's metadata costs no host
// synchronisation and can live inside a CUDA graph. It mirrors flashmla/scheduler.py step by
// step (same integer arithmetic, same searchsorted conventions) and is tested to produce
// bit-identical tensors; read that file for the why of each quantity.
#include <climits>

#include "mla_api.h"

namespace flashmla {

namespace {

constexpr int kMetaThreads = 512;
constexpr int kMaxParts = 1024;  // num_sm_parts <= num_sms; the binding checks this bound

// Number of entries of the ascending array a[0..n) that are <= x (searchsorted, right=True).
__device__ int upper_bound_count(const long long* a, int n, long long x) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (a[mid] <= x) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// Inclusive block-wide scan of one value per thread; returns the thread's prefix and the total.
__device__ long long block_inclusive_scan(long long v, long long* scratch, long long& total) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int off = 1; off < 32; off *= 2) {
    const long long n = __shfl_up_sync(0xffffffff, v, off);
    if (lane >= off) v += n;
  }
  if (lane == 31) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    long long w = lane < kMetaThreads / 32 ? scratch[lane] : 0;
#pragma unroll
    for (int off = 1; off < 32; off *= 2) {
      const long long n = __shfl_up_sync(0xffffffff, w, off);
      if (lane >= off) w += n;
    }
    if (lane < kMetaThreads / 32) scratch[lane] = w;
  }
  __syncthreads();
  if (warp > 0) v += scratch[warp - 1];
  total = scratch[kMetaThreads / 32 - 1];
  __syncthreads();
  return v;
}

__global__ void __launch_bounds__(kMetaThreads) mla_metadata_kernel(const MetadataParams p) {
  __shared__ long long scan_scratch[kMetaThreads / 32];
  __shared__ long long global_cuts[kMaxParts + 1];
  __shared__ long long sorted_cuts[kMaxParts];   // [-1, interior cuts...]
  __shared__ long long distinct_upto[kMaxParts];
  const int b = p.batch;
  const int parts = p.num_sm_parts;
  long long* block_end = p.workspace;        // cumsum(blocks)
  long long* line_end = p.workspace + b;     // cumsum(width)
  __shared__ int max_blocks, min_nonzero_blocks;  // over the batch; min over non-empty requests
  if (threadIdx.x == 0) {
    max_blocks = 0;
    min_nonzero_blocks = INT_MAX;
  }
  __syncthreads();

  // 1. blocks, width and their running sums.
  long long carry_blocks = 0, carry_units = 0;
  for (int base = 0; base < b; base += kMetaThreads) {
    const int i = base + threadIdx.x;
    long long blocks = 0;
    if (i < b) blocks = (max(p.cache_seqlens[i], 0) + kPageSize - 1) / kPageSize;
    const long long width = blocks > 0 ? blocks + kFixedOverheadBlocks : 0;
    if (blocks > 0) {
      atomicMax(&max_blocks, static_cast<int>(blocks));
      atomicMin(&min_nonzero_blocks, static_cast<int>(blocks));
    }
    long long tot_b, tot_u;
    const long long sb = block_inclusive_scan(blocks, scan_scratch, tot_b);
    const long long su = block_inclusive_scan(width, scan_scratch, tot_u);
    if (i < b) {
      block_end[i] = carry_blocks + sb;
      line_end[i] = carry_units + su;
    }
    carry_blocks += tot_b;
    carry_units += tot_u;
  }
  __syncthreads();
  const long long total_blocks = carry_blocks;
  const long long total_units = carry_units;
  // Column split: the first half of the parts only (the kernel runs two thread blocks per part);
  // the other parts' cuts all land on total_units, i.e. they are empty.
  const int half = parts / 2;  // a split needs two thread blocks per part: at least two parts
  long long units_half = half > 0 ? (total_units + half - 1) / half : 0;
  if (units_half < p.min_blocks_per_part) units_half = p.min_blocks_per_part;
  const bool split = half > 0 && (p.column_split == 1 || (p.column_split == 2 && units_half <= kColumnSplitMaxUnits));
  const int used = split ? half : parts;
  long long units_per_part = (total_units + used - 1) / used;
  if (units_per_part < p.min_blocks_per_part) units_per_part = p.min_blocks_per_part;  // clamp_min(floor >= 1)
  // Equal-length batch: whole requests per part when that costs at most P + slack.
  if (max_blocks > 0 && min_nonzero_blocks == max_blocks) {
    const long long request_units = max_blocks + kFixedOverheadBlocks;
    const long long aligned = (units_per_part + request_units - 1) / request_units * request_units;
    if (aligned <= units_per_part + kWholeRequestSlackBlocks) units_per_part = aligned;
  }

  // 2. Part boundaries on the line, mapped to global block indices.
  for (int c = threadIdx.x; c <= parts; c += kMetaThreads) {
    long long x = static_cast<long long>(c) * units_per_part;
    if (x > total_units) x = total_units;
    const int r = upper_bound_count(line_end, b, x);
    long long g;
    if (r < b) {
      const long long blocks_r = block_end[r] - (r > 0 ? block_end[r - 1] : 0);
      const long long start_r = line_end[r] - (blocks_r > 0 ? blocks_r + kFixedOverheadBlocks : 0);
      long long inside = x - start_r - kFixedOverheadBlocks;
      if (inside < 0) inside = 0;
      if (inside > blocks_r) inside = blocks_r;
      g = block_end[r] - blocks_r + inside;
    } else {
      g = total_blocks;
    }
    global_cuts[c] = g;
  }
  __syncthreads();

  // 3. Distinct interior cuts (sorted_cuts[0] = -1 is a sentinel that is never "new").
  if (threadIdx.x == 0) {
    sorted_cuts[0] = -1;
    distinct_upto[0] = 0;
    for (int k = 1; k < parts; ++k) {
      sorted_cuts[k] = global_cuts[k];
      distinct_upto[k] = distinct_upto[k - 1] + (global_cuts[k] != sorted_cuts[k - 1] ? 1 : 0);
    }
  }
  __syncthreads();
  auto distinct_cuts_le = [&](long long x) {
    return distinct_upto[upper_bound_count(sorted_cuts, parts, x) - 1];
  };

  // 4. Chunks per request and their running sum = num_splits.
  if (threadIdx.x == 0) p.num_splits[0] = 0;
  long long carry_chunks = 0;
  for (int base = 0; base < b; base += kMetaThreads) {
    const int i = base + threadIdx.x;
    long long chunks = 0;
    if (i < b) {
      const long long end = block_end[i];
      const long long begin = i > 0 ? block_end[i - 1] : 0;
      if (end > begin) chunks = 1 + distinct_cuts_le(end - 1) - distinct_cuts_le(begin);
    }
    long long tot;
    const long long sc = block_inclusive_scan(chunks, scan_scratch, tot);
    if (i < b) p.num_splits[i + 1] = static_cast<int>(carry_chunks + sc);
    carry_chunks += tot;
  }

  // 5. One metadata row per part.
  for (int part = threadIdx.x; part < parts; part += kMetaThreads) {
    const long long g0 = global_cuts[part], g1 = global_cuts[part + 1];
    int* row = p.tile_metadata + part * kMetadataWidth;
    if (g1 > g0) {
      const int begin_req = upper_bound_count(block_end, b, g0);
      const int end_req = upper_bound_count(block_end, b, g1 - 1 > 0 ? g1 - 1 : 0);
      // block_start[r] = block_end[r - 1]; an index past the batch reads 0, as _take does.
      const long long begin_start = begin_req < b && begin_req > 0 ? block_end[begin_req - 1] : 0;
      const long long end_start = end_req < b && end_req > 0 ? block_end[end_req - 1] : 0;
      row[0] = begin_req;
      row[1] = static_cast<int>(g0 - begin_start);
      row[2] = end_req;
      row[3] = static_cast<int>(g1 - end_start);
      row[4] = static_cast<int>(distinct_cuts_le(g0) - distinct_cuts_le(begin_start));
      row[5] = static_cast<int>(g0);
      row[6] = static_cast<int>(g1);
    } else {
      row[0] = -1;
      row[1] = 0;
      row[2] = -1;
      row[3] = 0;
      row[4] = 0;
      row[5] = static_cast<int>(g0);
      row[6] = static_cast<int>(g0);
    }
    row[kColColumnSplit] = split ? 1 : 0;
  }
}

}  // namespace

cudaError_t launch_mla_metadata(const MetadataParams& params, cudaStream_t stream) {
  if (params.num_sm_parts < 1 || params.num_sm_parts > kMaxParts || params.batch < 1 ||
      params.min_blocks_per_part < 1 || params.column_split < 0 || params.column_split > 2) {
    return cudaErrorInvalidValue;
  }
  mla_metadata_kernel<<<1, kMetaThreads, 0, stream>>>(params);
  return cudaGetLastError();
}

}  // namespace flashmla
