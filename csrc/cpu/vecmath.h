// Vectorised float math over arrays (exp, tanh, sigmoid, SiLU, GELU) for the elementwise ops,
// the GEMM epilogue, softmax and the norm activations. One implementation of each function
// (vecmath_impl.h) is compiled for AVX-512, AVX2+FMA and portable scalar code; the widest the
// CPU supports is chosen once at run time (ND_VEC_KERNEL=avx2|generic forces a narrower one, for
// testing). Every kernel computes the same operations in the same order (fused multiply-adds,
// IEEE division), so the three give identical bits for the maps; only the softmax sum, which
// adds in a different order per width, may differ in the last place.
// Accuracy against float64 (relative): exp within 1e-7, sigmoid, SiLU and the GELUs within 2e-7,
// tanh within 4e-7 (just above |x| = 0.2); far out on the negative side, where the GELUs fall
// below 1e-15, the float32 rounding of their exponent (x^3/10, x^2/2) leaves about |x|^3 1e-8.
// exp is 0 below -87.3365 (no subnormal results) and +inf above 88.7228; NaN stays NaN.
#pragma once
#include <cstdint>

namespace nd::cpu {

enum class VecFn : int { Exp, Tanh, Sigmoid, Silu, GeluTanh, GeluErf };

// y[i] = f(x[i]) for i < n. y may be x (in place); no other overlap.
void vec_map(VecFn f, const float* x, float* y, int64_t n);

// y[i] = exp(x[i] - shift) for i < n (y may be x); returns the sum of the y[i], added in double.
double vec_exp_shifted_sum(const float* x, float shift, float* y, int64_t n);

// The largest of x[0..n); NaN elements are skipped (-inf when n == 0 or every element is NaN).
float vec_max(const float* x, int64_t n);

// "avx512", "avx2" or "generic": the kernel vec_map and the others use.
const char* vec_kernel_name();

}  // namespace nd::cpu
