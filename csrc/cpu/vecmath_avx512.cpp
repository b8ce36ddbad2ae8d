// vecmath.h's kernels for AVX-512 (16 lanes, masked tails). The library's baseline is AVX2, so
// this whole file is compiled for an AVX-512 target and only called after vecmath.cpp has
// checked that the CPU has AVX-512F. The standard headers come first, before the target
// changes, so that nothing shared with other files is compiled for AVX-512.
#if defined(__x86_64__) || defined(_M_X64)
#include <cmath>
#include <cstdint>
#include <cstring>
#include <immintrin.h>

#pragma GCC target("avx512f")
// GCC 12 warns about its own AVX-512 intrinsics under a target pragma (their "undefined" pass-through
// operands, and the ABI of the 512-bit values the inlined lambdas return): nothing of ours.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wpsabi"

#include "vecmath_impl.h"

namespace nd::cpu {

namespace {

struct Avx512Lanes {
  using F = __m512;
  using I = __m512i;
  using M = __mmask16;
  struct D {
    __m512d lo, hi;
  };
  static constexpr int64_t W = 16;
  static ND_VINLINE F set1(float v) { return _mm512_set1_ps(v); }
  static ND_VINLINE F add(F a, F b) { return _mm512_add_ps(a, b); }
  static ND_VINLINE F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static ND_VINLINE F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  static ND_VINLINE F div(F a, F b) { return _mm512_div_ps(a, b); }
  static ND_VINLINE F fmadd(F a, F b, F c) { return _mm512_fmadd_ps(a, b, c); }
  static ND_VINLINE F fnmadd(F a, F b, F c) { return _mm512_fnmadd_ps(a, b, c); }
  static ND_VINLINE F min(F a, F b) { return _mm512_min_ps(a, b); }
  static ND_VINLINE F max(F a, F b) { return _mm512_max_ps(a, b); }
  static ND_VINLINE F round(F a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static ND_VINLINE F abs(F a) { return _mm512_abs_ps(a); }
  static ND_VINLINE F neg(F a) {
    return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), _mm512_set1_epi32(INT32_MIN)));
  }
  static ND_VINLINE M lt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static ND_VINLINE M gt(F a, F b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static ND_VINLINE F select(M m, F a, F b) { return _mm512_mask_blend_ps(m, b, a); }
  static ND_VINLINE I to_int(F a) { return _mm512_cvtps_epi32(a); }
  static ND_VINLINE I half(I i) { return _mm512_srai_epi32(i, 1); }
  static ND_VINLINE I isub(I a, I b) { return _mm512_sub_epi32(a, b); }
  static ND_VINLINE F pow2(I i) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(i, _mm512_set1_epi32(127)), 23));
  }
  static ND_VINLINE F load(const float* p) { return _mm512_loadu_ps(p); }
  static ND_VINLINE void store(float* p, F v) { _mm512_storeu_ps(p, v); }
  static ND_VINLINE __mmask16 first(int64_t k) { return static_cast<__mmask16>((1u << k) - 1u); }
  static ND_VINLINE F load_part(const float* p, int64_t k) { return _mm512_maskz_loadu_ps(first(k), p); }
  static ND_VINLINE void store_part(float* p, int64_t k, F v) { _mm512_mask_storeu_ps(p, first(k), v); }
  static ND_VINLINE float hmax(F v) { return _mm512_reduce_max_ps(v); }
  static ND_VINLINE D dzero() { return D{_mm512_setzero_pd(), _mm512_setzero_pd()}; }
  static ND_VINLINE D dadd(D acc, F v) {
    const __m256 lo = _mm512_castps512_ps256(v);
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    return D{_mm512_add_pd(acc.lo, _mm512_cvtps_pd(lo)), _mm512_add_pd(acc.hi, _mm512_cvtps_pd(hi))};
  }
  static ND_VINLINE double dtotal(D acc) {
    alignas(64) double v[8];
    _mm512_store_pd(v, _mm512_add_pd(acc.lo, acc.hi));
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
  }
};

}  // namespace

const VecKernels& vec_kernels_avx512() {
  static const VecKernels k = VecMath<Avx512Lanes>::kernels("avx512");
  return k;
}

}  // namespace nd::cpu
#endif
