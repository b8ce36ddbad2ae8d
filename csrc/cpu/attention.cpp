// Flash-style scaled-dot-product attention on the GEMM micro-kernel.
//
// For a batch of (b, kv-head) groups, K and V are packed once into the micro-kernel's B-panel
// layout (K transposed, both widened to f32), tile by tile of kKeyTile keys. Then every task
// (b, head, tile of query rows) walks the key tiles with an online softmax:
//   S = (scale*log2 e) Q K^T          micro-kernel, Q packed once per task as the A operand
//   mask (causal, kv_lens), + bias*log2 e
//   m' = max(m, rowmax S); P = 2^(S - m'); l = l 2^(m - m') + rowsum P; O = O 2^(m - m') + P V
// so only a query-tile x key-tile block of logits exists at a time. Finally O / l is stored
// and lse = (m + log2 l) ln 2. Rows whose keys are all masked give zeros and lse = -inf.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "../core/threadpool.h"
#include "cpu_backend.h"
#include "gemm.h"
#include "loops.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace nd {

namespace {

constexpr int64_t kKeyTile = 256;                        // keys per tile (a multiple of every NR)
constexpr int64_t kPackBudget = int64_t{64} << 20;       // bytes of packed K/V held at once
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// 2^x for x <= 0 (and -inf), a few ulp; written branch-free so the row loops vectorise.
inline float exp2_neg(float x) {
  const float xc = x < -126.0f ? -126.0f : x;
  const float n = __builtin_roundevenf(xc);
  const float r = (xc - n) * 0.6931471805599453f;  // e^r with |r| <= ln2/2
  float p = 1.9841269841e-4f;
  p = p * r + 1.3888888889e-3f;
  p = p * r + 8.3333333333e-3f;
  p = p * r + 4.1666666667e-2f;
  p = p * r + 1.6666666667e-1f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t e = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &e, 4);
  return x < -126.0f ? 0.0f : p * scale;
}

#ifdef __AVX2__
// 2^x for 8 lanes with x <= 0 (and -inf), the same polynomial as exp2_neg.
inline __m256 exp2_neg8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-126.0f);
  const __m256 xc = _mm256_max_ps(x, lo);
  const __m256 n = _mm256_round_ps(xc, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 r = _mm256_mul_ps(_mm256_sub_ps(xc, n), _mm256_set1_ps(0.6931471805599453f));
  __m256 p = _mm256_set1_ps(1.9841269841e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3888888889e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3333333333e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1666666667e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666666667e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  const __m256 v = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
  return _mm256_blendv_ps(v, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
}

inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

inline float hsum8(__m256 v) {
  __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_add_ps(m, _mm_movehl_ps(m, m));
  m = _mm_add_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}
#endif

float row_max(const float* s, int64_t n) {
  float m = kNegInf;
  int64_t c = 0;
#ifdef __AVX2__
  __m256 mv = _mm256_set1_ps(kNegInf);
  for (; c + 8 <= n; c += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(s + c));
  m = hmax8(mv);
#endif
  for (; c < n; ++c) m = m > s[c] ? m : s[c];
  return m;
}

// s[c] = 2^(s[c] - m) in place; returns the sum.
float exp2_row(float* s, int64_t n, float m) {
  float sum = 0;
  int64_t c = 0;
#ifdef __AVX2__
  const __m256 mv = _mm256_set1_ps(m);
  __m256 acc = _mm256_setzero_ps();
  for (; c + 8 <= n; c += 8) {
    const __m256 p = exp2_neg8(_mm256_sub_ps(_mm256_loadu_ps(s + c), mv));
    _mm256_storeu_ps(s + c, p);
    acc = _mm256_add_ps(acc, p);
  }
  sum = hsum8(acc);
#endif
  for (; c < n; ++c) {
    s[c] = exp2_neg(s[c] - m);
    sum += s[c];
  }
  return sum;
}

struct Geometry {
  int64_t B, H, Hk, Lq, Lk, D, Dv, group;
  int64_t tiles, q_tile, q_tiles, dv_pad;
  int64_t k_floats, v_floats;  // packed floats per (b, kv-head) group
};

thread_local cpu::ScratchBuffer t_q, t_s, t_p, t_o;

}  // namespace

void CpuBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse,
                           const AttentionArgs& args) {
  const cpu::MicroKernel& uk = cpu::micro_kernel();
  const int MR = uk.mr, NR = uk.nr;
  Geometry g;
  g.B = q.shape[0], g.H = q.shape[1], g.Lq = q.shape[2], g.D = q.shape[3];
  g.Hk = k.shape[1], g.Lk = k.shape[2], g.Dv = v.shape[3];
  g.group = g.H / g.Hk;
  g.tiles = (g.Lk + kKeyTile - 1) / kKeyTile;
  g.q_tile = MR * std::max(1, 64 / MR);
  g.q_tiles = (g.Lq + g.q_tile - 1) / g.q_tile;
  g.dv_pad = cpu::round_up(g.Dv, NR);
  g.k_floats = g.tiles * kKeyTile * g.D;
  g.v_floats = g.tiles * kKeyTile * g.dv_pad;
  if (g.B == 0 || g.H == 0 || g.Lq == 0) return;

  const int32_t* kv_lens = args.kv_lens.defined() ? args.kv_lens.ptr<int32_t>() : nullptr;
  const float* bias = args.bias.defined() ? args.bias.ptr<float>() : nullptr;
  const int64_t q_item = static_cast<int64_t>(q.itemsize()), k_item = static_cast<int64_t>(k.itemsize()),
                v_item = static_cast<int64_t>(v.itemsize());
  const float qk_scale = args.scale * kLog2e;
  const int64_t causal_offset = g.Lk - g.Lq;  // query i sees keys j <= i + offset

  const int64_t groups = g.B * g.Hk;
  const int64_t group_bytes = std::max<int64_t>(1, (g.k_floats + g.v_floats) * 4);
  const int64_t per_batch = std::clamp<int64_t>(kPackBudget / group_bytes, 1, groups);
  cpu::ScratchBuffer packed_buffer;  // 64-byte aligned, as the micro-kernel's panel loads need
  float* const packed = packed_buffer.get(per_batch * (g.k_floats + g.v_floats));

  for (int64_t g0 = 0; g0 < groups; g0 += per_batch) {
    const int64_t ng = std::min(per_batch, groups - g0);
    // ---- pack K (transposed) and V of every group in this batch, tile by tile ----
    parallel_for(0, ng * g.tiles, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t item = lo; item < hi; ++item) {
        const int64_t gi = item / g.tiles, t = item % g.tiles;
        const int64_t b = (g0 + gi) / g.Hk, hk = (g0 + gi) % g.Hk;
        const int64_t j0 = t * kKeyTile, nk = std::min(kKeyTile, g.Lk - j0);
        float* kp = packed + gi * (g.k_floats + g.v_floats);
        float* vp = kp + g.k_floats;
        const char* kbase = static_cast<const char*>(k.data()) +
                            (b * k.strides[0] + hk * k.strides[1] + j0 * k.strides[2]) * k_item;
        const char* vbase = static_cast<const char*>(v.data()) +
                            (b * v.strides[0] + hk * v.strides[1] + j0 * v.strides[2]) * v_item;
        // B operand of S = Q K^T: rows are d, columns keys
        cpu::pack_b(cpu::MatRef{kbase, k.dtype, k.strides[3], k.strides[2]}, g.D, nk, NR, kp + t * kKeyTile * g.D);
        // B operand of O = P V: rows are keys, columns d
        if (g.Dv > 0)
          cpu::pack_b(cpu::MatRef{vbase, v.dtype, v.strides[2], v.strides[3]}, nk, g.Dv, NR,
                      vp + t * kKeyTile * g.dv_pad);
      }
    });

    // ---- one task per (group, head in group, query tile) ----
    const int64_t tasks = ng * g.group * g.q_tiles;
    parallel_for(0, tasks, 1, [&](int64_t lo, int64_t hi) {
      const int64_t q_pad = cpu::round_up(g.q_tile, MR);
      float* qp = t_q.get(q_pad * std::max<int64_t>(g.D, 1));
      float* s = t_s.get(q_pad * kKeyTile);
      float* pp = t_p.get(q_pad * kKeyTile);
      float* o = t_o.get(q_pad * std::max<int64_t>(g.dv_pad, 1));
      float m[128], l[128];
      for (int64_t task = lo; task < hi; ++task) {
        const int64_t gi = task / (g.group * g.q_tiles), rest = task % (g.group * g.q_tiles);
        const int64_t b = (g0 + gi) / g.Hk, hk = (g0 + gi) % g.Hk;
        const int64_t h = hk * g.group + rest / g.q_tiles, qt = rest % g.q_tiles;
        const int64_t i0 = qt * g.q_tile, rows = std::min(g.q_tile, g.Lq - i0);
        const int64_t rows_pad = cpu::round_up(rows, MR);
        const float* kp = packed + gi * (g.k_floats + g.v_floats);
        const float* vp = kp + g.k_floats;
        const int64_t kv_len = kv_lens ? kv_lens[b] : g.Lk;
        // keys beyond every row's limit are never looked at
        int64_t key_end = kv_len;
        if (args.causal) key_end = std::min(key_end, std::max<int64_t>(0, i0 + rows + causal_offset));

        const char* qbase = static_cast<const char*>(q.data()) +
                            (b * q.strides[0] + h * q.strides[1] + i0 * q.strides[2]) * q_item;
        cpu::pack_a(cpu::MatRef{qbase, q.dtype, q.strides[2], q.strides[3]}, rows, g.D, qk_scale, MR, qp);
        std::fill(o, o + rows_pad * g.dv_pad, 0.0f);
        std::fill(m, m + rows, kNegInf);
        std::fill(l, l + rows, 0.0f);

        for (int64_t j0 = 0; j0 < key_end; j0 += kKeyTile) {
          const int64_t t = j0 / kKeyTile;
          const int64_t nk_tile = std::min(kKeyTile, g.Lk - j0);
          const int64_t nk = std::min(nk_tile, key_end - j0);  // keys of this tile any row can see
          const int64_t panels = (nk + NR - 1) / NR;
          const float* kt = kp + t * kKeyTile * g.D;
          for (int64_t ir = 0; ir < rows_pad; ir += MR)
            for (int64_t p = 0; p < panels; ++p)
              uk.fn(g.D, qp + ir * g.D, kt + p * g.D * NR, s + ir * kKeyTile + p * NR, kKeyTile, false);

          for (int64_t r = 0; r < rows; ++r) {
            float* sr = s + r * kKeyTile;
            const int64_t qi = i0 + r;
            int64_t valid = nk;
            if (args.causal) valid = std::min(valid, std::max<int64_t>(0, qi + causal_offset + 1 - j0));
            if (bias) {
              const float* br = bias + b * args.bias.strides[0] + h * args.bias.strides[1] + qi * args.bias.strides[2] +
                                j0 * args.bias.strides[3];
              const int64_t bs = args.bias.strides[3];
              for (int64_t c = 0; c < valid; ++c) sr[c] += kLog2e * br[c * bs];
            }
            const int64_t width = panels * NR;  // P columns used by the PV product
            for (int64_t c = valid; c < width; ++c) sr[c] = kNegInf;
            const float mx = std::max(m[r], valid > 0 ? row_max(sr, valid) : kNegInf);
            float* orow = o + r * g.dv_pad;
            if (mx == kNegInf) {  // nothing visible yet: contributes nothing
              std::fill(sr, sr + width, 0.0f);
              continue;
            }
            const float corr = exp2_neg(m[r] - mx);
            const float sum = exp2_row(sr, width, mx);
            l[r] = l[r] * corr + sum;
            m[r] = mx;
            if (corr != 1.0f)
              for (int64_t c = 0; c < g.Dv; ++c) orow[c] *= corr;
          }
          for (int64_t r = rows; r < rows_pad; ++r) std::fill(s + r * kKeyTile, s + r * kKeyTile + panels * NR, 0.0f);

          if (g.Dv > 0) {
            const int64_t kc = panels * NR <= nk_tile ? panels * NR : nk;  // P columns beyond nk are zero
            cpu::pack_a(cpu::MatRef{s, DType::F32, kKeyTile, 1}, rows_pad, kc, 1.0f, MR, pp);
            const float* vt = vp + t * kKeyTile * g.dv_pad;
            for (int64_t ir = 0; ir < rows_pad; ir += MR)
              for (int64_t p = 0; p * NR < g.dv_pad; ++p)
                uk.fn(kc, pp + ir * kc, vt + p * nk_tile * NR, o + ir * g.dv_pad + p * NR, g.dv_pad, true);
          }
        }

        // ---- finish: O / l, lse ----
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t qi = i0 + r;
          float* orow = o + r * g.dv_pad;
          if (l[r] > 0.0f) {
            const float inv = 1.0f / l[r];
            for (int64_t c = 0; c < g.Dv; ++c) orow[c] *= inv;
          } else {
            std::fill(orow, orow + g.Dv, 0.0f);
          }
          if (g.Dv > 0)
            cpu::store_row(out.data(), out.dtype, b * out.strides[0] + h * out.strides[1] + qi * out.strides[2],
                           out.strides[3], g.Dv, orow);
          if (lse.defined())
            lse.ptr<float>()[(b * g.H + h) * g.Lq + qi] = l[r] > 0.0f ? (m[r] + std::log2(l[r])) * kLn2 : kNegInf;
        }
      }
    });
  }
}

}  // namespace nd
