// CPU rotary position embedding: x [B, L, H, D] (any outer strides, contiguous last dim)
// rotated by float32 cos/sin tables [L, D/2] or [B, L, D/2] into a contiguous output.
#include <algorithm>
#include <vector>

#include "cpu_backend.h"
#include "loops.h"

namespace nd {

void CpuBackend::rope(const Tensor& x, const Tensor& cos, const Tensor& sin, Tensor& out, bool interleaved) {
  const int64_t B = x.shape[0], L = x.shape[1], H = x.shape[2], D = x.shape[3], half = D / 2;
  const bool per_batch = cos.dim() == 3;
  const float* ct = cos.ptr<float>();
  const float* st = sin.ptr<float>();
  const int64_t rows = B * L * H;
  parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)), [&](int64_t lo, int64_t hi) {
    std::vector<float> xbuf(D), ybuf(D);
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t h = r % H, l = (r / H) % L, b = r / (H * L);
      const int64_t xoff = b * x.strides[0] + l * x.strides[1] + h * x.strides[2];
      const int64_t toff = (per_batch ? b * L + l : l) * half;
      const float* c = ct + toff;
      const float* s = st + toff;
      const float* xr = cpu::load_row(x.data(), x.dtype, xoff, 1, D, xbuf.data());
      float* yr = out.dtype == DType::F32 ? out.ptr<float>() + r * D : ybuf.data();
      if (interleaved) {
        for (int64_t i = 0; i < half; ++i) {
          const float x0 = xr[2 * i], x1 = xr[2 * i + 1];
          yr[2 * i] = x0 * c[i] - x1 * s[i];
          yr[2 * i + 1] = x0 * s[i] + x1 * c[i];
        }
      } else {
        for (int64_t i = 0; i < half; ++i) {
          const float x0 = xr[i], x1 = xr[i + half];
          yr[i] = x0 * c[i] - x1 * s[i];
          yr[i + half] = x1 * c[i] + x0 * s[i];
        }
      }
      if (yr == ybuf.data()) cpu::store_row(out.data(), out.dtype, r * D, 1, D, yr);
    }
  });
}

}  // namespace nd
