// Nearest-neighbour upsampling of the trailing 2 or 3 dims, with the CPU's (torch's) index rules
// for scale = float(in) / out: 'nearest' takes floor(float(dst) * scale), 'nearest-exact'
// floor(float((dst + 0.5) * double(scale))), both clamped to in - 1.
#include <stdexcept>

#include "cuda_backend.h"
#include "kernels.cuh"
#include "runtime.h"

namespace nd {

namespace cuda {

struct ResampleDims {
  int nd;             // spatial dims (2 or 3)
  int64_t in[3], out[3];
  float scale[3];     // in / out
};

__device__ __forceinline__ int64_t nearest_src(int64_t dst, int64_t in, float scale, bool exact) {
  const float f = exact ? static_cast<float>((static_cast<double>(dst) + 0.5) * static_cast<double>(scale))
                        : static_cast<float>(dst) * scale;
  const int64_t s = static_cast<int64_t>(floorf(f));
  return s < in - 1 ? s : in - 1;
}

__global__ void upsample_nearest_kernel(const void* x, void* y, int esize, int64_t total, ResampleDims r, bool exact) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t rem = i, src = 0, in_block = 1;
    int64_t idx_out[3];
    for (int d = r.nd - 1; d >= 0; --d) {
      idx_out[d] = rem % r.out[d];
      rem /= r.out[d];
    }
    // rem is now the index over the leading (batch, channel) dims
    for (int d = 0; d < r.nd; ++d) in_block *= r.in[d];
    src = rem * in_block;
    int64_t mul = 1;
    for (int d = r.nd - 1; d >= 0; --d) {
      src += nearest_src(idx_out[d], r.in[d], r.scale[d], exact) * mul;
      mul *= r.in[d];
    }
    switch (esize) {
      case 1: static_cast<uint8_t*>(y)[i] = static_cast<const uint8_t*>(x)[src]; break;
      case 2: static_cast<uint16_t*>(y)[i] = static_cast<const uint16_t*>(x)[src]; break;
      case 4: static_cast<uint32_t*>(y)[i] = static_cast<const uint32_t*>(x)[src]; break;
      default: static_cast<uint64_t*>(y)[i] = static_cast<const uint64_t*>(x)[src]; break;
    }
  }
}

}  // namespace cuda

void CudaBackend::upsample_nearest(const Tensor& x, Tensor& out, int spatial_dims, bool exact) {
  if (spatial_dims < 1 || spatial_dims > 3 || x.dim() < spatial_dims || out.dim() != x.dim())
    throw std::invalid_argument("upsample_nearest: bad spatial dims for " + x.describe());
  if (x.dtype != out.dtype) throw std::invalid_argument("upsample_nearest: input and output dtypes differ");
  if (!x.is_contiguous() || !out.is_contiguous()) throw std::invalid_argument("upsample_nearest needs contiguous tensors");
  const int64_t total = out.numel();
  if (total == 0) return;
  cuda::ResampleDims r;
  r.nd = spatial_dims;
  for (int d = 0; d < spatial_dims; ++d) {
    const int64_t axis = x.dim() - spatial_dims + d;
    r.in[d] = x.shape[axis];
    r.out[d] = out.shape[axis];
    r.scale[d] = static_cast<float>(r.in[d]) / static_cast<float>(r.out[d]);
  }
  cuda::DeviceContext& c = cuda::ctx_for(out);
  constexpr int kThreads = 256;
  cuda::upsample_nearest_kernel<<<cuda::grid_for(total, kThreads), kThreads, 0, c.compute>>>(
      x.data(), out.data(), static_cast<int>(x.itemsize()), total, r, exact);
  ND_CUDA_CHECK_LAUNCH("upsample_nearest_kernel");
}

}  // namespace nd
