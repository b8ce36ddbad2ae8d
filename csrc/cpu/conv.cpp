// CPU conv2d/conv3d as implicit GEMMs on the GEMM engine's micro-kernel (gemm.h).
//
// Per batch element and group: out[o, p] = bias[o] + sum_k W[o, k] x_col[k, p], with
// k = (c, kd, kh, kw) and p the output position. The im2col matrix is never materialised:
// for each NC-wide block of output positions and KC-deep slice of k, its packed B panels
// (KC x NR, k-major, the layout the micro-kernel reads) are gathered straight from the input
// through a per-block copy plan, and the weights are packed into MR-row panels once per call
// (widening bf16/f16). Output tiles are written in place into the NC[D]HW output (bias is
// pre-filled and accumulated onto). A 1x1(x1) convolution with unit stride and no padding
// reads the input as B directly through the plain GEMM.
#include <algorithm>
#include <cstring>
#include <vector>

#include "../core/threadpool.h"
#include "cpu_backend.h"
#include "gemm.h"
#include "loops.h"

namespace nd {

namespace {

constexpr int64_t kKC = 256;   // depth of one packed slice
constexpr int64_t kMC = 168;   // output channels per task (a multiple of every MR)
constexpr int64_t kNC = 3072;  // output positions per block (packed B slice <= 3 MB)

thread_local cpu::ScratchBuffer t_pack_w;
thread_local cpu::ScratchBuffer t_pack_x;

int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Geometry of a convolution lifted to three spatial dims (2-D: depth 1, kernel depth 1).
struct ConvGeom {
  int64_t N, C, O, G, Cg, Og;
  int64_t in[3], out[3], k[3], stride[3], pad[3], dil[3];  // pad: the leading side of each dim
  int64_t S_in, S_out, kvol, K;
};

ConvGeom make_geom(const Tensor& x, const Tensor& w, const Tensor& out, const ConvArgs& args, int sd) {
  ConvGeom g{};
  g.N = x.shape[0];
  g.C = x.shape[1];
  g.O = w.shape[0];
  g.G = args.groups;
  g.Cg = g.C / g.G;
  g.Og = g.O / g.G;
  const int off = 3 - sd;
  for (int i = 0; i < 3; ++i) {
    const bool lifted = i < off;
    g.in[i] = lifted ? 1 : x.shape[2 + i - off];
    g.out[i] = lifted ? 1 : out.shape[2 + i - off];
    g.k[i] = lifted ? 1 : w.shape[2 + i - off];
    g.stride[i] = lifted ? 1 : args.stride[i];
    g.pad[i] = lifted ? 0 : args.pad[2 * i];
    g.dil[i] = lifted ? 1 : args.dilation[i];
  }
  g.S_in = g.in[0] * g.in[1] * g.in[2];
  g.S_out = g.out[0] * g.out[1] * g.out[2];
  g.kvol = g.k[0] * g.k[1] * g.k[2];
  g.K = g.Cg * g.kvol;
  return g;
}

// One run of a packed row: `zeros_before` zeros, `n` input elements starting at channel
// offset `src` (step `step`), `zeros_after` zeros, written from column `j` of the panel.
struct CopyRun {
  int32_t j, zeros_before, n, zeros_after;
  int64_t src;
};

// For one NC-wide block of output positions: each NR-wide panel is cut into segments that lie
// in one output row (fixed od, oh); for every segment and kernel tap a CopyRun says where the
// segment's input elements are (tap-major within the segment: runs[seg * kvol + tap]).
struct BlockPlan {
  std::vector<int64_t> panel_seg;  // panel q's segments are [panel_seg[q], panel_seg[q + 1])
  std::vector<CopyRun> runs;
};

BlockPlan plan_block(const ConvGeom& g, int64_t p0, int64_t nc, int nr) {
  BlockPlan plan;
  const int64_t panels = (nc + nr - 1) / nr;
  const int64_t Ho = g.out[1], Wo = g.out[2];
  plan.panel_seg.reserve(panels + 1);
  for (int64_t q = 0; q < panels; ++q) {
    plan.panel_seg.push_back(static_cast<int64_t>(plan.runs.size()) / g.kvol);
    const int64_t cols = std::min<int64_t>(nr, nc - q * nr);
    int64_t p = p0 + q * nr;
    for (int64_t j = 0; j < cols;) {
      const int64_t ow = p % Wo, oh = (p / Wo) % Ho, od = p / (Wo * Ho);
      const int64_t len = std::min(cols - j, Wo - ow);
      for (int64_t kd = 0; kd < g.k[0]; ++kd)
        for (int64_t kh = 0; kh < g.k[1]; ++kh)
          for (int64_t kw = 0; kw < g.k[2]; ++kw) {
            CopyRun r{static_cast<int32_t>(j), static_cast<int32_t>(len), 0, 0, 0};
            const int64_t id = od * g.stride[0] - g.pad[0] + kd * g.dil[0];
            const int64_t ih = oh * g.stride[1] - g.pad[1] + kh * g.dil[1];
            if (id >= 0 && id < g.in[0] && ih >= 0 && ih < g.in[1]) {
              // input column of segment element t: iw(t) = a + t * stride_w, valid in [0, Wi)
              const int64_t a = ow * g.stride[2] - g.pad[2] + kw * g.dil[2];
              const int64_t t_lo = std::min(len, std::max<int64_t>(0, floor_div(-a + g.stride[2] - 1, g.stride[2])));
              const int64_t t_hi = std::max(t_lo, std::min(len, floor_div(g.in[2] - 1 - a, g.stride[2]) + 1));
              r.zeros_before = static_cast<int32_t>(t_lo);
              r.n = static_cast<int32_t>(t_hi - t_lo);
              r.zeros_after = static_cast<int32_t>(len - t_hi);
              r.src = (id * g.in[1] + ih) * g.in[2] + a + t_lo * g.stride[2];
            }
            plan.runs.push_back(r);
          }
      j += len;
      p += len;
    }
  }
  plan.panel_seg.push_back(static_cast<int64_t>(plan.runs.size()) / g.kvol);
  return plan;
}

template <class T>
inline float widen(T v);
template <>
inline float widen<float>(float v) { return v; }
struct Bf16Bits {
  uint16_t bits;
};
struct F16Bits {
  uint16_t bits;
};
template <>
inline float widen<Bf16Bits>(Bf16Bits v) { return bf16_to_f32(v.bits); }
template <>
inline float widen<F16Bits>(F16Bits v) { return f16_to_f32(v.bits); }

// Gathers packed panels [q0, q1) of rows [k0, k0 + kc) of the implicit im2col matrix of one
// (batch, group) input `xg` (channel stride S_in) into dst (panel q at dst + q * kc * NR).
template <class T>
void pack_panels(const ConvGeom& g, const BlockPlan& plan, const T* xg, int64_t k0, int64_t kc, int64_t nc, int nr,
                 int64_t q0, int64_t q1, float* dst) {
  const int64_t sw = g.stride[2];
  for (int64_t q = q0; q < q1; ++q) {
    float* panel = dst + q * kc * nr;
    const int64_t cols = std::min<int64_t>(nr, nc - q * nr);
    const CopyRun* segs = plan.runs.data() + plan.panel_seg[q] * g.kvol;
    const int64_t nseg = plan.panel_seg[q + 1] - plan.panel_seg[q];
    int64_t c = k0 / g.kvol, tap = k0 % g.kvol;
    for (int64_t kk = 0; kk < kc; ++kk) {
      float* d = panel + kk * nr;
      const T* xc = xg + c * g.S_in;
      for (int64_t s = 0; s < nseg; ++s) {
        const CopyRun& r = segs[s * g.kvol + tap];
        float* o = d + r.j;
        for (int32_t t = 0; t < r.zeros_before; ++t) *o++ = 0.0f;
        const T* src = xc + r.src;
        if (sw == 1)
          for (int32_t t = 0; t < r.n; ++t) o[t] = widen(src[t]);
        else
          for (int32_t t = 0; t < r.n; ++t) o[t] = widen(src[t * sw]);
        o += r.n;
        for (int32_t t = 0; t < r.zeros_after; ++t) *o++ = 0.0f;
      }
      for (int64_t j = cols; j < nr; ++j) d[j] = 0.0f;
      if (++tap == g.kvol) {
        tap = 0;
        ++c;
      }
    }
  }
}

void pack_x(const ConvGeom& g, const BlockPlan& plan, const Tensor& x, int64_t x_off, int64_t k0, int64_t kc,
            int64_t nc, int nr, int64_t q0, int64_t q1, float* dst) {
  const char* base = static_cast<const char*>(x.data()) + x_off * static_cast<int64_t>(x.itemsize());
  switch (x.dtype) {
    case DType::F32: pack_panels(g, plan, reinterpret_cast<const float*>(base), k0, kc, nc, nr, q0, q1, dst); break;
    case DType::BF16: pack_panels(g, plan, reinterpret_cast<const Bf16Bits*>(base), k0, kc, nc, nr, q0, q1, dst); break;
    default: pack_panels(g, plan, reinterpret_cast<const F16Bits*>(base), k0, kc, nc, nr, q0, q1, dst); break;
  }
}

// Fills rows [o0, o0 + rows) x cols [j0, j0 + n) of out (row stride ld) with the per-row bias.
void fill_bias(float* out, int64_t ld, int64_t o0, int64_t rows, int64_t j0, int64_t n, const float* bias) {
  parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) std::fill_n(out + (o0 + r) * ld + j0, n, bias[o0 + r]);
  });
}

// 1x1(x1) kernel, unit stride, no padding: x[n, group] is already the [Cg, S] B operand.
void conv_pointwise(const ConvGeom& g, const Tensor& x, const Tensor& w, const float* bias, float* out) {
  cpu::GemmEpilogue ep;
  ep.accumulate = bias != nullptr;
  const int64_t S = g.S_out;
  for (int64_t n = 0; n < g.N; ++n)
    for (int64_t gi = 0; gi < g.G; ++gi) {
      float* c = out + (n * g.O + gi * g.Og) * S;
      if (bias) fill_bias(out + n * g.O * S, S, gi * g.Og, g.Og, 0, S, bias);
      const cpu::MatRef a{static_cast<const char*>(w.data()) + gi * g.Og * g.K * static_cast<int64_t>(w.itemsize()),
                          w.dtype, g.K, 1};
      const cpu::MatRef b{static_cast<const char*>(x.data()) + (n * g.C + gi * g.Cg) * S * static_cast<int64_t>(x.itemsize()),
                          x.dtype, S, 1};
      cpu::gemm(g.Og, S, g.Cg, a, b, c, S, ep);
    }
}

void conv_implicit_gemm(const ConvGeom& g, const Tensor& x, const Tensor& w, const float* bias, float* out) {
  const cpu::MicroKernel& uk = cpu::micro_kernel();
  const int MR = uk.mr, NR = uk.nr;
  const int nt = num_threads();
  const int64_t M = g.Og, K = g.K, S = g.S_out;
  const int64_t m_up = cpu::round_up(M, MR);
  const int64_t slices = (K + kKC - 1) / kKC;

  // weights: every group's K slices packed into MR-row panels, once for the whole call
  float* wp = t_pack_w.get(g.G * m_up * K);
  parallel_for(0, g.G * slices, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t gi = t / slices, pc = (t % slices) * kKC, kc = std::min(kKC, K - pc);
      const cpu::MatRef a{static_cast<const char*>(w.data()) + (gi * M * K + pc) * static_cast<int64_t>(w.itemsize()),
                          w.dtype, K, 1};
      cpu::pack_a(a, M, kc, 1.0f, MR, wp + gi * m_up * K + m_up * pc);
    }
  });

  const int64_t m_blocks = (M + kMC - 1) / kMC;
  const int64_t MC = cpu::round_up((M + m_blocks - 1) / m_blocks, MR);
  const int64_t NC = std::min(cpu::round_up(S, NR), kNC);
  float* xp = t_pack_x.get(kKC * NC);

  for (int64_t j0 = 0; j0 < S; j0 += NC) {
    const int64_t nc = std::min(NC, S - j0);
    const int64_t panels = (nc + NR - 1) / NR;
    const BlockPlan plan = plan_block(g, j0, nc, NR);
    const int64_t splits = std::min<int64_t>(panels, std::max<int64_t>(1, (2 * nt + m_blocks - 1) / m_blocks));
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t gi = 0; gi < g.G; ++gi) {
        float* c = out + (n * g.O + gi * M) * S + j0;
        if (bias) fill_bias(out + n * g.O * S, S, gi * M, M, j0, nc, bias);
        const int64_t x_off = (n * g.C + gi * g.Cg) * g.S_in;
        const float* wg = wp + gi * m_up * K;
        for (int64_t pc = 0; pc < K; pc += kKC) {
          const int64_t kc = std::min(kKC, K - pc);
          parallel_for(0, panels, std::max<int64_t>(1, panels / (4 * nt)), [&](int64_t lo, int64_t hi) {
            pack_x(g, plan, x, x_off, pc, kc, nc, NR, lo, hi, xp);
          });
          const bool load = pc > 0 || bias != nullptr;
          const float* ws = wg + m_up * pc;
          parallel_for(0, m_blocks * splits, 1, [&](int64_t lo, int64_t hi) {
            alignas(64) float edge[14 * 32];
            for (int64_t task = lo; task < hi; ++task) {
              const int64_t mb = task / splits, sp = task % splits;
              const int64_t q0 = sp * panels / splits, q1 = (sp + 1) * panels / splits;
              const int64_t i0 = mb * MC, mc = std::min(MC, M - i0);
              if (q0 >= q1 || mc <= 0) continue;
              for (int64_t q = q0; q < q1; ++q) {
                const int64_t jq = q * NR, cols = std::min<int64_t>(NR, nc - jq);
                const float* bp = xp + q * kc * NR;
                for (int64_t ir = 0; ir < mc; ir += MR) {
                  const int64_t rows = std::min<int64_t>(MR, mc - ir);
                  const float* ap = ws + (i0 + ir) * kc;
                  float* cp = c + (i0 + ir) * S + jq;
                  if (rows == MR && cols == NR) {
                    uk.fn(kc, ap, bp, cp, S, load);
                  } else {
                    if (load)
                      for (int64_t r = 0; r < rows; ++r) std::memcpy(edge + r * NR, cp + r * S, cols * sizeof(float));
                    uk.fn(kc, ap, bp, edge, NR, load);
                    for (int64_t r = 0; r < rows; ++r) std::memcpy(cp + r * S, edge + r * NR, cols * sizeof(float));
                  }
                }
              }
            }
          });
        }
      }
  }
}

void conv_forward(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out, const ConvArgs& args, int sd,
                  Backend& be) {
  const ConvGeom g = make_geom(x, w, out, args, sd);
  std::vector<float> bias_f32;
  if (bias.defined()) {
    bias_f32.resize(static_cast<size_t>(g.O));
    const float* p = cpu::load_row(bias.data(), bias.dtype, 0, 1, g.O, bias_f32.data());
    if (p != bias_f32.data()) std::copy(p, p + g.O, bias_f32.begin());
  }
  Tensor out_f32 = out.dtype == DType::F32 ? out : Tensor::empty(out.shape, DType::F32, out.device());
  // unit kernel, stride and leading pad with equal sizes implies no trailing pad either
  const bool pointwise = g.kvol == 1 && g.S_in == g.S_out && g.stride[0] * g.stride[1] * g.stride[2] == 1 &&
                         g.pad[0] == 0 && g.pad[1] == 0 && g.pad[2] == 0;
  const float* b = bias.defined() ? bias_f32.data() : nullptr;
  if (pointwise)
    conv_pointwise(g, x, w, b, out_f32.ptr<float>());
  else
    conv_implicit_gemm(g, x, w, b, out_f32.ptr<float>());
  if (out.dtype != DType::F32) be.copy(out_f32, out);
}

}  // namespace

void CpuBackend::conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out, const ConvArgs& args) {
  conv_forward(x, w, bias, out, args, 2, *this);
}

void CpuBackend::conv3d(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out, const ConvArgs& args) {
  conv_forward(x, w, bias, out, args, 3, *this);
}

}  // namespace nd
