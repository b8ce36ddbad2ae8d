// Rotary position embedding on x [B, L, H, D] (any strides) with float32 cos/sin tables
// [L, D/2] or [B, L, D/2]: interleaved pairs (2i, 2i+1) or halves (i, i + D/2).
#include <stdexcept>

#include "cuda_backend.h"
#include "kernels.cuh"
#include "runtime.h"

namespace nd {

namespace cuda {

struct RopeParams {
  const void* x;
  DType xt;
  void* y;
  DType yt;
  int64_t B, L, H, half;
  int64_t xs[4], ys[4];     // strides of x and out over (b, l, h, d)
  const float* cos;
  const float* sin;
  int64_t cs_b, cs_l, cs_i;  // table strides (cs_b = 0 for [L, D/2] tables)
  bool interleaved;
};

__global__ void rope_kernel(const RopeParams p) {
  const int64_t total = p.B * p.L * p.H * p.half;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = idx % p.half, h = (idx / p.half) % p.H, l = (idx / (p.half * p.H)) % p.L;
    const int64_t b = idx / (p.half * p.H * p.L);
    const float c = p.cos[b * p.cs_b + l * p.cs_l + i * p.cs_i];
    const float s = p.sin[b * p.cs_b + l * p.cs_l + i * p.cs_i];
    const int64_t d0 = p.interleaved ? 2 * i : i, d1 = p.interleaved ? 2 * i + 1 : i + p.half;
    const int64_t xb = b * p.xs[0] + l * p.xs[1] + h * p.xs[2], yb = b * p.ys[0] + l * p.ys[1] + h * p.ys[2];
    const float x0 = load_float(p.x, p.xt, xb + d0 * p.xs[3]), x1 = load_float(p.x, p.xt, xb + d1 * p.xs[3]);
    store_float(p.y, p.yt, yb + d0 * p.ys[3], x0 * c - x1 * s);
    store_float(p.y, p.yt, yb + d1 * p.ys[3], x1 * c + x0 * s);
  }
}

}  // namespace cuda

void CudaBackend::rope(const Tensor& x, const Tensor& cos, const Tensor& sin, Tensor& out, bool interleaved) {
  if (x.dim() != 4 || out.shape != x.shape) throw std::invalid_argument("rope expects x [B, L, H, D] and a matching out");
  cuda::require_float_dtype(x, "rope");
  if (cos.dtype != DType::F32 || sin.dtype != DType::F32 || cos.shape != sin.shape || cos.strides != sin.strides)
    throw std::invalid_argument("rope needs float32 cos/sin tables of one shape and layout");
  const int64_t D = x.shape[3];
  if (D % 2 != 0) throw std::invalid_argument("rope needs an even head dim");
  cuda::RopeParams p;
  p.x = x.data(), p.xt = x.dtype, p.y = out.data(), p.yt = out.dtype;
  p.B = x.shape[0], p.L = x.shape[1], p.H = x.shape[2], p.half = D / 2;
  for (int d = 0; d < 4; ++d) p.xs[d] = x.strides[d], p.ys[d] = out.strides[d];
  p.cos = cos.ptr<float>(), p.sin = sin.ptr<float>();
  if (cos.dim() == 2) {
    p.cs_b = 0, p.cs_l = cos.strides[0], p.cs_i = cos.strides[1];
  } else if (cos.dim() == 3) {
    p.cs_b = cos.shape[0] == 1 ? 0 : cos.strides[0], p.cs_l = cos.strides[1], p.cs_i = cos.strides[2];
  } else {
    throw std::invalid_argument("rope tables must be [L, D/2] or [B, L, D/2]");
  }
  p.interleaved = interleaved;
  const int64_t total = p.B * p.L * p.H * p.half;
  if (total == 0) return;
  cuda::DeviceContext& c = cuda::ctx_for(out);
  constexpr int kThreads = 256;
  cuda::rope_kernel<<<cuda::grid_for(total, kThreads), kThreads, 0, c.compute>>>(p);
  ND_CUDA_CHECK_LAUNCH("rope_kernel");
}

}  // namespace nd
