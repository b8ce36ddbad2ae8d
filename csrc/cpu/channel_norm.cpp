// CPU normalize_channels: for every position s of [N, C, S], the L2 norm over C, then the
// affine and activation. Positions are processed in tiles so that the C x tile block read for
// the sum of squares is still in cache when it is read again for the output.
#include <algorithm>
#include <cmath>
#include <vector>

#include "../core/threadpool.h"
#include "cpu_backend.h"
#include "loops.h"
#include "vecmath.h"

namespace nd {

void CpuBackend::normalize_channels(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out,
                                    float scale, float eps, Activation act) {
  const int64_t n = x.shape[0], c = x.shape[1];
  const int64_t s = x.numel() / std::max<int64_t>(1, n * c);
  constexpr int64_t kTile = 256;
  const int64_t tiles = (s + kTile - 1) / kTile;
  const float* w = weight.defined() ? weight.ptr<float>() : nullptr;
  const float* b = bias.defined() ? bias.ptr<float>() : nullptr;
  const bool silu = act == Activation::Silu;
  const bool f32 = x.dtype == DType::F32;
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, c * kTile));
  parallel_for(0, n * tiles, grain, [&](int64_t lo, int64_t hi) {
    std::vector<float> inv(kTile), row(f32 ? 0 : kTile), res(kTile);
    for (int64_t job = lo; job < hi; ++job) {
      const int64_t in = job / tiles, s0 = (job % tiles) * kTile;
      const int64_t len = std::min(kTile, s - s0);
      const int64_t base = in * c * s + s0;
      std::fill(inv.begin(), inv.begin() + len, 0.0f);
      for (int64_t ch = 0; ch < c; ++ch) {
        const float* xr = cpu::load_row(x.data(), x.dtype, base + ch * s, 1, len, row.data());
        float* acc = inv.data();
        for (int64_t i = 0; i < len; ++i) acc[i] += xr[i] * xr[i];
      }
      for (int64_t i = 0; i < len; ++i) inv[i] = scale / std::max(std::sqrt(inv[i]), eps);
      for (int64_t ch = 0; ch < c; ++ch) {
        const float* xr = cpu::load_row(x.data(), x.dtype, base + ch * s, 1, len, row.data());
        const float wc = w ? w[ch] : 1.0f, bc = b ? b[ch] : 0.0f;
        float* y = res.data();
        const float* iv = inv.data();
        for (int64_t i = 0; i < len; ++i) y[i] = xr[i] * iv[i] * wc + bc;
        if (silu) cpu::vec_map(cpu::VecFn::Silu, y, y, len);
        cpu::store_row(out.data(), out.dtype, base + ch * s, 1, len, y);
      }
    }
  });
}

}  // namespace nd
