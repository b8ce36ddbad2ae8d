// Fused LoRA merge: w = base + sum_i scale_i * up_i @ down_i in one pass over the weight. Each
// block owns a 64x64 tile of w, accumulates every adapter's low-rank product for it in float32
// registers (up/down slices staged in shared memory), then adds base and stores in w's dtype.
// w may alias base (each element is read before it is written by the same thread), so merging
// into the live weight and restoring it from a saved base are both one kernel.
#include <stdexcept>

#include "cuda_backend.h"
#include "kernels.cuh"
#include "runtime.h"

namespace nd {

namespace cuda {

constexpr int kTile = 64;
constexpr int kRankStep = 16;
constexpr int kMaxTermsPerLaunch = 8;

struct LoraTermDev {
  const void* up;  // [out, rank]
  const void* down;  // [rank, in]
  DType up_t, down_t;
  int64_t up_so, up_sr, down_sr, down_si;
  int64_t rank;
  float scale;
};

struct LoraParams {
  const void* base;
  DType base_t;
  int64_t base_so, base_si;
  void* w;
  DType w_t;
  int64_t w_so, w_si;
  int64_t out_dim, in_dim;
  int nterms;
  LoraTermDev terms[kMaxTermsPerLaunch];
};

// 256 threads: thread (ty, tx) owns rows o0 + ty + 16 * i and columns i0 + tx + 16 * j, i, j < 4.
__global__ void __launch_bounds__(256) lora_merge_kernel(const LoraParams p) {
  __shared__ float s_up[kTile][kRankStep + 1];
  __shared__ float s_down[kRankStep][kTile];
  const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
  const int64_t o0 = static_cast<int64_t>(blockIdx.y) * kTile, i0 = static_cast<int64_t>(blockIdx.x) * kTile;
  float acc[4][4];
#pragma unroll
  for (int a = 0; a < 4; ++a)
#pragma unroll
    for (int b = 0; b < 4; ++b) acc[a][b] = 0.0f;

  for (int t = 0; t < p.nterms; ++t) {
    const LoraTermDev& term = p.terms[t];
    for (int64_t k0 = 0; k0 < term.rank; k0 += kRankStep) {
#pragma unroll
      for (int q = 0; q < (kTile * kRankStep) / 256; ++q) {
        const int e = q * 256 + threadIdx.x;
        {  // up slice [64 rows, 16 ranks], scale folded in
          const int r = e / kRankStep, kk = e % kRankStep;
          const int64_t o = o0 + r, k = k0 + kk;
          s_up[r][kk] = (o < p.out_dim && k < term.rank)
                            ? term.scale * load_float(term.up, term.up_t, o * term.up_so + k * term.up_sr)
                            : 0.0f;
        }
        {  // down slice [16 ranks, 64 columns]
          const int kk = e / kTile, cidx = e % kTile;
          const int64_t k = k0 + kk, i = i0 + cidx;
          s_down[kk][cidx] = (k < term.rank && i < p.in_dim)
                                 ? load_float(term.down, term.down_t, k * term.down_sr + i * term.down_si)
                                 : 0.0f;
        }
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kRankStep; ++kk) {
        float u[4], d[4];
#pragma unroll
        for (int a = 0; a < 4; ++a) u[a] = s_up[ty + 16 * a][kk];
#pragma unroll
        for (int b = 0; b < 4; ++b) d[b] = s_down[kk][tx + 16 * b];
#pragma unroll
        for (int a = 0; a < 4; ++a)
#pragma unroll
          for (int b = 0; b < 4; ++b) acc[a][b] = fmaf(u[a], d[b], acc[a][b]);
      }
      __syncthreads();
    }
  }

#pragma unroll
  for (int a = 0; a < 4; ++a) {
    const int64_t o = o0 + ty + 16 * a;
    if (o >= p.out_dim) continue;
#pragma unroll
    for (int b = 0; b < 4; ++b) {
      const int64_t i = i0 + tx + 16 * b;
      if (i >= p.in_dim) continue;
      const float v = load_float(p.base, p.base_t, o * p.base_so + i * p.base_si) + acc[a][b];
      store_float(p.w, p.w_t, o * p.w_so + i * p.w_si, v);
    }
  }
}

}  // namespace cuda

void CudaBackend::lora_merge(const Tensor& base, const std::vector<LoraTerm>& terms, Tensor& w) {
  if (base.dim() != 2 || w.shape != base.shape)
    throw std::invalid_argument("lora_merge expects a 2-D base and an output of its shape, got " + base.describe() +
                                " and " + w.describe());
  cuda::require_float_dtype(base, "lora_merge");
  cuda::require_float_dtype(w, "lora_merge");
  const int64_t out_dim = base.shape[0], in_dim = base.shape[1];
  for (const auto& t : terms) {
    cuda::require_float_dtype(t.up, "lora_merge up");
    cuda::require_float_dtype(t.down, "lora_merge down");
    if (t.up.dim() != 2 || t.down.dim() != 2 || t.up.shape[0] != out_dim || t.down.shape[1] != in_dim ||
        t.up.shape[1] != t.down.shape[0])
      throw std::invalid_argument("lora_merge: up " + t.up.describe() + " and down " + t.down.describe() +
                                  " do not fit a weight " + base.describe());
  }
  if (out_dim == 0 || in_dim == 0) return;
  cuda::DeviceContext& c = cuda::ctx_for(w);
  const dim3 grid(static_cast<unsigned>((in_dim + cuda::kTile - 1) / cuda::kTile),
                  static_cast<unsigned>((out_dim + cuda::kTile - 1) / cuda::kTile));
  if (grid.y > 65535) throw std::invalid_argument("lora_merge: weight has too many rows for one launch");
  size_t next = 0;
  bool first = true;
  do {  // up to 8 adapters per launch; later launches continue from w
    cuda::LoraParams p;
    const Tensor& src = first ? base : w;
    p.base = src.data(), p.base_t = src.dtype, p.base_so = src.strides[0], p.base_si = src.strides[1];
    p.w = w.data(), p.w_t = w.dtype, p.w_so = w.strides[0], p.w_si = w.strides[1];
    p.out_dim = out_dim, p.in_dim = in_dim;
    p.nterms = 0;
    for (; next < terms.size() && p.nterms < cuda::kMaxTermsPerLaunch; ++next) {
      const LoraTerm& t = terms[next];
      cuda::LoraTermDev& d = p.terms[p.nterms++];
      d.up = t.up.data(), d.up_t = t.up.dtype, d.up_so = t.up.strides[0], d.up_sr = t.up.strides[1];
      d.down = t.down.data(), d.down_t = t.down.dtype, d.down_sr = t.down.strides[0], d.down_si = t.down.strides[1];
      d.rank = t.up.shape[1];
      d.scale = t.scale;
    }
    cuda::lora_merge_kernel<<<grid, 256, 0, c.compute>>>(p);
    ND_CUDA_CHECK_LAUNCH("lora_merge_kernel");
    first = false;
  } while (next < terms.size());
}

}  // namespace nd
