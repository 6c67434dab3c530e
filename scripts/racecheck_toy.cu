// Does compute-sanitizer's racecheck model the barrier handoffs the decode kernels use?
//
// docs/kernel-design.md (sections 5 and 7.4) reports racecheck hazards between one warpgroup's
// shared-memory writes and the other's reads, ordered in the kernels by named barriers (bar.arrive
// by the writer, bar.sync by the reader), and even where all 256 threads pass __syncthreads().
// This toy has the same two warpgroups and the same handoff, in four modes, and nothing else (no
// TMA, no wgmma, no mbarrier):
//   0  writer bar.arrive / reader bar.sync on named barriers 1 and 2 (the kernels' default)
//   1  bar.sync on both sides (the kernels' "rendezvous" variant)
//   2  __syncthreads() between the phases (the control: racecheck must report nothing)
//   3  no barrier at all (a real race: racecheck must report it)
//   4, 5  modes 0 and 2 after `griddepcontrol.launch_dependents` at kernel entry, as the decode
//         kernels start (programmatic dependent launch of the combine)
//   6  mode 1 with the kernels' stats pattern: one writer per quad, the quad's four threads read
//   7  mode 1 plus the kernels' stage release: every thread arrives on an mbarrier after its
//      read, and one consumer thread waits on it (the producer thread refilling the stage)
//   8  mode 1 plus a barrier of the producer warpgroup alone (`bar.sync 3, 128`) before its
//      write, as the kernels sync warpgroup 0 after its Q load and after zeroing a page's tail
//   9  mode 8 with that warpgroup-only sync made of an mbarrier (128 arrivals, all 128 wait)
// Each mode's output is checked on the host, so a broken handoff shows as a wrong sum too.
//
//   nvcc -O2 -lineinfo -gencode arch=compute_90a,code=sm_90a -Icsrc scripts/racecheck_toy.cu -o toy
//   compute-sanitizer --tool racecheck --racecheck-report hazard ./toy MODE
// (scripts/racecheck_toy.sh builds it and runs every mode.)
#include <cstdio>
#include <cstdlib>

#include "ptx_utils.cuh"

using namespace flashmla;

constexpr int kThreads = 256;  // two warpgroups, as in the decode kernels
constexpr int kRows = 128;     // one value per thread of a warpgroup
constexpr int kSteps = 16;

__global__ void handoff(int variant, float* out) {
  __shared__ float buf[kRows];
  if (variant >= 4) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  const int mode = variant == 4 ? 0 : variant == 5 ? 2 : variant >= 6 ? 1 : variant;
  __shared__ uint64_t released;  // mode 7's mbarrier: all 256 threads arrive once per step
  if (threadIdx.x == 0) mbar_init(&released, kThreads);
  __syncthreads();
  const bool quad_pattern = variant == 6;
  const bool with_mbarrier = variant == 7;
  const bool with_group_barrier = variant == 8;
  const bool with_group_mbarrier = variant == 9;
  __shared__ uint64_t group_done;  // mode 9: warpgroup 0's own sync, as an mbarrier
  if (threadIdx.x == 0) mbar_init(&group_done, 128);
  __syncthreads();
  const int wg = threadIdx.x / 128;
  const int lane = threadIdx.x % 128;
  // each writer thread fills another thread's slot, as the kernels' P/scale stores do
  const int slot = (lane * 37) % kRows;
  float acc = 0.f;
  for (int step = 0; step < kSteps; ++step) {
    if (wg == 0) {  // producer: wait until the consumer read the previous values, then write
      if (step > 0) {
        if (mode == 0 || mode == 1) named_barrier_sync(2, kThreads);
      }
      if (with_group_barrier) named_barrier_sync(3, 128);  // warpgroup 0 alone
      if (with_group_mbarrier) {
        mbar_arrive(&group_done);
        mbar_wait(&group_done, step & 1);
      }
      if (!quad_pattern) {
        st_shared_f32(smem_addr(&buf[slot]), float(step * kRows + slot));
      } else if ((lane & 3) == 0) {  // one writer per quad fills the quad's four slots
        for (int j = 0; j < 4; ++j) st_shared_f32(smem_addr(&buf[lane + j]), float(step * kRows + lane + j));
      }
      if (mode == 0) named_barrier_arrive(1, kThreads);
      if (mode == 1) named_barrier_sync(1, kThreads);
      if (with_mbarrier) mbar_arrive(&released);
    } else {  // consumer: wait for the values, read, release the buffer
      if (mode == 0 || mode == 1) named_barrier_sync(1, kThreads);
    }
    if (mode == 2) __syncthreads();
    if (wg == 1) {
      acc += ld_shared_f32(smem_addr(&buf[lane]));
      if (with_mbarrier) {
        mbar_arrive(&released);
        if (lane == 0) mbar_wait(&released, step & 1);
        __syncwarp();
      }
      if (step + 1 < kSteps) {
        if (mode == 0) named_barrier_arrive(2, kThreads);
        if (mode == 1) named_barrier_sync(2, kThreads);
      }
    }
    if (mode == 2) __syncthreads();
  }
  out[threadIdx.x] = acc;
}

int main(int argc, char** argv) {
  const int mode = argc > 1 ? atoi(argv[1]) : 0;
  if (mode < 0 || mode > 9) {
    fprintf(stderr, "mode must be 0..9, got %d\n", mode);
    return 2;
  }
  float* d_out = nullptr;
  cudaMalloc(&d_out, kThreads * sizeof(float));
  handoff<<<1, kThreads>>>(mode, d_out);
  float h_out[kThreads];
  cudaError_t err = cudaMemcpy(h_out, d_out, sizeof(h_out), cudaMemcpyDeviceToHost);
  if (err != cudaSuccess) {
    fprintf(stderr, "CUDA error: %s\n", cudaGetErrorString(err));
    return 1;
  }
  int wrong = 0;
  for (int lane = 0; lane < kRows; ++lane) {
    float expected = 0.f;
    for (int step = 0; step < kSteps; ++step) expected += float(step * kRows + lane);
    wrong += h_out[128 + lane] != expected;
  }
  printf("mode %d: %d of %d consumer sums wrong%s\n", mode, wrong, kRows,
         mode == 3 ? " (mode 3 has no barrier: any count is possible)" : "");
  cudaFree(d_out);
  return mode != 3 && wrong ? 1 : 0;
}
