// CPU reductions (sum/mean/max/min over one dim, accumulated in double for sum/mean) and
// softmax over the last dimension.
#include <cmath>
#include <limits>

#include "cpu_backend.h"
#include "loops.h"
#include "vecmath.h"

namespace nd {

void CpuBackend::reduce(ReduceOp op, const Tensor& x, int64_t dim, Tensor& out) {
  // out has x's shape with dim set to 1; iterate over out, walking x along dim.
  const int64_t len = x.shape[dim];
  const int64_t step = x.strides[dim];
  Shape oshape = out.shape;
  Shape xstr = x.strides;
  xstr[dim] = 0;
  const bool integer = cpu::is_int(out.dtype);
  cpu::for_each_row<2>(oshape, {out.strides, xstr}, [&](const std::array<int64_t, 2>& off, int64_t n,
                                                       const std::array<int64_t, 2>& inc) {
    for (int64_t i = 0; i < n; ++i) {
      const int64_t xo = off[1] + i * inc[1];
      double acc = (op == ReduceOp::Max) ? -std::numeric_limits<double>::infinity()
                   : (op == ReduceOp::Min) ? std::numeric_limits<double>::infinity()
                                           : 0.0;
      bool nan = false;
      for (int64_t j = 0; j < len; ++j) {
        double v = integer ? static_cast<double>(cpu::load_int(x.data(), x.dtype, xo + j * step))
                           : static_cast<double>(load_as_f32(x.data(), x.dtype, xo + j * step));
        if (v != v) nan = true;
        if (op == ReduceOp::Max) acc = v > acc ? v : acc;
        else if (op == ReduceOp::Min) acc = v < acc ? v : acc;
        else acc += v;
      }
      if (op == ReduceOp::Mean) acc /= static_cast<double>(len);
      if (nan && (op == ReduceOp::Max || op == ReduceOp::Min)) acc = std::numeric_limits<double>::quiet_NaN();
      const int64_t oo = off[0] + i * inc[0];
      if (integer) cpu::store_int(out.data(), out.dtype, oo, static_cast<int64_t>(acc));
      else store_from_f32(out.data(), out.dtype, oo, static_cast<float>(acc));
    }
  });
}

void CpuBackend::softmax(const Tensor& x, Tensor& out) {
  const int64_t cols = x.shape.empty() ? 1 : x.shape.back();
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  const DType t = x.dtype;
  const bool direct = out.dtype == DType::F32;  // rows computed in place in the output
  parallel_for(0, rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(cols, 1)), [&](int64_t lo, int64_t hi) {
    std::vector<float> buf(cols), tmp(direct ? 0 : cols);
    for (int64_t r = lo; r < hi; ++r) {
      const float* xr = cpu::load_row(x.data(), t, r * cols, 1, cols, buf.data());
      float* y = direct ? out.ptr<float>() + r * cols : tmp.data();
      float m = cpu::vec_max(xr, cols);
      if (m == -std::numeric_limits<float>::infinity()) m = 0;  // fully masked row -> zeros below
      const double sum = cpu::vec_exp_shifted_sum(xr, m, y, cols);
      // a NaN anywhere makes the sum NaN and the whole row NaN, as torch
      const float inv = sum == 0 ? 0.0f : static_cast<float>(1.0 / sum);
      for (int64_t j = 0; j < cols; ++j) y[j] *= inv;
      if (!direct) cpu::store_row(out.data(), out.dtype, r * cols, 1, cols, y);
    }
  });
}

}  // namespace nd
