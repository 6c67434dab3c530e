// Thin torch binding for the sm90a kernels: validates tensors (raising Python exceptions that
// name the argument), allocates outputs and partial buffers, fills the plain-C++ parameter
// structs of mla_api.h and launches on the current stream. No CUTLASS/CUDA kernel code here.
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <cstring>
#include <vector>

#include "mla_api.h"

namespace {

// Bad arguments raise Python ValueError / TypeError: torch translates c10::ValueError and
// c10::TypeError itself (pybind11's own exception types thrown from here crashed the process on
// the GPU host, while torch's translation is the path every torch op uses).
#define MLA_CHECK(cond, ...) TORCH_CHECK_VALUE(cond, __VA_ARGS__)
#define MLA_CHECK_TYPE(cond, ...) TORCH_CHECK_TYPE(cond, __VA_ARGS__)

// "[d0, d1, ...]" built from size(i): messages avoid streaming IntArrayRef (an error path that
// crashed on the GPU host in one test, cause not established; see docs/kernel-design.md).
std::string shape_of(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

void check_cuda_tensor(const at::Tensor& t, const char* name, const at::Device& device) {
  MLA_CHECK(t.is_cuda(), name, " must be a CUDA tensor, got device ", t.device());
  MLA_CHECK(t.device() == device, name, " must be on ", device, ", got ", t.device());
}

void check_int32_contiguous(const at::Tensor& t, const char* name) {
  MLA_CHECK_TYPE(t.scalar_type() == at::kInt, name, " must have dtype torch.int32, got ", t.scalar_type());
  MLA_CHECK(t.is_contiguous(), name, " must be contiguous");
}

void check_sm90(const at::Device& device) {
  int major = 0, minor = 0, smem_optin = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device.index());
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device.index());
  cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device.index());
  TORCH_CHECK(major == 9 && minor == 0, "the flashmla CUDA kernel needs an sm_90 (Hopper) GPU, got sm_", major, minor);
  TORCH_CHECK(smem_optin >= flashmla::mla_decode_smem_bytes(), "the device allows ", smem_optin,
              " bytes of shared memory per block; the kernel needs ", flashmla::mla_decode_smem_bytes());
}

void check_cuda(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, " failed: ", cudaGetErrorString(err));
}

std::vector<at::Tensor> decode(const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& block_table,
                               const at::Tensor& cache_seqlens, double softmax_scale, bool causal,
                               const at::Tensor& tile_scheduler_metadata, const at::Tensor& num_splits,
                               int64_t schedule) {
  const at::Device device = q.device();
  check_cuda_tensor(q, "q", device);
  check_cuda_tensor(k_cache, "k_cache", device);
  check_cuda_tensor(block_table, "block_table", device);
  check_cuda_tensor(cache_seqlens, "cache_seqlens", device);
  check_cuda_tensor(tile_scheduler_metadata, "tile_scheduler_metadata", device);
  check_cuda_tensor(num_splits, "num_splits", device);
  check_sm90(device);
  const c10::cuda::CUDAGuard guard(device);

  MLA_CHECK_TYPE(q.scalar_type() == at::kBFloat16 || q.scalar_type() == at::kHalf,
                   "q must be bfloat16 or float16, got ", q.scalar_type());
  MLA_CHECK_TYPE(k_cache.scalar_type() == q.scalar_type(), "k_cache must have q's dtype ", q.scalar_type(),
                   ", got ", k_cache.scalar_type());
  MLA_CHECK(q.dim() == 4 && q.size(3) == flashmla::kHeadDimQK, "q must have shape [b, s_q, h_q, 576], got ",
            shape_of(q));
  MLA_CHECK(k_cache.dim() == 4 && k_cache.size(1) == flashmla::kPageSize && k_cache.size(3) == flashmla::kHeadDimQK,
            "k_cache must have shape [num_blocks, 64, h_kv, 576], got ", shape_of(k_cache));
  MLA_CHECK(q.stride(3) == 1, "q must have a contiguous last dimension");
  MLA_CHECK(k_cache.stride(3) == 1, "k_cache must have a contiguous last dimension");
  check_int32_contiguous(block_table, "block_table");
  check_int32_contiguous(cache_seqlens, "cache_seqlens");
  check_int32_contiguous(tile_scheduler_metadata, "tile_scheduler_metadata");
  check_int32_contiguous(num_splits, "num_splits");

  const int64_t batch = q.size(0), s_q = q.size(1), h_q = q.size(2), h_kv = k_cache.size(2);
  MLA_CHECK(batch > 0 && s_q > 0 && h_q > 0 && h_kv > 0, "q and k_cache must be non-empty, got q ", shape_of(q),
            " and k_cache ", shape_of(k_cache));
  MLA_CHECK(h_q % h_kv == 0, "h_q (", h_q, ") must be a multiple of h_kv (", h_kv, ")");
  MLA_CHECK(block_table.dim() == 2 && block_table.size(0) == batch, "block_table must have shape [", batch,
            ", max_blocks], got ", shape_of(block_table));
  MLA_CHECK(cache_seqlens.dim() == 1 && cache_seqlens.size(0) == batch, "cache_seqlens must have shape [", batch,
            "], got ", shape_of(cache_seqlens));
  MLA_CHECK(tile_scheduler_metadata.dim() == 2 && tile_scheduler_metadata.size(1) == flashmla::kMetadataWidth &&
                tile_scheduler_metadata.size(0) >= 1,
            "tile_scheduler_metadata must have shape [num_sm_parts, 8], got ", shape_of(tile_scheduler_metadata));
  MLA_CHECK(num_splits.dim() == 1 && num_splits.size(0) == batch + 1, "num_splits must have shape [", batch + 1,
            "], got ", shape_of(num_splits));

  // TMA needs 16-byte aligned strides and base; q rows are read with 16-byte loads.
  at::Tensor q_in = q;
  if (q.stride(0) % 8 || q.stride(1) % 8 || q.stride(2) % 8 || reinterpret_cast<uintptr_t>(q.data_ptr()) % 16) {
    q_in = q.contiguous();
  }
  MLA_CHECK(k_cache.stride(0) % 8 == 0 && k_cache.stride(1) % 8 == 0 && k_cache.stride(2) % 8 == 0 &&
                reinterpret_cast<uintptr_t>(k_cache.data_ptr()) % 16 == 0,
            "k_cache strides must be multiples of 8 elements and its data 16-byte aligned (TMA), got strides ",
            k_cache.stride(0), ",", k_cache.stride(1), ",", k_cache.stride(2));
  MLA_CHECK(k_cache.size(0) <= INT32_MAX, "k_cache has too many blocks for int32 page ids");

  const int64_t heads_per_kv = h_q / h_kv;
  const int64_t rows = s_q * heads_per_kv;
  const int64_t num_m_blocks = (rows + flashmla::kRowsPerTile - 1) / flashmla::kRowsPerTile;
  const int64_t num_sm_parts = tile_scheduler_metadata.size(0);

  auto out = at::empty({batch, s_q, h_q, flashmla::kHeadDimV}, q.options());
  auto lse = at::empty({batch, h_q, s_q}, q.options().dtype(at::kFloat));
  // Both partial buffers in one allocation (fewer allocator calls on the latency path).
  const int64_t accum_rows = (batch + num_sm_parts) * h_kv * rows;
  auto accum = at::empty({accum_rows * (flashmla::kHeadDimV + 1)}, q.options().dtype(at::kFloat));
  auto out_accum = accum.narrow(0, 0, accum_rows * flashmla::kHeadDimV);
  auto lse_accum = accum.narrow(0, accum_rows * flashmla::kHeadDimV, accum_rows);

  flashmla::DecodeParams p{};
  p.q = q_in.data_ptr();
  p.q_stride_b = q_in.stride(0);
  p.q_stride_s = q_in.stride(1);
  p.q_stride_h = q_in.stride(2);
  p.k_cache = k_cache.data_ptr();
  p.k_stride_block = k_cache.stride(0);
  p.k_stride_token = k_cache.stride(1);
  p.k_stride_head = k_cache.stride(2);
  p.num_blocks = static_cast<int>(k_cache.size(0));
  p.block_table = block_table.data_ptr<int>();
  p.block_table_stride = block_table.stride(0);
  p.cache_seqlens = cache_seqlens.data_ptr<int>();
  p.tile_metadata = tile_scheduler_metadata.data_ptr<int>();
  p.num_splits = num_splits.data_ptr<int>();
  p.num_sm_parts = static_cast<int>(num_sm_parts);
  p.out = out.data_ptr();
  p.lse = lse.data_ptr<float>();
  p.out_accum = out_accum.data_ptr<float>();
  p.lse_accum = lse_accum.data_ptr<float>();
  // +overlapcombine: per (request, kv head, m-block) counts of stored chunks, zero at the launch.
  // Only the seesaw kernel counts; with another kernel the combine would wait for ever.
  MLA_CHECK(!(schedule & 1048576) || (schedule & 16),
            "schedule: +overlapcombine (1048576) needs the seesaw kernel (16), got ", schedule);
  at::Tensor chunk_done;
  if (schedule & 1048576) {
    chunk_done = at::zeros({batch * h_kv * num_m_blocks}, q.options().dtype(at::kInt));
    p.chunk_done = chunk_done.data_ptr<int>();
  }
  p.batch = static_cast<int>(batch);
  p.s_q = static_cast<int>(s_q);
  p.h_q = static_cast<int>(h_q);
  p.h_kv = static_cast<int>(h_kv);
  p.heads_per_kv = static_cast<int>(heads_per_kv);
  p.rows = static_cast<int>(rows);
  p.num_m_blocks = static_cast<int>(num_m_blocks);
  p.softmax_scale = static_cast<float>(softmax_scale);
  p.causal = causal && s_q > 1;
  MLA_CHECK(schedule >= 0 && schedule <= 16777215,
            "schedule must be 0 (auto), 1 (serial), 2 (pipelined), 3 (chained) or 16 (seesaw), plus 4 for "
            "rendezvous barriers, 8 for the column-split combine, 32 for L2 evict_normal K loads, 64 for "
            "the seesaw's early refill, 128 for 128-byte L2 promotion, 256 to wait for whole K tiles, 512 "
            "for the seesaw's next-pair S queued ahead, 1024 / 2048 / 8192 / 16384 for the seesaw's timing "
            "probes (wrong output by design), 4096 to launch the seesaw's m-blocks in clusters of two and "
            "32768 / 65536 for TMA output stores / Q loads (not with the column split), 131072 for the serial kernel's "
            "column split, 262144 for the seesaw's unmasked steady state, 524288 for its PV_B,right "
            "ahead of the next S, 1048576 for the seesaw's combine overlapping its tail, "
            "2097152 for its early Q load at a request boundary, 4194304 for its chained PVs and 8388608 for "
            "S_B over the right boxes first after them, got ",
            schedule);
  MLA_CHECK(!(schedule & 131072) || ((schedule & 16) == 0 && (schedule & 3) <= 1),
            "schedule: the column split (131072) is a variant of the serial kernel (schedule 0 or 1 without "
            "16), got ", schedule);
  p.schedule = static_cast<int>(schedule);

  const auto dtype = q.scalar_type() == at::kBFloat16 ? flashmla::DType::kBF16 : flashmla::DType::kFP16;
  check_cuda(flashmla::launch_mla_decode(p, dtype, c10::cuda::getCurrentCUDAStream().stream()), "flashmla decode launch");
  return {out, lse};
}

std::vector<at::Tensor> get_mla_metadata(const at::Tensor& cache_seqlens, int64_t num_q_tokens_per_head_k,
                                         int64_t num_heads_k, int64_t num_sms, int64_t min_blocks_per_part,
                                         int64_t column_split) {
  MLA_CHECK(cache_seqlens.is_cuda(), "cache_seqlens must be a CUDA tensor, got device ", cache_seqlens.device());
  check_int32_contiguous(cache_seqlens, "cache_seqlens");
  MLA_CHECK(cache_seqlens.dim() == 1 && cache_seqlens.size(0) > 0,
            "cache_seqlens must have shape [b] with b > 0, got ", shape_of(cache_seqlens));
  MLA_CHECK(num_q_tokens_per_head_k > 0, "num_q_tokens_per_head_k must be positive, got ", num_q_tokens_per_head_k);
  MLA_CHECK(num_heads_k > 0, "num_heads_k must be positive, got ", num_heads_k);
  MLA_CHECK(num_sms > 0 && num_sms <= 1024, "num_sms must be in [1, 1024], got ", num_sms);
  MLA_CHECK(min_blocks_per_part >= 1 && min_blocks_per_part <= (1 << 20),
            "min_blocks_per_part must be in [1, 2**20], got ", min_blocks_per_part);
  const c10::cuda::CUDAGuard guard(cache_seqlens.device());
  const int64_t num_m_blocks = (num_q_tokens_per_head_k + flashmla::kRowsPerTile - 1) / flashmla::kRowsPerTile;
  const int64_t parts = std::max<int64_t>(1, num_sms / num_heads_k / num_m_blocks);
  const int64_t batch = cache_seqlens.size(0);
  MLA_CHECK(column_split >= 0 && column_split <= 2,
            "column_split must be 0 (never), 1 (always) or 2 (when the parts are short), got ", column_split);
  auto opts = cache_seqlens.options();
  auto metadata = at::empty({parts, flashmla::kMetadataWidth}, opts);
  auto num_splits = at::empty({batch + 1}, opts);
  auto workspace = at::empty({2 * batch}, opts.dtype(at::kLong));
  flashmla::MetadataParams p{};
  p.cache_seqlens = cache_seqlens.data_ptr<int>();
  p.batch = static_cast<int>(batch);
  p.num_sm_parts = static_cast<int>(parts);
  p.tile_metadata = metadata.data_ptr<int>();
  p.num_splits = num_splits.data_ptr<int>();
  p.workspace = reinterpret_cast<long long*>(workspace.data_ptr<int64_t>());
  p.min_blocks_per_part = static_cast<int>(min_blocks_per_part);
  p.column_split = static_cast<int>(column_split);
  check_cuda(flashmla::launch_mla_metadata(p, c10::cuda::getCurrentCUDAStream().stream()), "flashmla metadata launch");
  return {metadata, num_splits};
}

// The seesaw kernel's timeline from an instrumented build (empty in a normal build).
at::Tensor seesaw_trace() {
  int dims[4];
  std::vector<long long> buf(1 << 22);
  const int n = flashmla::seesaw_trace_copy(buf.data(), static_cast<int>(buf.size()), dims);
  if (n == 0) return at::empty({0}, at::kLong);
  auto out = at::empty({dims[0], dims[1], dims[2], dims[3]}, at::kLong);
  std::memcpy(out.data_ptr<int64_t>(), buf.data(), sizeof(long long) * out.numel());
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "flashmla sm90a MLA decode kernels (split-KV main + combine + GPU scheduler)";
  m.def("decode", &decode, "Paged MLA decode: returns (out [b,s_q,h_q,512], lse [b,h_q,s_q])",
        pybind11::arg("q"), pybind11::arg("k_cache"), pybind11::arg("block_table"), pybind11::arg("cache_seqlens"),
        pybind11::arg("softmax_scale"), pybind11::arg("causal"), pybind11::arg("tile_scheduler_metadata"),
        pybind11::arg("num_splits"), pybind11::arg("schedule") = 0);
  m.def("get_mla_metadata", &get_mla_metadata, "Tile-scheduler metadata computed on the GPU",
        pybind11::arg("cache_seqlens"), pybind11::arg("num_q_tokens_per_head_k"), pybind11::arg("num_heads_k"),
        pybind11::arg("num_sms"), pybind11::arg("min_blocks_per_part") = 1, pybind11::arg("column_split") = 0);
  m.def("smem_bytes", &flashmla::mla_decode_smem_bytes, "Shared memory per block of the main kernel");
  m.def("seesaw_trace", &seesaw_trace, "Seesaw timeline of an instrumented build (-DFLASHMLA_SEESAW_TRACE)");
}
