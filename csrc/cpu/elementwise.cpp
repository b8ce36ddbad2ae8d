// CPU elementwise kernels: fill, unary math, broadcasting binary ops, affine/clamp, pow.
// Float rows are computed in float32 (converted on load/store); integer tensors use int64 math.
#include <cmath>
#include <stdexcept>

#include "cpu_backend.h"
#include "loops.h"
#include "vecmath.h"

namespace nd {

using cpu::kRowChunk;

void CpuBackend::fill(Tensor& out, double value) {
  const DType t = out.dtype;
  cpu::for_each_row<1>(out.shape, {out.strides}, [&](const std::array<int64_t, 1>& off, int64_t n,
                                                     const std::array<int64_t, 1>& inc) {
    if (cpu::is_int(t)) {
      for (int64_t i = 0; i < n; ++i) cpu::store_int(out.data(), t, off[0] + i * inc[0], static_cast<int64_t>(value));
      return;
    }
    float buf[kRowChunk];
    for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<float>(value);
    cpu::store_row(out.data(), t, off[0], inc[0], n, buf);
  });
}

static void unary_f32(UnaryOp op, const float* x, float* y, int64_t n) {
  switch (op) {
    case UnaryOp::Neg: for (int64_t i = 0; i < n; ++i) y[i] = -x[i]; break;
    case UnaryOp::Abs: for (int64_t i = 0; i < n; ++i) y[i] = std::fabs(x[i]); break;
    case UnaryOp::Exp: cpu::vec_map(cpu::VecFn::Exp, x, y, n); break;
    case UnaryOp::Log: for (int64_t i = 0; i < n; ++i) y[i] = std::log(x[i]); break;
    case UnaryOp::Sqrt: for (int64_t i = 0; i < n; ++i) y[i] = std::sqrt(x[i]); break;
    case UnaryOp::Rsqrt: for (int64_t i = 0; i < n; ++i) y[i] = 1.0f / std::sqrt(x[i]); break;
    case UnaryOp::Sin: for (int64_t i = 0; i < n; ++i) y[i] = std::sin(x[i]); break;
    case UnaryOp::Cos: for (int64_t i = 0; i < n; ++i) y[i] = std::cos(x[i]); break;
    case UnaryOp::Tanh: cpu::vec_map(cpu::VecFn::Tanh, x, y, n); break;
    case UnaryOp::Sigmoid: cpu::vec_map(cpu::VecFn::Sigmoid, x, y, n); break;
    case UnaryOp::Silu: cpu::vec_map(cpu::VecFn::Silu, x, y, n); break;
    case UnaryOp::GeluErf: cpu::vec_map(cpu::VecFn::GeluErf, x, y, n); break;
    case UnaryOp::GeluTanh: cpu::vec_map(cpu::VecFn::GeluTanh, x, y, n); break;
    case UnaryOp::Relu: for (int64_t i = 0; i < n; ++i) y[i] = x[i] > 0 ? x[i] : 0.0f; break;
    case UnaryOp::Square: for (int64_t i = 0; i < n; ++i) y[i] = x[i] * x[i]; break;
    case UnaryOp::Reciprocal: for (int64_t i = 0; i < n; ++i) y[i] = 1.0f / x[i]; break;
    default: throw std::invalid_argument("unknown unary op " + std::to_string(static_cast<int>(op)));
  }
}

void CpuBackend::unary(UnaryOp op, const Tensor& x, Tensor& out) {
  if (static_cast<int>(op) < 0 || op > UnaryOp::Reciprocal) throw std::invalid_argument("unknown unary op");
  if (cpu::is_int(out.dtype)) {
    cpu::for_each_row<2>(out.shape, {out.strides, x.strides}, [&](const std::array<int64_t, 2>& off, int64_t n,
                                                                 const std::array<int64_t, 2>& inc) {
      for (int64_t i = 0; i < n; ++i) {
        int64_t v = cpu::load_int(x.data(), x.dtype, off[1] + i * inc[1]);
        int64_t r = op == UnaryOp::Neg ? -v : (op == UnaryOp::Abs ? (v < 0 ? -v : v) : v * v);
        cpu::store_int(out.data(), out.dtype, off[0] + i * inc[0], r);
      }
    });
    return;
  }
  cpu::for_each_row<2>(out.shape, {out.strides, x.strides}, [&](const std::array<int64_t, 2>& off, int64_t n,
                                                               const std::array<int64_t, 2>& inc) {
    float bx[kRowChunk], by[kRowChunk];
    const float* xr = cpu::load_row(x.data(), x.dtype, off[1], inc[1], n, bx);
    float* yr = (out.dtype == DType::F32 && inc[0] == 1) ? out.ptr<float>() + off[0] : by;
    unary_f32(op, xr, yr, n);
    if (yr == by) cpu::store_row(out.data(), out.dtype, off[0], inc[0], n, by);
  });
}

template <class F>
static inline void binary_loop(const float* a, const float* b, float* y, int64_t n, int64_t sa, int64_t sb, F f) {
  if (sa == 1 && sb == 1) {
    for (int64_t i = 0; i < n; ++i) y[i] = f(a[i], b[i]);
  } else if (sa == 1 && sb == 0) {
    const float bv = b[0];
    for (int64_t i = 0; i < n; ++i) y[i] = f(a[i], bv);
  } else if (sa == 0 && sb == 1) {
    const float av = a[0];
    for (int64_t i = 0; i < n; ++i) y[i] = f(av, b[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = f(a[i * sa], b[i * sb]);
  }
}

static void binary_f32(BinaryOp op, const float* a, const float* b, float* y, int64_t n, int64_t sa, int64_t sb) {
  switch (op) {
    case BinaryOp::Add: binary_loop(a, b, y, n, sa, sb, [](float u, float v) { return u + v; }); break;
    case BinaryOp::Sub: binary_loop(a, b, y, n, sa, sb, [](float u, float v) { return u - v; }); break;
    case BinaryOp::Mul: binary_loop(a, b, y, n, sa, sb, [](float u, float v) { return u * v; }); break;
    case BinaryOp::Div: binary_loop(a, b, y, n, sa, sb, [](float u, float v) { return u / v; }); break;
    case BinaryOp::Maximum: binary_loop(a, b, y, n, sa, sb, [](float u, float v) { return u > v || u != u ? u : v; }); break;
    case BinaryOp::Minimum: binary_loop(a, b, y, n, sa, sb, [](float u, float v) { return u < v || u != u ? u : v; }); break;
    case BinaryOp::Pow: binary_loop(a, b, y, n, sa, sb, [](float u, float v) { return std::pow(u, v); }); break;
    default: throw std::invalid_argument("unknown binary op");
  }
}

static int64_t binary_int(BinaryOp op, int64_t a, int64_t b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Maximum: return a > b ? a : b;
    case BinaryOp::Minimum: return a < b ? a : b;
    default: throw std::invalid_argument("integer tensors support add, sub, mul, maximum and minimum only");
  }
}

void CpuBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  if (static_cast<int>(op) < 0 || op > BinaryOp::Pow) throw std::invalid_argument("unknown binary op");
  if (cpu::is_int(out.dtype)) {
    if (op == BinaryOp::Div || op == BinaryOp::Pow) throw std::invalid_argument("integer division/pow not supported");
    cpu::for_each_row<3>(out.shape, {out.strides, a.strides, b.strides},
                         [&](const std::array<int64_t, 3>& off, int64_t n, const std::array<int64_t, 3>& inc) {
                           for (int64_t i = 0; i < n; ++i)
                             cpu::store_int(out.data(), out.dtype, off[0] + i * inc[0],
                                            binary_int(op, cpu::load_int(a.data(), a.dtype, off[1] + i * inc[1]),
                                                       cpu::load_int(b.data(), b.dtype, off[2] + i * inc[2])));
                         });
    return;
  }
  cpu::for_each_row<3>(out.shape, {out.strides, a.strides, b.strides},
                       [&](const std::array<int64_t, 3>& off, int64_t n, const std::array<int64_t, 3>& inc) {
                         float ba[kRowChunk], bb[kRowChunk], by[kRowChunk];
                         // broadcast (stride 0) operands stay as one element; others load contiguous
                         int64_t sa = inc[1] == 0 ? 0 : 1, sb = inc[2] == 0 ? 0 : 1;
                         const float* ar = cpu::load_row(a.data(), a.dtype, off[1], inc[1], sa ? n : 1, ba);
                         const float* br = cpu::load_row(b.data(), b.dtype, off[2], inc[2], sb ? n : 1, bb);
                         float* yr = (out.dtype == DType::F32 && inc[0] == 1) ? out.ptr<float>() + off[0] : by;
                         binary_f32(op, ar, br, yr, n, sa, sb);
                         if (yr == by) cpu::store_row(out.data(), out.dtype, off[0], inc[0], n, by);
                       });
}

void CpuBackend::affine(const Tensor& x, Tensor& out, double mul, double add, double lo, double hi) {
  const bool clamp = lo <= hi;
  if (cpu::is_int(out.dtype)) {
    cpu::for_each_row<2>(out.shape, {out.strides, x.strides}, [&](const std::array<int64_t, 2>& off, int64_t n,
                                                                 const std::array<int64_t, 2>& inc) {
      for (int64_t i = 0; i < n; ++i) {
        double v = static_cast<double>(cpu::load_int(x.data(), x.dtype, off[1] + i * inc[1])) * mul + add;
        if (clamp) v = v < lo ? lo : (v > hi ? hi : v);
        cpu::store_int(out.data(), out.dtype, off[0] + i * inc[0], static_cast<int64_t>(std::llround(v)));
      }
    });
    return;
  }
  const float m = static_cast<float>(mul), a = static_cast<float>(add);
  const float l = static_cast<float>(lo), h = static_cast<float>(hi);
  cpu::for_each_row<2>(out.shape, {out.strides, x.strides}, [&](const std::array<int64_t, 2>& off, int64_t n,
                                                               const std::array<int64_t, 2>& inc) {
    float bx[kRowChunk], by[kRowChunk];
    const float* xr = cpu::load_row(x.data(), x.dtype, off[1], inc[1], n, bx);
    float* yr = (out.dtype == DType::F32 && inc[0] == 1) ? out.ptr<float>() + off[0] : by;
    if (clamp) {
      for (int64_t i = 0; i < n; ++i) {
        float v = xr[i] * m + a;
        yr[i] = v < l ? l : (v > h ? h : v);
      }
    } else {
      for (int64_t i = 0; i < n; ++i) yr[i] = xr[i] * m + a;
    }
    if (yr == by) cpu::store_row(out.data(), out.dtype, off[0], inc[0], n, by);
  });
}

void CpuBackend::pow_scalar(const Tensor& x, Tensor& out, double exponent) {
  const float e = static_cast<float>(exponent);
  cpu::for_each_row<2>(out.shape, {out.strides, x.strides}, [&](const std::array<int64_t, 2>& off, int64_t n,
                                                               const std::array<int64_t, 2>& inc) {
    float bx[kRowChunk], by[kRowChunk];
    const float* xr = cpu::load_row(x.data(), x.dtype, off[1], inc[1], n, bx);
    if (e == 2.0f) {
      for (int64_t i = 0; i < n; ++i) by[i] = xr[i] * xr[i];
    } else if (e == 0.5f) {
      for (int64_t i = 0; i < n; ++i) by[i] = std::sqrt(xr[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) by[i] = std::pow(xr[i], e);
    }
    cpu::store_row(out.data(), out.dtype, off[0], inc[0], n, by);
  });
}

}  // namespace nd
