// normalize_channels on CUDA: F.normalize over dim 1 of [N, C, S] (the Wan VAE's RMS norm) with the
// affine and optional SiLU in one pass. One thread per (n, s) position walks the channels twice;
// neighbouring threads read neighbouring positions, so every channel read is coalesced.
#include <stdexcept>

#include "cuda_backend.h"
#include "kernels.cuh"
#include "runtime.h"

namespace nd {

namespace cuda {

__global__ void normalize_channels_kernel(const void* x, DType xt, void* y, DType yt, int64_t N, int64_t C, int64_t S,
                                          const float* w, const float* b, float scale, float eps, bool silu) {
  const int64_t total = N * S;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i / S, s = i % S;
    const int64_t base = n * C * S + s;
    float sq = 0.0f;
    for (int64_t c = 0; c < C; ++c) {
      const float v = load_float(x, xt, base + c * S);
      sq += v * v;
    }
    const float inv = scale / fmaxf(sqrtf(sq), eps);
    for (int64_t c = 0; c < C; ++c) {
      float v = load_float(x, xt, base + c * S) * inv * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f);
      if (silu) v = v / (1.0f + expf(-v));
      store_float(y, yt, base + c * S, v);
    }
  }
}

}  // namespace cuda

void CudaBackend::normalize_channels(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out,
                                     float scale, float eps, Activation act) {
  cuda::require_float_dtype(x, "normalize_channels");
  if (x.dim() < 2 || !x.is_contiguous() || !out.is_contiguous())
    throw std::invalid_argument("normalize_channels needs contiguous [N, C, ...] tensors, got " + x.describe());
  for (const Tensor* p : {&weight, &bias})
    if (p->defined() && (p->dtype != DType::F32 || !p->is_contiguous() || p->numel() != x.shape[1]))
      throw std::invalid_argument("normalize_channels: weight/bias must be contiguous float32 [C]");
  if (act != Activation::None && act != Activation::Silu)
    throw std::invalid_argument("normalize_channels: activation must be none or silu");
  const int64_t N = x.shape[0], C = x.shape[1];
  if (x.numel() == 0) return;
  const int64_t S = x.numel() / (N * C);
  cuda::DeviceContext& c = cuda::ctx_for(out);
  constexpr int kThreads = 256;
  cuda::normalize_channels_kernel<<<cuda::grid_for(N * S, kThreads), kThreads, 0, c.compute>>>(
      x.data(), x.dtype, out.data(), out.dtype, N, C, S, weight.defined() ? weight.ptr<float>() : nullptr,
      bias.defined() ? bias.ptr<float>() : nullptr, scale, eps, act == Activation::Silu);
  ND_CUDA_CHECK_LAUNCH("normalize_channels_kernel");
}

}  // namespace nd
