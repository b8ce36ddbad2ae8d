// Philox4x32-10 counter-based generator and the Box-Muller transform used by randn on every
// backend. Written with plain double arithmetic (no libm, no fused multiply-add when built
// with contraction off) so that CPU and CUDA produce the same bits for the same seed.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define ND_HD __host__ __device__ __forceinline__
#else
#define ND_HD inline
#endif

namespace nd::philox {

struct U32x4 { uint32_t v[4]; };

ND_HD void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

ND_HD U32x4 philox4x32_10(U32x4 ctr, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(0xD2511F53u, ctr.v[0], hi0, lo0);
    mulhilo(0xCD9E8D57u, ctr.v[2], hi1, lo1);
    U32x4 n;
    n.v[0] = hi1 ^ ctr.v[1] ^ k0;
    n.v[1] = lo1;
    n.v[2] = hi0 ^ ctr.v[3] ^ k1;
    n.v[3] = lo0;
    ctr = n;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return ctr;
}

// uniform in (0, 1): 53-bit-free variant from 32 bits, never 0 or 1
ND_HD double to_unit(uint32_t x) { return (static_cast<double>(x) + 0.5) * (1.0 / 4294967296.0); }

// ln(u) for u in (0, 1]: u = m * 2^e with m in [sqrt(1/2), sqrt(2)), ln m by the atanh series.
ND_HD double log_unit(double u) {
  int e = 0;
  double m = u;
  while (m < 0.7071067811865476) { m = m * 2.0; e -= 1; }
  const double s = (m - 1.0) / (m + 1.0), s2 = s * s;
  double t = 1.0 / 23.0;
  t = t * s2 + 1.0 / 21.0; t = t * s2 + 1.0 / 19.0; t = t * s2 + 1.0 / 17.0; t = t * s2 + 1.0 / 15.0;
  t = t * s2 + 1.0 / 13.0; t = t * s2 + 1.0 / 11.0; t = t * s2 + 1.0 / 9.0; t = t * s2 + 1.0 / 7.0;
  t = t * s2 + 1.0 / 5.0; t = t * s2 + 1.0 / 3.0; t = t * s2 + 1.0;
  return 2.0 * s * t + static_cast<double>(e) * 0.6931471805599453;
}

// sqrt by Newton iterations from a power-of-two start (x in (0, 100]).
ND_HD double sqrt_pos(double x) {
  double r = 1.0;
  while (r * r < x) r = r * 2.0;
  for (int i = 0; i < 8; ++i) r = 0.5 * (r + x / r);
  return r;
}

// (cos, sin) of 2*pi*u for u in [0, 1).
ND_HD void sincos_turns(double u, double& c, double& s) {
  const double q = static_cast<double>(static_cast<int>(u * 4.0 + 0.5));  // nearest quarter turn
  const double a = (u - q * 0.25) * 6.283185307179586;                    // |a| <= pi/4
  const double a2 = a * a;
  double sp = -1.0 / 1307674368000.0;  // Taylor to a^15
  sp = sp * a2 + 1.0 / 6227020800.0; sp = sp * a2 - 1.0 / 39916800.0; sp = sp * a2 + 1.0 / 362880.0;
  sp = sp * a2 - 1.0 / 5040.0; sp = sp * a2 + 1.0 / 120.0; sp = sp * a2 - 1.0 / 6.0; sp = sp * a2 + 1.0;
  double cp = 1.0 / 20922789888000.0;  // Taylor to a^16
  cp = cp * a2 - 1.0 / 87178291200.0; cp = cp * a2 + 1.0 / 479001600.0; cp = cp * a2 - 1.0 / 3628800.0;
  cp = cp * a2 + 1.0 / 40320.0; cp = cp * a2 - 1.0 / 720.0; cp = cp * a2 + 1.0 / 24.0; cp = cp * a2 - 0.5;
  cp = cp * a2 + 1.0;
  const double sa = a * sp, ca = cp;
  switch (static_cast<int>(q) & 3) {
    case 0: c = ca; s = sa; break;
    case 1: c = -sa; s = ca; break;
    case 2: c = -ca; s = -sa; break;
    default: c = sa; s = -ca; break;
  }
}

// The four standard normals of block `block` (elements 4*block .. 4*block+3).
ND_HD void normal4(uint64_t seed, uint64_t block, float out[4]) {
  U32x4 ctr{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), 0u, 0u}};
  U32x4 r = philox4x32_10(ctr, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  for (int p = 0; p < 2; ++p) {
    const double u1 = to_unit(r.v[2 * p]), u2 = to_unit(r.v[2 * p + 1]);
    const double rad = sqrt_pos(-2.0 * log_unit(u1));
    double c, s;
    sincos_turns(u2, c, s);
    out[2 * p] = static_cast<float>(rad * c);
    out[2 * p + 1] = static_cast<float>(rad * s);
  }
}

}  // namespace nd::philox
