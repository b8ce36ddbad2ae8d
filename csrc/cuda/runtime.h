// Host-side CUDA plumbing shared by every kernel file: error checks, per-device state (streams,
// events, caching allocator, pinned staging buffers, cuBLASLt handle) and launch helpers.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <string>

#include "../core/tensor.h"
#include "allocator.h"

namespace nd::cuda {

// Throws std::runtime_error naming the call, the place and the CUDA error.
void check(cudaError_t err, const char* what, const char* file, int line);

#define ND_CUDA_CHECK(expr) ::nd::cuda::check((expr), #expr, __FILE__, __LINE__)
// After every kernel launch: configuration errors surface here, execution errors at the next sync.
#define ND_CUDA_CHECK_LAUNCH(kernel_name) ::nd::cuda::check(cudaGetLastError(), kernel_name, __FILE__, __LINE__)

struct LtState;  // cublaslt.cpp

// Everything one device needs. Created on first use of the device; lives until process exit.
struct DeviceContext {
  int index = 0;
  int sm = 0;              // compute capability * 10 + minor
  int sm_count = 0;
  size_t smem_optin = 0;   // max dynamic shared memory per block with opt-in
  cudaStream_t compute = nullptr;  // every kernel of this process on this device runs here
  cudaStream_t copy = nullptr;     // host <-> device transfers
  cudaEvent_t compute_done = nullptr;  // recorded on `compute` before transfers that must follow it
  cudaEvent_t copy_done = nullptr;     // recorded on `copy` after uploads; `compute` waits on it
  CachingAllocator allocator;

  // Two pinned staging buffers used alternately, each with an event marking its last transfer.
  static constexpr size_t kStagingBytes = size_t(32) << 20;
  std::mutex staging_mu;
  void* staging[2] = {nullptr, nullptr};
  cudaEvent_t staging_free[2] = {nullptr, nullptr};

  LtState* lt = nullptr;  // cuBLASLt handle, workspace and algorithm cache (lazy)
  std::mutex lt_mu;
};

// The context of device `index`, made current on the calling thread.
DeviceContext& device_context(int index);
inline DeviceContext& ctx_for(const Tensor& t) { return device_context(t.device().index); }
// The context of device `index` if it was created, without touching the current device.
DeviceContext* existing_context(int index);
int device_count();

// Grid size for a grid-stride loop over n items with `threads` threads per block.
inline unsigned grid_for(int64_t n, int threads) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > 65535LL * 16) blocks = 65535LL * 16;
  return static_cast<unsigned>(blocks);
}

// Largest power of two (<= 256) dividing the address: what vectorised/TC kernels may assume.
inline int pointer_alignment(const void* p) {
  uintptr_t a = reinterpret_cast<uintptr_t>(p);
  int al = 1;
  while (al < 256 && (a % (2 * al)) == 0) al *= 2;
  return al;
}

void require_float_dtype(const Tensor& t, const char* op);  // f32/f16/bf16, else throws

}  // namespace nd::cuda
