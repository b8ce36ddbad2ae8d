// Attention for what the tensor-core kernel does not cover (float32, head dims other than 64/128 up
// to 1024 such as the VAEs' single-head mid-block attention, unaligned views): one warp per query
// row, lanes split the head dim, online softmax in float32 with accurate expf. Correct for every
// configuration; fast enough for text encoders, VAE attention and tests.
#include <stdexcept>

#include "attention.h"
#include "kernels.cuh"

namespace nd::cuda {

namespace {

constexpr int kWarpsPerBlock = 4;

// NC = head-dim elements per lane (D, Dv <= 32 * NC).
template <int NC>
__global__ void __launch_bounds__(kWarpsPerBlock * 32) generic_attention_kernel(const AttnParams p) {
  const int lane = threadIdx.x & 31;
  const int64_t row_id = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row_id >= static_cast<int64_t>(p.B) * p.H * p.Lq) return;
  const int i = static_cast<int>(row_id % p.Lq);
  const int h = static_cast<int>((row_id / p.Lq) % p.H);
  const int b = static_cast<int>(row_id / (static_cast<int64_t>(p.Lq) * p.H));
  const int hk = h / (p.H / p.Hk);

  float q[NC];
  const int64_t qo = b * p.q_sb + h * p.q_sh + static_cast<int64_t>(i) * p.q_sl;
#pragma unroll
  for (int c = 0; c < NC; ++c) {
    const int d = lane + 32 * c;
    q[c] = d < p.D ? load_float(p.q, p.qkv_t, qo + d) * p.scale : 0.0f;
  }
  int n_end = p.Lk;
  if (p.kv_lens) n_end = max(0, min(n_end, p.kv_lens[b]));
  if (p.causal) n_end = max(0, min(n_end, i + (p.Lk - p.Lq) + 1));

  float acc[NC];
#pragma unroll
  for (int c = 0; c < NC; ++c) acc[c] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  const int64_t kb = b * p.k_sb + hk * p.k_sh, vb = b * p.v_sb + hk * p.v_sh;
  const int64_t bias_row = b * p.bias_sb + h * p.bias_sh + static_cast<int64_t>(i) * p.bias_sq;
  for (int j = 0; j < n_end; ++j) {
    const int64_t ko = kb + static_cast<int64_t>(j) * p.k_sl;
    float dot = 0.0f;
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int d = lane + 32 * c;
      if (d < p.D) dot += q[c] * load_float(p.k, p.qkv_t, ko + d);
    }
    float s = warp_sum(dot);
    if (p.bias) s += load_float(p.bias, p.bias_t, bias_row + static_cast<int64_t>(j) * p.bias_sk);
    if (s == -INFINITY) continue;  // a -inf bias masks the key
    const float m_new = fmaxf(m, s);
    const float alpha = expf(m - m_new);  // m = -inf the first time: alpha = 0
    const float pj = expf(s - m_new);
    l = l * alpha + pj;
    const int64_t vo = vb + static_cast<int64_t>(j) * p.v_sl;
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int d = lane + 32 * c;
      acc[c] = acc[c] * alpha + (d < p.Dv ? pj * load_float(p.v, p.qkv_t, vo + d) : 0.0f);
    }
    m = m_new;
  }
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  const int64_t oo = b * p.o_sb + h * p.o_sh + static_cast<int64_t>(i) * p.o_sl;
#pragma unroll
  for (int c = 0; c < NC; ++c) {
    const int d = lane + 32 * c;
    if (d < p.Dv) store_float(p.o, p.o_t, oo + d * p.o_sd, acc[c] * inv);
  }
  if (p.lse && lane == 0) p.lse[b * p.lse_sb + h * p.lse_sh + static_cast<int64_t>(i) * p.lse_sl] = l > 0.0f ? m + logf(l) : -INFINITY;
}

}  // namespace

void generic_attention(DeviceContext& ctx, const AttnParams& p) {
  const int dmax = p.D > p.Dv ? p.D : p.Dv;
  if (dmax > 1024)
    throw std::invalid_argument("attention on CUDA supports head dims up to 1024, got " + std::to_string(dmax));
  const int64_t rows = static_cast<int64_t>(p.B) * p.H * p.Lq;
  const int64_t blocks = (rows + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > 0x7fffffff) throw std::invalid_argument("attention problem too large for the generic kernel");
  const dim3 grid(static_cast<unsigned>(blocks));
  const int threads = kWarpsPerBlock * 32;
  if (dmax <= 64) generic_attention_kernel<2><<<grid, threads, 0, ctx.compute>>>(p);
  else if (dmax <= 128) generic_attention_kernel<4><<<grid, threads, 0, ctx.compute>>>(p);
  else if (dmax <= 256) generic_attention_kernel<8><<<grid, threads, 0, ctx.compute>>>(p);
  else if (dmax <= 512) generic_attention_kernel<16><<<grid, threads, 0, ctx.compute>>>(p);  // VAE mid-block attention
  else generic_attention_kernel<32><<<grid, threads, 0, ctx.compute>>>(p);
  ND_CUDA_CHECK_LAUNCH("generic_attention_kernel");
}

}  // namespace nd::cuda
