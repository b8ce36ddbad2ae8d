// vecmath.h's kernels for portable code and AVX2+FMA, and the choice between them and the
// AVX-512 ones (vecmath_avx512.cpp) made once at run time.
#include <cstdlib>
#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define ND_X86 1
#endif

#include "vecmath_impl.h"

namespace nd::cpu {

#ifdef ND_X86
const VecKernels& vec_kernels_avx512();  // vecmath_avx512.cpp
#endif

namespace {

#if defined(__AVX2__) && defined(__FMA__)
struct Avx2Lanes {
  using F = __m256;
  using I = __m256i;
  using M = __m256;
  struct D {
    __m256d lo, hi;
  };
  static constexpr int64_t W = 8;
  static ND_VINLINE F set1(float v) { return _mm256_set1_ps(v); }
  static ND_VINLINE F add(F a, F b) { return _mm256_add_ps(a, b); }
  static ND_VINLINE F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static ND_VINLINE F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static ND_VINLINE F div(F a, F b) { return _mm256_div_ps(a, b); }
  static ND_VINLINE F fmadd(F a, F b, F c) { return _mm256_fmadd_ps(a, b, c); }
  static ND_VINLINE F fnmadd(F a, F b, F c) { return _mm256_fnmadd_ps(a, b, c); }
  static ND_VINLINE F min(F a, F b) { return _mm256_min_ps(a, b); }
  static ND_VINLINE F max(F a, F b) { return _mm256_max_ps(a, b); }
  static ND_VINLINE F round(F a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
  static ND_VINLINE F abs(F a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static ND_VINLINE F neg(F a) { return _mm256_xor_ps(_mm256_set1_ps(-0.0f), a); }
  static ND_VINLINE M lt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static ND_VINLINE M gt(F a, F b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static ND_VINLINE F select(M m, F a, F b) { return _mm256_blendv_ps(b, a, m); }
  static ND_VINLINE I to_int(F a) { return _mm256_cvtps_epi32(a); }
  static ND_VINLINE I half(I i) { return _mm256_srai_epi32(i, 1); }
  static ND_VINLINE I isub(I a, I b) { return _mm256_sub_epi32(a, b); }
  static ND_VINLINE F pow2(I i) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(i, _mm256_set1_epi32(127)), 23));
  }
  static ND_VINLINE F load(const float* p) { return _mm256_loadu_ps(p); }
  static ND_VINLINE void store(float* p, F v) { _mm256_storeu_ps(p, v); }
  static ND_VINLINE __m256i first(int64_t k) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(k)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static ND_VINLINE F load_part(const float* p, int64_t k) { return _mm256_maskload_ps(p, first(k)); }
  static ND_VINLINE void store_part(float* p, int64_t k, F v) { _mm256_maskstore_ps(p, first(k), v); }
  static ND_VINLINE float hmax(F v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
  }
  static ND_VINLINE D dzero() { return D{_mm256_setzero_pd(), _mm256_setzero_pd()}; }
  static ND_VINLINE D dadd(D acc, F v) {
    return D{_mm256_add_pd(acc.lo, _mm256_cvtps_pd(_mm256_castps256_ps128(v))),
             _mm256_add_pd(acc.hi, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)))};
  }
  static ND_VINLINE double dtotal(D acc) {
    alignas(32) double v[4];
    _mm256_store_pd(v, _mm256_add_pd(acc.lo, acc.hi));
    return (v[0] + v[1]) + (v[2] + v[3]);
  }
};
#endif

VecKernels select_kernels() {
  const VecKernels generic = VecMath<ScalarLanes>::kernels("generic");
  std::string want;
  if (const char* env = std::getenv("ND_VEC_KERNEL")) want = env;
  if (want == "generic") return generic;
#if defined(__AVX2__) && defined(__FMA__)
  const VecKernels avx2 = VecMath<Avx2Lanes>::kernels("avx2");
  if (want == "avx2") return avx2;
#ifdef ND_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return vec_kernels_avx512();
#endif
  return avx2;
#else
  return generic;
#endif
}

const VecKernels& kernels() {
  static const VecKernels k = select_kernels();
  return k;
}

}  // namespace

void vec_map(VecFn f, const float* x, float* y, int64_t n) {
  if (n > 0) kernels().map(f, x, y, n);
}

double vec_exp_shifted_sum(const float* x, float shift, float* y, int64_t n) {
  return n > 0 ? kernels().exp_shifted_sum(x, shift, y, n) : 0.0;
}

float vec_max(const float* x, int64_t n) { return n > 0 ? kernels().max(x, n) : -INFINITY; }

const char* vec_kernel_name() { return kernels().name; }

}  // namespace nd::cpu
