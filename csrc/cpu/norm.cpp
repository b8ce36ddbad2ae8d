// CPU normalisation kernels: layer norm and RMS norm over the last dim, group norm over
// [N, C, *]. Statistics are accumulated in double (eight independent lanes, so the loops
// vectorise without reassociation); the normalisation itself runs in float32.
#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu_backend.h"
#include "loops.h"

namespace nd {

namespace {

constexpr int kLanes = 8;

double lane_sum(const double (&acc)[kLanes]) {
  double s = 0;
  for (int j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

double sum_f64(const float* x, int64_t n) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += static_cast<double>(x[i + j]);
  double s = lane_sum(acc);
  for (; i < n; ++i) s += static_cast<double>(x[i]);
  return s;
}

double sum_sq_dev_f64(const float* x, int64_t n, double mean) {
  double acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const double d = static_cast<double>(x[i + j]) - mean;
      acc[j] += d * d;
    }
  double s = lane_sum(acc);
  for (; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - mean;
    s += d * d;
  }
  return s;
}

double sum_sq_f64(const float* x, int64_t n) { return sum_sq_dev_f64(x, n, 0.0); }

// A per-feature parameter (norm weight/bias) widened to float32 once per call.
std::vector<float> param_f32(const Tensor& p, int64_t n, float dflt) {
  std::vector<float> v(static_cast<size_t>(n), dflt);
  if (p.defined()) {
    const float* src = cpu::load_row(p.data(), p.dtype, 0, 1, n, v.data());
    if (src != v.data()) std::copy(src, src + n, v.begin());
  }
  return v;
}

// Calls fn(rows lo..hi) in parallel with about 16k elements per task.
template <class Fn>
void parallel_rows(int64_t rows, int64_t cols, Fn&& fn) {
  parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)), fn);
}

}  // namespace

void CpuBackend::layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out, float eps) {
  const int64_t D = x.shape.back();
  const int64_t rows = x.numel() / D;
  const std::vector<float> w = param_f32(weight, D, 1.0f), b = param_f32(bias, D, 0.0f);
  parallel_rows(rows, D, [&](int64_t lo, int64_t hi) {
    std::vector<float> xbuf(D), ybuf(D);
    for (int64_t r = lo; r < hi; ++r) {
      const float* xr = cpu::load_row(x.data(), x.dtype, r * D, 1, D, xbuf.data());
      const double mean = sum_f64(xr, D) / static_cast<double>(D);
      const double var = sum_sq_dev_f64(xr, D, mean) / static_cast<double>(D);
      const float rstd = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(eps)));
      const float m = static_cast<float>(mean);
      float* yr = out.dtype == DType::F32 ? out.ptr<float>() + r * D : ybuf.data();
      for (int64_t i = 0; i < D; ++i) yr[i] = (xr[i] - m) * rstd * w[i] + b[i];
      if (yr == ybuf.data()) cpu::store_row(out.data(), out.dtype, r * D, 1, D, yr);
    }
  });
}

void CpuBackend::rms_norm(const Tensor& x, const Tensor& weight, Tensor& out, float eps) {
  const int64_t D = x.shape.back();
  const int64_t rows = x.numel() / D;
  const std::vector<float> w = param_f32(weight, D, 1.0f);
  parallel_rows(rows, D, [&](int64_t lo, int64_t hi) {
    std::vector<float> xbuf(D), ybuf(D);
    for (int64_t r = lo; r < hi; ++r) {
      const float* xr = cpu::load_row(x.data(), x.dtype, r * D, 1, D, xbuf.data());
      const double ms = sum_sq_f64(xr, D) / static_cast<double>(D);
      const float rstd = static_cast<float>(1.0 / std::sqrt(ms + static_cast<double>(eps)));
      float* yr = out.dtype == DType::F32 ? out.ptr<float>() + r * D : ybuf.data();
      for (int64_t i = 0; i < D; ++i) yr[i] = xr[i] * rstd * w[i];
      if (yr == ybuf.data()) cpu::store_row(out.data(), out.dtype, r * D, 1, D, yr);
    }
  });
}

void CpuBackend::group_norm(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias, Tensor& out,
                            float eps) {
  const int64_t N = x.shape[0], C = x.shape[1];
  const int64_t S = x.numel() / (N * C);  // spatial elements per channel
  const int64_t cpg = C / groups;         // channels per group
  const int64_t span = cpg * S;           // one group's elements, contiguous
  const std::vector<float> w = param_f32(weight, C, 1.0f), b = param_f32(bias, C, 0.0f);
  constexpr int64_t kChunk = cpu::kRowChunk;
  parallel_for(0, N * groups, 1, [&](int64_t lo, int64_t hi) {
    float xbuf[kChunk], ybuf[kChunk];
    for (int64_t ng = lo; ng < hi; ++ng) {
      const int64_t base = ng * span;
      const int64_t c0 = (ng % groups) * cpg;
      double sum = 0;
      for (int64_t i = 0; i < span; i += kChunk) {
        const int64_t n = std::min(kChunk, span - i);
        sum += sum_f64(cpu::load_row(x.data(), x.dtype, base + i, 1, n, xbuf), n);
      }
      const double mean = sum / static_cast<double>(span);
      double sq = 0;
      for (int64_t i = 0; i < span; i += kChunk) {
        const int64_t n = std::min(kChunk, span - i);
        sq += sum_sq_dev_f64(cpu::load_row(x.data(), x.dtype, base + i, 1, n, xbuf), n, mean);
      }
      const double rstd = 1.0 / std::sqrt(sq / static_cast<double>(span) + static_cast<double>(eps));
      for (int64_t c = 0; c < cpg; ++c) {
        // y = x * scale + shift with the channel's affine folded in
        const float scale = static_cast<float>(rstd * w[c0 + c]);
        const float shift = static_cast<float>(b[c0 + c] - mean * rstd * w[c0 + c]);
        const int64_t cbase = base + c * S;
        for (int64_t i = 0; i < S; i += kChunk) {
          const int64_t n = std::min(kChunk, S - i);
          const float* xr = cpu::load_row(x.data(), x.dtype, cbase + i, 1, n, xbuf);
          float* yr = out.dtype == DType::F32 ? out.ptr<float>() + cbase + i : ybuf;
          for (int64_t k = 0; k < n; ++k) yr[k] = xr[k] * scale + shift;
          if (yr == ybuf) cpu::store_row(out.data(), out.dtype, cbase + i, 1, n, yr);
        }
      }
    }
  });
}

}  // namespace nd
