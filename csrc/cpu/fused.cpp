// CPU twins of the fused DiT elementwise ops: norm + modulation (statistics in double like
// norm.cpp) and the gated residual add.
#include <cmath>
#include <vector>

#include "../core/threadpool.h"
#include "cpu_backend.h"
#include "loops.h"

namespace nd {

namespace {

// Element offset of row r's first element in a view of x's shape (rows = leading dims).
int64_t row_offset(const Tensor& t, int64_t r) {
  int64_t off = 0;
  for (int64_t d = t.dim() - 2; d >= 0; --d) {
    off += (r % t.shape[d]) * t.strides[d];
    r /= t.shape[d];
  }
  return off;
}

}  // namespace

void CpuBackend::norm_modulate(NormKind kind, const Tensor& x, const Tensor& weight, const Tensor& bias,
                               const Tensor& shift, const Tensor& scale, Tensor& out, float eps) {
  const int64_t D = x.shape.back();
  const int64_t rows = D == 0 ? 0 : x.numel() / D;
  std::vector<float> w(D, 1.0f), b(D, 0.0f);
  for (int64_t j = 0; j < D; ++j) {
    if (weight.defined()) w[j] = load_as_f32(weight.data(), weight.dtype, j);
    if (bias.defined()) b[j] = load_as_f32(bias.data(), bias.dtype, j);
  }
  const bool rms = kind == NormKind::Rms;
  parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)), [&](int64_t lo, int64_t hi) {
    std::vector<float> xbuf(D), ybuf(D), sbuf(D), cbuf(D);
    for (int64_t r = lo; r < hi; ++r) {
      const float* xr = cpu::load_row(x.data(), x.dtype, r * D, 1, D, xbuf.data());
      double mean = 0.0;
      if (!rms) {
        for (int64_t j = 0; j < D; ++j) mean += xr[j];
        mean /= static_cast<double>(D);
      }
      double ss = 0.0;
      for (int64_t j = 0; j < D; ++j) {
        const double d = static_cast<double>(xr[j]) - mean;
        ss += d * d;
      }
      const float rstd = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(D) + static_cast<double>(eps)));
      const float m = static_cast<float>(mean);
      const float* sh = shift.defined()
                            ? cpu::load_row(shift.data(), shift.dtype, row_offset(shift, r), shift.strides.back(), D,
                                            sbuf.data())
                            : nullptr;
      const float* sc = scale.defined()
                            ? cpu::load_row(scale.data(), scale.dtype, row_offset(scale, r), scale.strides.back(), D,
                                            cbuf.data())
                            : nullptr;
      for (int64_t j = 0; j < D; ++j) {
        float v = (xr[j] - m) * rstd * w[j] + b[j];
        if (sc) v *= 1.0f + sc[j];
        if (sh) v += sh[j];
        ybuf[j] = v;
      }
      cpu::store_row(out.data(), out.dtype, r * D, 1, D, ybuf.data());
    }
  });
}

void CpuBackend::gated_add(const Tensor& x, const Tensor& y, const Tensor& gate, Tensor& out) {
  cpu::for_each_row<4>(out.shape, {out.strides, x.strides, y.strides, gate.strides},
                       [&](const std::array<int64_t, 4>& off, int64_t n, const std::array<int64_t, 4>& inc) {
                         float bx[cpu::kRowChunk], by[cpu::kRowChunk], bg[cpu::kRowChunk], bo[cpu::kRowChunk];
                         const float* xr = cpu::load_row(x.data(), x.dtype, off[1], inc[1], n, bx);
                         const float* yr = cpu::load_row(y.data(), y.dtype, off[2], inc[2], n, by);
                         const float* gr = cpu::load_row(gate.data(), gate.dtype, off[3], inc[3], n, bg);
                         float* o = (out.dtype == DType::F32 && inc[0] == 1) ? out.ptr<float>() + off[0] : bo;
                         for (int64_t i = 0; i < n; ++i) o[i] = xr[i] + yr[i] * gr[i];
                         if (o == bo) cpu::store_row(out.data(), out.dtype, off[0], inc[0], n, bo);
                       });
}

}  // namespace nd
