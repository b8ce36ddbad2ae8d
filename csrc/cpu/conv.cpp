// CPU conv2d/conv3d as implicit GEMMs on the GEMM engine's micro-kernel (gemm.h).
//
// Per batch element and group: out[o, p] = bias[o] + sum_k W[o, k] x_col[k, p], with the
// reduction index k = (tap, c) (kernel tap outer, input channel inner) and p the output
// position. The im2col matrix is never materialised: each task owns a run of NR-wide panels of
// output positions, and for each KC-deep slice of k gathers their packed B panels (KC x NR,
// k-major, the layout the micro-kernel reads) straight from the input through a per-task copy
// plan, then multiplies them by the whole weight matrix. Taps that read only padding for every
// position of a task (the zero frames in front of a causal conv's first chunk) are skipped.
// The weights are packed into MR-row panels once per call (widening bf16/f16); output tiles
// are written in place into the NC[D]HW output, onto the pre-filled bias. A 1x1(x1)
// convolution with unit stride and no padding reads the input as B directly through the plain
// GEMM.
#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../core/threadpool.h"
#include "cpu_backend.h"
#include "gemm.h"
#include "loops.h"

namespace nd {

namespace {

constexpr int64_t kKC = 512;              // depth of one packed slice (at most)
constexpr int64_t kBlockB = 128 * 1024;  // floats of one task's packed B slice (L2)

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
  std::vector<bool> tap_active;  // whether a tap reads any input (not only padding) in this block
};

BlockPlan plan_block(const ConvGeom& g, int64_t p0, int64_t nc, int nr) {
  BlockPlan plan;
  const int64_t panels = (nc + nr - 1) / nr;
  const int64_t Ho = g.out[1], Wo = g.out[2];
  plan.panel_seg.reserve(panels + 1);
  plan.tap_active.assign(static_cast<size_t>(g.kvol), false);
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
            if (r.n > 0) plan.tap_active[(kd * g.k[1] + kh) * g.k[2] + kw] = true;
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

// Copies `rows` rows of W input elements (rows `ld` apart: one per channel plane) into rows
// of a panel (`nr` apart). The rows are too far apart for the hardware prefetchers, so each
// row's lines are fetched a few rows ahead.
constexpr int64_t kGatherAhead = 8;

template <int W>
inline void copy_rows(const float* src, int64_t ld, int64_t rows, float* dst, int nr) {
  for (int64_t i = 0; i < rows; ++i) {
    if (i + kGatherAhead < rows) {
      __builtin_prefetch(src + (i + kGatherAhead) * ld, 0, 3);
      __builtin_prefetch(src + (i + kGatherAhead) * ld + W - 1, 0, 3);
    }
    std::memcpy(dst + i * nr, src + i * ld, W * sizeof(float));
  }
}

// Gathers the packed panels of rows [k0, k0 + kc) of the implicit im2col matrix (rows in
// (tap, c) order) of one (batch, group) input `xg` (channel stride S_in) for the nc positions
// of `plan` into dst (panel q at dst + q * kc * NR). The rows of one tap share their copy runs
// (only the channel plane moves), so each run is looked up once per tap; a run that fills a
// whole panel row from contiguous float32 input is a fixed-size copy.
template <class T>
void pack_panels(const ConvGeom& g, const BlockPlan& plan, const T* xg, int64_t k0, int64_t kc, int64_t nc, int nr,
                 float* dst) {
  const int64_t sw = g.stride[2], ld = g.S_in;
  const int64_t panels = (nc + nr - 1) / nr;
  for (int64_t q = 0; q < panels; ++q) {
    float* panel = dst + q * kc * nr;
    const int64_t cols = std::min<int64_t>(nr, nc - q * nr);
    const CopyRun* segs = plan.runs.data() + plan.panel_seg[q] * g.kvol;
    const int64_t nseg = plan.panel_seg[q + 1] - plan.panel_seg[q];
    for (int64_t kk0 = 0; kk0 < kc;) {
      const int64_t tap = (k0 + kk0) / g.Cg, c0 = (k0 + kk0) % g.Cg;
      const int64_t rows = std::min(kc - kk0, g.Cg - c0);
      float* d0 = panel + kk0 * nr;
      for (int64_t s = 0; s < nseg; ++s) {
        const CopyRun& r = segs[s * g.kvol + tap];
        const T* src0 = xg + c0 * ld + r.src;
        float* o0 = d0 + r.j;
        if constexpr (std::is_same_v<T, float>) {
          if (sw == 1 && r.n == nr && nr == 32) {
            copy_rows<32>(src0, ld, rows, o0, nr);
            continue;
          }
          if (sw == 1 && r.n == nr && nr == 16) {
            copy_rows<16>(src0, ld, rows, o0, nr);
            continue;
          }
        }
        for (int64_t i = 0; i < rows; ++i) {
          float* o = o0 + i * nr;
          const T* src = src0 + i * ld;
          if (i + kGatherAhead < rows && r.n > 0) {
            __builtin_prefetch(src + kGatherAhead * ld, 0, 3);
            __builtin_prefetch(src + kGatherAhead * ld + (r.n - 1) * sw, 0, 3);
          }
          for (int32_t t = 0; t < r.zeros_before; ++t) *o++ = 0.0f;
          if (sw == 1)
            for (int32_t t = 0; t < r.n; ++t) o[t] = widen(src[t]);
          else
            for (int32_t t = 0; t < r.n; ++t) o[t] = widen(src[t * sw]);
          o += r.n;
          for (int32_t t = 0; t < r.zeros_after; ++t) *o++ = 0.0f;
        }
      }
      if (cols < nr)
        for (int64_t i = 0; i < rows; ++i) std::fill(d0 + i * nr + cols, d0 + (i + 1) * nr, 0.0f);
      kk0 += rows;
    }
  }
}

void pack_x(const ConvGeom& g, const BlockPlan& plan, const Tensor& x, int64_t x_off, int64_t k0, int64_t kc,
            int64_t nc, int nr, float* dst) {
  const char* base = static_cast<const char*>(x.data()) + x_off * static_cast<int64_t>(x.itemsize());
  switch (x.dtype) {
    case DType::F32: pack_panels(g, plan, reinterpret_cast<const float*>(base), k0, kc, nc, nr, dst); break;
    case DType::BF16: pack_panels(g, plan, reinterpret_cast<const Bf16Bits*>(base), k0, kc, nc, nr, dst); break;
    default: pack_panels(g, plan, reinterpret_cast<const F16Bits*>(base), k0, kc, nc, nr, dst); break;
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

// Packs MR-row panels [p0, p1) of group gi's weights as one K-deep slice with columns in
// (tap, c) order: dst[p * K * MR + k * MR + r] = W[p * MR + r, c, tap] (rows past M are zero).
template <class T>
void pack_weights(const ConvGeom& g, const T* w, int64_t gi, int mr, int64_t p0, int64_t p1, float* dst) {
  const int64_t M = g.Og, K = g.K;
  for (int64_t p = p0; p < p1; ++p) {
    float* d = dst + p * K * mr;
    const int64_t rows = std::min<int64_t>(mr, M - p * mr);
    const T* wp = w + (gi * M + p * mr) * K;  // the panel's first row
    // destination order (sequential writes); the panel's rows are read in step
    for (int64_t tap = 0; tap < g.kvol; ++tap)
      for (int64_t c = 0; c < g.Cg; ++c, d += mr) {
        const T* src = wp + c * g.kvol + tap;
        for (int64_t r = 0; r < rows; ++r) d[r] = widen(src[r * K]);
        for (int64_t r = rows; r < mr; ++r) d[r] = 0.0f;
      }
  }
}

// Cuts the rows of the taps a block reads into slices of at most kKC rows: [k0, k0 + kc).
std::vector<std::pair<int64_t, int64_t>> block_slices(const ConvGeom& g, const BlockPlan& plan) {
  std::vector<std::pair<int64_t, int64_t>> slices;
  for (int64_t t0 = 0; t0 < g.kvol;) {
    if (!plan.tap_active[t0]) {
      ++t0;
      continue;
    }
    int64_t t1 = t0 + 1;
    while (t1 < g.kvol && plan.tap_active[t1]) ++t1;
    const int64_t len = (t1 - t0) * g.Cg, parts = (len + kKC - 1) / kKC, step = (len + parts - 1) / parts;
    for (int64_t k = 0; k < len; k += step) slices.emplace_back(t0 * g.Cg + k, std::min(step, len - k));
    t0 = t1;
  }
  return slices;
}

// The weights (A) are packed whole once; each task owns a run of NR-panels of output
// positions of one (batch, group) and gathers and multiplies them slice by slice on its own:
// no barrier between packing and compute, every im2col element gathered once, and many small
// tasks keep both cores busy. Within a slice the micro-kernel runs A micro-panel outer (it
// stays in L1) over the task's packed B block (L2); the task's output block starts from the
// bias and accumulates over the slices.
void conv_implicit_gemm(const ConvGeom& g, const Tensor& x, const Tensor& w, const float* bias, float* out) {
  const int64_t M = g.Og, K = g.K, S = g.S_out;
  const cpu::MicroKernel& uk = cpu::micro_kernel_for_rows(M);
  const int MR = uk.mr, NR = uk.nr;
  const int nt = num_threads();
  const int64_t m_panels = (M + MR - 1) / MR;

  // weights: every group packed once for the whole call
  float* wp = t_pack_w.get(g.G * m_panels * MR * K);
  parallel_for(0, g.G * m_panels, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t t = lo; t < hi; ++t) {
      const int64_t gi = t / m_panels, p = t % m_panels;
      float* dst = wp + gi * m_panels * MR * K;
      switch (w.dtype) {
        case DType::F32: pack_weights(g, w.ptr<float>(), gi, MR, p, p + 1, dst); break;
        case DType::BF16: pack_weights(g, w.ptr<Bf16Bits>(), gi, MR, p, p + 1, dst); break;
        default: pack_weights(g, w.ptr<F16Bits>(), gi, MR, p, p + 1, dst); break;
      }
    }
  });

  // tasks per (batch, group): a task's packed B block (kKC x its columns) stays within
  // kBlockB floats, and the task count is a multiple of 4 per thread where the panels allow,
  // so parallel_for's chunks hold equal work
  const int64_t panels = (S + NR - 1) / NR;
  const int64_t units = g.N * g.G;
  const int64_t by_cache = std::max<int64_t>(1, kBlockB / (kKC * NR));
  int64_t unit_tasks = (panels + by_cache - 1) / by_cache;
  const int64_t chunk = 4 * static_cast<int64_t>(nt);
  if (units * unit_tasks < chunk) unit_tasks = std::min(panels, (chunk + units - 1) / units);
  else if (units == 1) unit_tasks = std::min(panels, cpu::round_up(unit_tasks, chunk));
  const int64_t max_task_panels = (panels + unit_tasks - 1) / unit_tasks;

  parallel_for(0, units * unit_tasks, 1, [&](int64_t lo, int64_t hi) {
    alignas(64) float edge[cpu::kMaxTile];
    float* xp = t_pack_x.get(kKC * max_task_panels * NR);
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t u = task / unit_tasks, t = task % unit_tasks;
      const int64_t n = u / g.G, gi = u % g.G;
      const int64_t q0 = t * panels / unit_tasks, q1 = (t + 1) * panels / unit_tasks;
      if (q0 >= q1) continue;
      const int64_t j0 = q0 * NR, nc = std::min(q1 * NR, S) - j0;
      const BlockPlan plan = plan_block(g, j0, nc, NR);
      const auto slices = block_slices(g, plan);
      float* c = out + (n * g.O + gi * M) * S + j0;
      // the block starts from the bias (or zeros when every tap reads only padding)
      if (bias || slices.empty())
        for (int64_t r = 0; r < M; ++r) std::fill_n(c + r * S, nc, bias ? bias[gi * M + r] : 0.0f);
      const int64_t x_off = (n * g.C + gi * g.Cg) * g.S_in;
      const float* wg = wp + gi * m_panels * MR * K;
      const int64_t np = (nc + NR - 1) / NR;
      for (size_t si = 0; si < slices.size(); ++si) {
        const auto [k0, kc] = slices[si];
        pack_x(g, plan, x, x_off, k0, kc, nc, NR, xp);
        const bool load = si > 0 || bias != nullptr;
        for (int64_t ir = 0; ir < M; ir += MR) {
          const int64_t rows = std::min<int64_t>(MR, M - ir);
          const float* ap = wg + ir * K + k0 * MR;
          for (int64_t q = 0; q < np; ++q) {
            const int64_t jq = q * NR, cols = std::min<int64_t>(NR, nc - jq);
            const float* bp = xp + q * kc * NR;
            cpu::run_tile(uk, kc, ap, bp, c + ir * S + jq, S, rows, cols, load, edge);
          }
        }
      }
    }
  });
}

// ---- few output channels per group (RGB conv_out, depthwise): direct convolution ----
// With only a few output channels the micro-kernel's MR rows would mostly be padding and
// packing B would dominate, so output rows are computed directly: a tile of kTile output
// positions of up to kOutBlock channels is held in vector registers while each input row
// segment is loaded once and multiplied by every channel's weight. A task covers kRowsPerTask
// output rows and sweeps them once per block of kChanBlock input channels, keeping partial
// sums in a small buffer, so the input rows a channel block shares between neighbouring
// output rows are read from memory once and then come from cache.

constexpr int kOutBlock = 4;
constexpr int kTile = 16;  // output positions per tile (two 8-float vectors)
constexpr int64_t kChanBlock = 8;
constexpr int64_t kRowsPerTask = 16;
typedef float v8f __attribute__((vector_size(32)));

inline v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store8(float* p, v8f v) { std::memcpy(p, &v, sizeof v); }

// Pins a vector to a register so the compiler loads it once instead of folding the load into
// every instruction that uses it (which would make the loop load-bound).
inline void keep_in_register(v8f& v) {
#if defined(__x86_64__)
  __asm__("" : "+x"(v));
#else
  (void)v;
#endif
}

// Output rows [lo, hi) (row = (od, oh)) of OB channels for one (batch, group): xg is the group's
// float32 input, wt its packed weights wt[(c * kvol + tap) * OB + ob], outs the channel planes.
template <int OB>
void direct_rows(const ConvGeom& g, const float* xg, const float* wt, const float* bias, float* const* outs,
                 int64_t lo, int64_t hi) {
  const int64_t Di = g.in[0], Hi = g.in[1], Wi = g.in[2], Ho = g.out[1], Wo = g.out[2];
  const int64_t KW = g.k[2], dw = g.dil[2], pl = g.pad[2];
  const int64_t span = kTile + (KW - 1) * dw;  // input columns one tile reads per kernel row
  const int64_t tiles = (Wo + kTile - 1) / kTile;
  const int64_t rows = hi - lo;
  std::vector<float> padded(static_cast<size_t>(span));
  std::vector<float> sums(static_cast<size_t>(rows * tiles * OB * kTile));  // [row][tile][ob][kTile]
  // per output row: the (kd, kh) kernel rows that read inside the input
  std::vector<int64_t> row_off, tap_base, first(static_cast<size_t>(rows + 1), 0);
  for (int64_t r = lo; r < hi; ++r) {
    const int64_t oh = r % Ho, od = r / Ho;
    for (int64_t kd = 0; kd < g.k[0]; ++kd) {
      const int64_t id = od * g.stride[0] - g.pad[0] + kd * g.dil[0];
      if (id < 0 || id >= Di) continue;
      for (int64_t kh = 0; kh < g.k[1]; ++kh) {
        const int64_t ih = oh * g.stride[1] - g.pad[1] + kh * g.dil[1];
        if (ih < 0 || ih >= Hi) continue;
        row_off.push_back((id * Hi + ih) * Wi);
        tap_base.push_back((kd * g.k[1] + kh) * KW);
      }
    }
    first[r - lo + 1] = static_cast<int64_t>(row_off.size());
  }
  for (int64_t c0 = 0; c0 < g.Cg; c0 += kChanBlock) {
    const int64_t c1 = std::min(g.Cg, c0 + kChanBlock);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t tile = 0; tile < tiles; ++tile) {
        const int64_t ow0 = tile * kTile;
        float* ts = sums.data() + (r * tiles + tile) * OB * kTile;
        v8f acc[OB][2];
        for (int ob = 0; ob < OB; ++ob) {
          if (c0 == 0) {
            const float b0 = bias ? bias[ob] : 0.0f;
            acc[ob][0] = v8f{} + b0;
            acc[ob][1] = v8f{} + b0;
          } else {
            acc[ob][0] = load8(ts + ob * kTile);
            acc[ob][1] = load8(ts + ob * kTile + 8);
          }
        }
        const int64_t iw0 = ow0 - pl;  // input column of tile position 0 at kw = 0
        const bool interior = iw0 >= 0 && iw0 + span <= Wi;
        for (int64_t c = c0; c < c1; ++c) {
          const float* xc = xg + c * g.S_in;
          const float* wc = wt + c * g.kvol * OB;
          for (int64_t t = first[r]; t < first[r + 1]; ++t) {
            const float* xr = xc + row_off[t] + iw0;
            if (!interior) {
              // a zero-padded copy of the columns this tile reads
              for (int64_t j = 0; j < span; ++j) {
                const int64_t iw = iw0 + j;
                padded[j] = iw >= 0 && iw < Wi ? xr[j] : 0.0f;
              }
              xr = padded.data();
            }
            const float* wk = wc + tap_base[t] * OB;
            for (int64_t kw = 0; kw < KW; ++kw) {
              v8f x0 = load8(xr + kw * dw), x1 = load8(xr + kw * dw + 8);
              keep_in_register(x0);
              keep_in_register(x1);
              for (int ob = 0; ob < OB; ++ob) {
                const float wv = wk[kw * OB + ob];
                acc[ob][0] += wv * x0;
                acc[ob][1] += wv * x1;
              }
            }
          }
        }
        for (int ob = 0; ob < OB; ++ob) {
          store8(ts + ob * kTile, acc[ob][0]);
          store8(ts + ob * kTile + 8, acc[ob][1]);
        }
      }
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t tile = 0; tile < tiles; ++tile) {
      const int64_t ow0 = tile * kTile, n = std::min<int64_t>(kTile, Wo - ow0);
      for (int ob = 0; ob < OB; ++ob)
        std::copy_n(sums.data() + ((r * tiles + tile) * OB + ob) * kTile, n, outs[ob] + (lo + r) * Wo + ow0);
    }
}

// Unit column stride only (the tile reads contiguous input columns); x must be float32.
void conv_direct(const ConvGeom& g, const Tensor& x, const Tensor& w, const float* bias, float* out) {
  const int64_t rows = g.out[0] * g.out[1];
  const int64_t blocks = (g.Og + kOutBlock - 1) / kOutBlock;
  // weights of each (group, channel block), channel-minor: [g][block][c][tap][ob]
  std::vector<float> wt(static_cast<size_t>(g.G * blocks * kOutBlock * g.K), 0.0f);
  for (int64_t gi = 0; gi < g.G; ++gi)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t o0 = b * kOutBlock, ob_n = std::min<int64_t>(kOutBlock, g.Og - o0);
      float* dst = wt.data() + (gi * blocks + b) * kOutBlock * g.K;
      for (int64_t ob = 0; ob < ob_n; ++ob)
        for (int64_t k = 0; k < g.K; ++k)
          dst[k * ob_n + ob] = load_as_f32(w.data(), w.dtype, (gi * g.Og + o0 + ob) * g.K + k);
    }
  const int64_t units = g.N * g.G * blocks;
  const int64_t chunks = (rows + kRowsPerTask - 1) / kRowsPerTask;
  parallel_for(0, units * chunks, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t task = lo; task < hi; ++task) {
      const int64_t u = task / chunks, r0 = (task % chunks) * kRowsPerTask, r1 = std::min(rows, r0 + kRowsPerTask);
      const int64_t b = u % blocks, gi = (u / blocks) % g.G, n = u / (blocks * g.G);
      const int64_t o0 = gi * g.Og + b * kOutBlock, ob_n = std::min<int64_t>(kOutBlock, g.Og - b * kOutBlock);
      const float* xg = x.ptr<float>() + (n * g.C + gi * g.Cg) * g.S_in;
      const float* wb = wt.data() + (gi * blocks + b) * kOutBlock * g.K;
      const float* bb = bias ? bias + o0 : nullptr;
      float* outs[kOutBlock];
      for (int64_t ob = 0; ob < ob_n; ++ob) outs[ob] = out + (n * g.O + o0 + ob) * g.S_out;
      switch (ob_n) {
        case 1: direct_rows<1>(g, xg, wb, bb, outs, r0, r1); break;
        case 2: direct_rows<2>(g, xg, wb, bb, outs, r0, r1); break;
        case 3: direct_rows<3>(g, xg, wb, bb, outs, r0, r1); break;
        default: direct_rows<4>(g, xg, wb, bb, outs, r0, r1); break;
      }
    }
  });
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
  if (pointwise) {
    conv_pointwise(g, x, w, b, out_f32.ptr<float>());
  } else if (g.Og <= kOutBlock && g.stride[2] == 1) {
    Tensor xf = x;
    if (x.dtype != DType::F32) {
      xf = Tensor::empty(x.shape, DType::F32, x.device());
      be.copy(x, xf);
    }
    conv_direct(g, xf, w, b, out_f32.ptr<float>());
  } else {
    conv_implicit_gemm(g, x, w, b, out_f32.ptr<float>());
  }
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
