// Normalisation kernels: layer/RMS norm over the last dim (a warp per row for rows up to 1024
// elements, a block per row above), optionally fused with DiT modulation (y * (1 + scale) +
// shift), and group norm (statistics accumulated in double across blocks, then one pass).
#include <stdexcept>

#include "cuda_backend.h"
#include "kernels.cuh"
#include "runtime.h"

namespace nd {

namespace cuda {

struct RowNormParams {
  const void* x = nullptr;
  DType xt = DType::F32;
  void* y = nullptr;
  DType yt = DType::F32;
  int64_t rows = 0, D = 0;
  bool rms = false;
  float eps = 1e-5f;
  const void* w = nullptr;  // [D] contiguous or null
  DType wt = DType::F32;
  const void* b = nullptr;  // [D] contiguous or null (layer norm only)
  DType bt = DType::F32;
  // modulation: y = y * (1 + scale) + shift; row r's shift/scale start at mod.offsets(r)
  const void* shift = nullptr;
  DType shift_t = DType::F32;
  const void* scale = nullptr;
  DType scale_t = DType::F32;
  Indexer<2> mod;
  int64_t shift_sd = 0, scale_sd = 0;  // strides along D
};

template <bool kWarpPerRow>
__device__ __forceinline__ float row_reduce(float v, float* scratch) {
  if constexpr (kWarpPerRow) return warp_sum(v);
  else return block_sum(v, scratch);
}

template <bool kWarpPerRow>
__global__ void row_norm_kernel(const RowNormParams p) {
  __shared__ float scratch[32];
  const int tid = kWarpPerRow ? (threadIdx.x & 31) : threadIdx.x;
  const int nthreads = kWarpPerRow ? 32 : blockDim.x;
  const int64_t first = kWarpPerRow ? (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5 : blockIdx.x;
  const int64_t step = kWarpPerRow ? (int64_t(gridDim.x) * blockDim.x) >> 5 : gridDim.x;
  const float inv_d = 1.0f / static_cast<float>(p.D);
  for (int64_t r = first; r < p.rows; r += step) {
    const int64_t base = r * p.D;
    float mean = 0.0f;
    if (!p.rms) {
      float s = 0.0f;
      for (int64_t j = tid; j < p.D; j += nthreads) s += load_float(p.x, p.xt, base + j);
      mean = row_reduce<kWarpPerRow>(s, scratch) * inv_d;
    }
    float sq = 0.0f;
    for (int64_t j = tid; j < p.D; j += nthreads) {
      const float v = load_float(p.x, p.xt, base + j) - mean;
      sq += v * v;
    }
    const float rstd = 1.0f / sqrtf(row_reduce<kWarpPerRow>(sq, scratch) * inv_d + p.eps);
    int64_t mo[2] = {0, 0};
    if (p.shift || p.scale) p.mod.offsets(r, mo);
    for (int64_t j = tid; j < p.D; j += nthreads) {
      float v = (load_float(p.x, p.xt, base + j) - mean) * rstd;
      if (p.w) v *= load_float(p.w, p.wt, j);
      if (p.b) v += load_float(p.b, p.bt, j);
      if (p.scale) v *= 1.0f + load_float(p.scale, p.scale_t, mo[1] + j * p.scale_sd);
      if (p.shift) v += load_float(p.shift, p.shift_t, mo[0] + j * p.shift_sd);
      store_float(p.y, p.yt, base + j, v);
    }
  }
}

void row_norm(DeviceContext& ctx, const RowNormParams& p) {
  if (p.rows == 0) return;
  if (p.D <= 1024) {
    constexpr int kThreads = 256;  // 8 rows per block
    row_norm_kernel<true><<<grid_for(p.rows * 32, kThreads), kThreads, 0, ctx.compute>>>(p);
  } else {
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(p.rows, 65535LL * 16));
    row_norm_kernel<false><<<blocks, 256, 0, ctx.compute>>>(p);
  }
  ND_CUDA_CHECK_LAUNCH("row_norm_kernel");
}

// A [D] parameter vector as a contiguous tensor (copied when strided), or undefined.
Tensor param_vector(CudaBackend& be, const Tensor& t, int64_t D, const char* what) {
  if (!t.defined()) return t;
  if (t.numel() != D)
    throw std::invalid_argument(std::string(what) + " has " + std::to_string(t.numel()) + " elements, expected " +
                                std::to_string(D));
  require_float_dtype(t, what);
  if (t.is_contiguous()) return t;
  Tensor c = Tensor::empty({D}, t.dtype, t.device());
  be.copy(t.reshape_view({D}), c);
  return c;
}

RowNormParams row_params(CudaBackend& be, const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out,
                         float eps, bool rms, Tensor& w_keep, Tensor& b_keep) {
  if (!x.is_contiguous() || !out.is_contiguous() || x.dim() < 1)
    throw std::invalid_argument("norm needs contiguous input and output, got " + x.describe());
  require_float_dtype(x, "norm");
  RowNormParams p;
  p.D = x.shape.back();
  p.rows = p.D == 0 ? 0 : x.numel() / p.D;
  p.x = x.data(), p.xt = x.dtype, p.y = out.data(), p.yt = out.dtype;
  p.rms = rms;
  p.eps = eps;
  w_keep = param_vector(be, weight, p.D, "norm weight");
  b_keep = param_vector(be, bias, p.D, "norm bias");
  if (w_keep.defined()) p.w = w_keep.data(), p.wt = w_keep.dtype;
  if (b_keep.defined()) p.b = b_keep.data(), p.bt = b_keep.dtype;
  return p;
}

// ---- group norm ----
// sums[2 * group] += sum(x), sums[2 * group + 1] += sum(x^2) over this block's slice of the group.
__global__ void group_stats_kernel(const void* x, DType xt, int64_t group_size, double* sums) {
  __shared__ double scratch[32];
  const int64_t grp = blockIdx.y;
  const int64_t base = grp * group_size;
  double s = 0.0, sq = 0.0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < group_size; i += int64_t(gridDim.x) * blockDim.x) {
    const double v = load_float(x, xt, base + i);
    s += v;
    sq += v * v;
  }
  s = block_sum(s, scratch);
  sq = block_sum(sq, scratch);
  if (threadIdx.x == 0) {
    atomicAdd(&sums[2 * grp], s);
    atomicAdd(&sums[2 * grp + 1], sq);
  }
}

// stats[2 * g] = mean, stats[2 * g + 1] = 1 / sqrt(var + eps) (biased variance, as torch)
__global__ void group_finalize_kernel(const double* sums, float* stats, int64_t ngroups, int64_t group_size, float eps) {
  const int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (g >= ngroups) return;
  const double mean = sums[2 * g] / static_cast<double>(group_size);
  double var = sums[2 * g + 1] / static_cast<double>(group_size) - mean * mean;
  var = var > 0.0 ? var : 0.0;
  stats[2 * g] = static_cast<float>(mean);
  stats[2 * g + 1] = static_cast<float>(1.0 / sqrt(var + static_cast<double>(eps)));
}

// x [N, C, S]: y = (x - mean) * rstd * w[c] + b[c]
__global__ void group_apply_kernel(const void* x, DType xt, void* y, DType yt, int64_t total, int64_t C, int64_t S,
                                   int64_t cpg, const float* stats, const void* w, DType wt, const void* b, DType bt) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = (i / S) % C, n = i / (S * C);
    const int64_t grp = n * (C / cpg) + c / cpg;
    float v = (load_float(x, xt, i) - stats[2 * grp]) * stats[2 * grp + 1];
    if (w) v *= load_float(w, wt, c);
    if (b) v += load_float(b, bt, c);
    store_float(y, yt, i, v);
  }
}

}  // namespace cuda

using namespace cuda;

void CudaBackend::layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out, float eps) {
  Tensor wk, bk;
  RowNormParams p = row_params(*this, x, weight, bias, out, eps, false, wk, bk);
  row_norm(ctx_for(out), p);
}

void CudaBackend::rms_norm(const Tensor& x, const Tensor& weight, Tensor& out, float eps) {
  Tensor wk, bk;
  RowNormParams p = row_params(*this, x, weight, Tensor(), out, eps, true, wk, bk);
  row_norm(ctx_for(out), p);
}

void CudaBackend::norm_modulate(NormKind kind, const Tensor& x, const Tensor& weight, const Tensor& bias,
                                const Tensor& shift, const Tensor& scale, Tensor& out, float eps) {
  Tensor wk, bk;
  RowNormParams p = row_params(*this, x, weight, bias, out, eps, kind == NormKind::Rms, wk, bk);
  if (p.rows == 0) return;
  const Shape lead(x.shape.begin(), x.shape.end() - 1);
  Shape sh_str(lead.size(), 0), sc_str(lead.size(), 0);
  for (const Tensor* m : {&shift, &scale})
    if (m->defined() && m->shape != x.shape)
      throw std::invalid_argument("norm_modulate: shift/scale must be expanded to the input's shape");
  if (shift.defined()) {
    require_float_dtype(shift, "norm_modulate shift");
    sh_str.assign(shift.strides.begin(), shift.strides.end() - 1);
    p.shift = shift.data(), p.shift_t = shift.dtype, p.shift_sd = shift.strides.back();
  }
  if (scale.defined()) {
    require_float_dtype(scale, "norm_modulate scale");
    sc_str.assign(scale.strides.begin(), scale.strides.end() - 1);
    p.scale = scale.data(), p.scale_t = scale.dtype, p.scale_sd = scale.strides.back();
  }
  // the row index runs over the leading dims; the indexer maps it to each table's row start
  p.mod = make_indexer<2>(lead, {sh_str, sc_str});
  row_norm(ctx_for(out), p);
}

void CudaBackend::group_norm(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias, Tensor& out,
                             float eps) {
  require_float_dtype(x, "group_norm");
  if (x.dim() < 2 || !x.is_contiguous() || !out.is_contiguous())
    throw std::invalid_argument("group_norm needs contiguous [N, C, ...] tensors, got " + x.describe());
  const int64_t N = x.shape[0], C = x.shape[1];
  if (groups < 1 || C % groups != 0) throw std::invalid_argument("group_norm: channels not divisible by groups");
  const int64_t total = x.numel();
  if (total == 0) return;
  const int64_t S = total / (N * C), cpg = C / groups, group_size = cpg * S, ngroups = N * groups;
  if (ngroups > 65535) throw std::invalid_argument("group_norm: too many (batch, group) pairs for CUDA");
  DeviceContext& c = ctx_for(out);
  Tensor w = param_vector(*this, weight, C, "group_norm weight"), b = param_vector(*this, bias, C, "group_norm bias");
  Tensor sums = Tensor::empty({ngroups * 2}, DType::I64, out.device());  // 8-byte slots for doubles
  Tensor stats = Tensor::empty({ngroups * 2}, DType::F32, out.device());
  ND_CUDA_CHECK(cudaMemsetAsync(sums.data(), 0, sums.nbytes(), c.compute));
  constexpr int kThreads = 256;
  const int64_t want = (group_size + kThreads * 8 - 1) / (kThreads * 8);
  const dim3 grid(static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(want, 1024))),
                  static_cast<unsigned>(ngroups));
  group_stats_kernel<<<grid, kThreads, 0, c.compute>>>(x.data(), x.dtype, group_size, static_cast<double*>(sums.data()));
  ND_CUDA_CHECK_LAUNCH("group_stats_kernel");
  group_finalize_kernel<<<grid_for(ngroups, kThreads), kThreads, 0, c.compute>>>(
      static_cast<const double*>(sums.data()), stats.ptr<float>(), ngroups, group_size, eps);
  ND_CUDA_CHECK_LAUNCH("group_finalize_kernel");
  group_apply_kernel<<<grid_for(total, kThreads), kThreads, 0, c.compute>>>(
      x.data(), x.dtype, out.data(), out.dtype, total, C, S, cpg, stats.ptr<float>(), w.defined() ? w.data() : nullptr,
      w.defined() ? w.dtype : DType::F32, b.defined() ? b.data() : nullptr, b.defined() ? b.dtype : DType::F32);
  ND_CUDA_CHECK_LAUNCH("group_apply_kernel");
}

}  // namespace nd
