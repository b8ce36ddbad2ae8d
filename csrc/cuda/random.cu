// randn on CUDA: the shared Philox4x32-10 + Box-Muller code of core/philox.h, compiled with
// -fmad=false (see CMakeLists.txt) so every element has the same bits as on the CPU.
#include "../core/philox.h"
#include "cuda_backend.h"
#include "kernels.cuh"
#include "runtime.h"

namespace nd {

namespace cuda {

// Thread b computes Philox block first_block + b (four normals) and stores the ones inside
// [offset, offset + n) at their element index.
__global__ void randn_kernel(void* out, DType t, int64_t n, uint64_t seed, uint64_t offset, uint64_t first_block,
                             int64_t nblocks) {
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < nblocks; b += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t block = first_block + static_cast<uint64_t>(b);
    float v[4];
    philox::normal4(seed, block, v);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint64_t g = block * 4 + j;
      if (g >= offset && g < offset + static_cast<uint64_t>(n)) store_float(out, t, static_cast<int64_t>(g - offset), v[j]);
    }
  }
}

}  // namespace cuda

void CudaBackend::randn(Tensor& out, uint64_t seed, uint64_t offset) {
  const int64_t n = out.numel();
  if (n == 0) return;
  if (!out.is_contiguous()) throw std::invalid_argument("randn needs a contiguous output");
  cuda::DeviceContext& c = cuda::ctx_for(out);
  const uint64_t first = offset / 4, last = (offset + static_cast<uint64_t>(n) - 1) / 4;
  const int64_t nblocks = static_cast<int64_t>(last - first + 1);
  constexpr int kThreads = 256;
  cuda::randn_kernel<<<cuda::grid_for(nblocks, kThreads), kThreads, 0, c.compute>>>(out.data(), out.dtype, n, seed,
                                                                                    offset, first, nblocks);
  ND_CUDA_CHECK_LAUNCH("randn_kernel");
}

}  // namespace nd
