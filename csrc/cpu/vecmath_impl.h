// The algorithms behind vecmath.h, written once over a lane type V and compiled per instruction
// set: vecmath.cpp instantiates them for portable scalar code (ScalarLanes, below) and AVX2, and
// vecmath_avx512.cpp for AVX-512 (its whole file under an AVX-512 target). Only those two files
// include this header; everything in it except the table type has internal linkage, so each
// file's copy is compiled for its own target and never shared with another.
//
// V supplies: F (W floats), I (W int32), M (W lane flags); set1, add, sub, mul, div, fmadd (a*b+c,
// one rounding), fnmadd (c-a*b, one rounding), min/max (returning the second operand when either
// is NaN, as x86 does), round (to nearest even), abs, neg, lt/gt, select(m, a, b) = m ? a : b,
// to_int (of an integral float), half (arithmetic shift right by one), isub, pow2 (2^i for
// i in [-126, 127]); load/store of W floats, load_part/store_part of the first k < W floats
// (other lanes read as 0); hmax; a double accumulator D with dzero, dadd (adds the W lanes of F)
// and dtotal.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "vecmath.h"

#define ND_VINLINE inline __attribute__((always_inline))

namespace nd::cpu {

// One instruction set's kernels, chosen once by vecmath.cpp.
struct VecKernels {
  void (*map)(VecFn f, const float* x, float* y, int64_t n);
  double (*exp_shifted_sum)(const float* x, float shift, float* y, int64_t n);
  float (*max)(const float* x, int64_t n);
  const char* name;
};

namespace {

template <class V>
struct VecMath {
  using F = typename V::F;
  static ND_VINLINE F k(float v) { return V::set1(v); }

  // e^x: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two so n ln2 is exact), e^r by its
  // degree-7 Taylor polynomial (truncation < 2e-9), times 2^n applied in two halves so that
  // every n of the range gives a normal power of two. Outside [-87.3365, 88.7228]: 0 and +inf.
  static ND_VINLINE F exp(F x) {
    const F lo = k(-87.33654f), hi = k(88.72283935546875f);
    const F xc = V::min(hi, V::max(lo, x));  // NaN stays NaN
    const F n = V::round(V::mul(xc, k(1.44269504088896341f)));
    F r = V::fnmadd(n, k(0.693145751953125f), xc);
    r = V::fnmadd(n, k(1.428606765330187045e-06f), r);
    F p = k(1.9841269841e-4f);
    p = V::fmadd(p, r, k(1.3888888889e-3f));
    p = V::fmadd(p, r, k(8.3333333333e-3f));
    p = V::fmadd(p, r, k(4.1666666667e-2f));
    p = V::fmadd(p, r, k(1.6666666667e-1f));
    p = V::fmadd(p, r, k(0.5f));
    p = V::fmadd(p, r, k(1.0f));
    p = V::fmadd(p, r, k(1.0f));
    const typename V::I ni = V::to_int(n), h = V::half(ni);
    const F v = V::mul(V::mul(p, V::pow2(h)), V::pow2(V::isub(ni, h)));
    return V::select(V::gt(x, hi), k(INFINITY), V::select(V::lt(x, lo), k(0.0f), v));
  }

  // x / (1 + e^-a): sigmoid(a) scaled by x, without cancellation for either sign of a.
  static ND_VINLINE F x_sigmoid(F x, F a) { return V::div(x, V::add(k(1.0f), exp(V::neg(a)))); }

  // tanh: odd Taylor series below |x| = 0.2 (truncation < 1e-11), else 1 - 2 / (e^2|x| + 1)
  // with x's sign (relative error <= 4e-7, largest just above 0.2).
  static ND_VINLINE F tanh(F x) {
    const F a = V::abs(x);
    const F x2 = V::mul(x, x);
    F p = k(-1382.0f / 155925.0f);
    p = V::fmadd(p, x2, k(62.0f / 2835.0f));
    p = V::fmadd(p, x2, k(-17.0f / 315.0f));
    p = V::fmadd(p, x2, k(2.0f / 15.0f));
    p = V::fmadd(p, x2, k(-1.0f / 3.0f));
    const F small = V::fmadd(V::mul(x, x2), p, x);
    const F big = V::sub(k(1.0f), V::div(k(2.0f), V::add(exp(V::add(a, a)), k(1.0f))));
    const F signed_big = V::select(V::lt(x, k(0.0f)), V::neg(big), big);
    return V::select(V::lt(a, k(0.2f)), small, signed_big);
  }

  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) = x sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)).
  static ND_VINLINE F gelu_tanh(F x) {
    const F u = V::fmadd(k(0.044715f), V::mul(V::mul(x, x), x), x);
    return x_sigmoid(x, V::mul(k(2.0f * 0.7978845608028654f), u));
  }

  // 0.5 x (1 + erf(x / sqrt 2)) with erfc(|z|) = t exp(-z^2 - 1.26551223 + t P(t)), t = 1/(1 + |z|/2)
  // (Numerical Recipes' erfcc: relative error < 1.2e-7 for every z), so the negative side, where
  // 1 + erf(z) = erfc(|z|) is small, keeps its relative accuracy.
  static ND_VINLINE F gelu_erf(F x) {
    const F z = V::mul(x, k(0.7071067811865476f));
    const F az = V::abs(z);
    const F t = V::div(k(1.0f), V::fmadd(k(0.5f), az, k(1.0f)));
    F p = k(0.17087277f);
    p = V::fmadd(p, t, k(-0.82215223f));
    p = V::fmadd(p, t, k(1.48851587f));
    p = V::fmadd(p, t, k(-1.13520398f));
    p = V::fmadd(p, t, k(0.27886807f));
    p = V::fmadd(p, t, k(-0.18628806f));
    p = V::fmadd(p, t, k(0.09678418f));
    p = V::fmadd(p, t, k(0.37409196f));
    p = V::fmadd(p, t, k(1.00002368f));
    p = V::fmadd(p, t, k(-1.26551223f));
    const F erfc_az = V::mul(t, exp(V::fnmadd(az, az, p)));
    const F one_plus_erf = V::select(V::lt(z, k(0.0f)), erfc_az, V::sub(k(2.0f), erfc_az));
    return V::mul(V::mul(k(0.5f), x), one_plus_erf);
  }

  template <class Fn>
  static ND_VINLINE void map_loop(const float* x, float* y, int64_t n, Fn fn) {
    int64_t i = 0;
    for (; i + V::W <= n; i += V::W) V::store(y + i, fn(V::load(x + i)));
    if (i < n) V::store_part(y + i, n - i, fn(V::load_part(x + i, n - i)));
  }

  static void map(VecFn f, const float* x, float* y, int64_t n) {
    switch (f) {
      case VecFn::Exp: map_loop(x, y, n, [](F v) { return exp(v); }); break;
      case VecFn::Tanh: map_loop(x, y, n, [](F v) { return tanh(v); }); break;
      case VecFn::Sigmoid: map_loop(x, y, n, [](F v) { return x_sigmoid(k(1.0f), v); }); break;
      case VecFn::Silu: map_loop(x, y, n, [](F v) { return x_sigmoid(v, v); }); break;
      case VecFn::GeluTanh: map_loop(x, y, n, [](F v) { return gelu_tanh(v); }); break;
      case VecFn::GeluErf: map_loop(x, y, n, [](F v) { return gelu_erf(v); }); break;
    }
  }

  static double exp_shifted_sum(const float* x, float shift, float* y, int64_t n) {
    const F s = k(shift);
    typename V::D acc = V::dzero();
    int64_t i = 0;
    for (; i + V::W <= n; i += V::W) {
      const F e = exp(V::sub(V::load(x + i), s));
      V::store(y + i, e);
      acc = V::dadd(acc, e);
    }
    double total = V::dtotal(acc);
    if (i < n) {
      V::store_part(y + i, n - i, exp(V::sub(V::load_part(x + i, n - i), s)));
      for (; i < n; ++i) total += y[i];
    }
    return total;
  }

  static float max(const float* x, int64_t n) {
    F m = k(-INFINITY);
    int64_t i = 0;
    for (; i + V::W <= n; i += V::W) m = V::max(V::load(x + i), m);  // a NaN element keeps m
    float r = V::hmax(m);
    for (; i < n; ++i) r = x[i] > r ? x[i] : r;
    return r;
  }

  static constexpr VecKernels kernels(const char* name) { return VecKernels{map, exp_shifted_sum, max, name}; }
};

// Portable lanes: one float, the same operations (fmaf is one instruction where FMA exists).
struct ScalarLanes {
  using F = float;
  using I = int32_t;
  using M = bool;
  using D = double;
  static constexpr int64_t W = 1;
  static ND_VINLINE F set1(float v) { return v; }
  static ND_VINLINE F add(F a, F b) { return a + b; }
  static ND_VINLINE F sub(F a, F b) { return a - b; }
  static ND_VINLINE F mul(F a, F b) { return a * b; }
  static ND_VINLINE F div(F a, F b) { return a / b; }
  static ND_VINLINE F fmadd(F a, F b, F c) { return __builtin_fmaf(a, b, c); }
  static ND_VINLINE F fnmadd(F a, F b, F c) { return __builtin_fmaf(-a, b, c); }
  static ND_VINLINE F min(F a, F b) { return a < b ? a : b; }
  static ND_VINLINE F max(F a, F b) { return a > b ? a : b; }
  static ND_VINLINE F round(F a) { return __builtin_roundevenf(a); }
  static ND_VINLINE F abs(F a) { return __builtin_fabsf(a); }
  static ND_VINLINE F neg(F a) { return -a; }
  static ND_VINLINE M lt(F a, F b) { return a < b; }
  static ND_VINLINE M gt(F a, F b) { return a > b; }
  static ND_VINLINE F select(M m, F a, F b) { return m ? a : b; }
  static ND_VINLINE I to_int(F a) { return a == a ? static_cast<I>(a) : 0; }
  static ND_VINLINE I half(I i) { return i >> 1; }
  static ND_VINLINE I isub(I a, I b) { return a - b; }
  static ND_VINLINE F pow2(I i) {
    const int32_t bits = (i + 127) << 23;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  static ND_VINLINE F load(const float* p) { return *p; }
  static ND_VINLINE void store(float* p, F v) { *p = v; }
  static ND_VINLINE F load_part(const float*, int64_t) { return 0.0f; }  // never called (W = 1)
  static ND_VINLINE void store_part(float*, int64_t, F) {}
  static ND_VINLINE float hmax(F v) { return v; }
  static ND_VINLINE D dzero() { return 0.0; }
  static ND_VINLINE D dadd(D acc, F v) { return acc + static_cast<double>(v); }
  static ND_VINLINE double dtotal(D acc) { return acc; }
};

}  // namespace
}  // namespace nd::cpu
