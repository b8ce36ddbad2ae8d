// CPU nearest-neighbour resize of the trailing 2 or 3 dims. Source indices follow torch's CPU
// formulas for a requested output size (scale = float(in) / out):
//   nearest:       src = min(floor(float(dst) * scale), in - 1)
//   nearest-exact: src = min(floor(float((dst + 0.5) * double(scale))), in - 1)
// Elements are copied bit for bit (the output has the input's dtype).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu_backend.h"
#include "loops.h"

namespace nd {

namespace {

std::vector<int64_t> source_indices(int64_t in, int64_t out, bool exact) {
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  std::vector<int64_t> idx(static_cast<size_t>(out));
  for (int64_t dst = 0; dst < out; ++dst) {
    const float f = exact ? static_cast<float>((static_cast<double>(dst) + 0.5) * static_cast<double>(scale))
                          : static_cast<float>(dst) * scale;
    idx[dst] = std::min<int64_t>(static_cast<int64_t>(std::floor(f)), in - 1);
  }
  return idx;
}

template <class T>
void resize_rows(const Tensor& x, Tensor& out, int sd, bool exact) {
  const int64_t nd_ = x.dim();
  // view both as [planes, D, H, W] (D = 1 for two spatial dims)
  const int64_t Di = sd == 3 ? x.shape[nd_ - 3] : 1, Do = sd == 3 ? out.shape[nd_ - 3] : 1;
  const int64_t Hi = x.shape[nd_ - 2], Ho = out.shape[nd_ - 2];
  const int64_t Wi = x.shape[nd_ - 1], Wo = out.shape[nd_ - 1];
  const int64_t planes = x.numel() / (Di * Hi * Wi);
  const std::vector<int64_t> id = source_indices(Di, Do, exact), ih = source_indices(Hi, Ho, exact),
                             iw = source_indices(Wi, Wo, exact);
  const T* src = x.ptr<T>();
  T* dst = out.ptr<T>();
  // one task per output row; a row whose source row equals the previous row's is a copy of it
  const int64_t rows = planes * Do * Ho;
  parallel_for(0, rows, std::max<int64_t>(1, 8192 / Wo), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t oh = r % Ho, od = (r / Ho) % Do, p = r / (Ho * Do);
      T* orow = dst + r * Wo;
      const int64_t srow = (p * Di + id[od]) * Hi + ih[oh];
      if (r > lo && oh > 0 && ih[oh - 1] == ih[oh]) {
        std::memcpy(orow, orow - Wo, static_cast<size_t>(Wo) * sizeof(T));
        continue;
      }
      const T* irow = src + srow * Wi;
      for (int64_t ow = 0; ow < Wo; ++ow) orow[ow] = irow[iw[ow]];
    }
  });
}

}  // namespace

void CpuBackend::upsample_nearest(const Tensor& x, Tensor& out, int spatial_dims, bool exact) {
  if (x.itemsize() == 4)
    resize_rows<uint32_t>(x, out, spatial_dims, exact);
  else
    resize_rows<uint16_t>(x, out, spatial_dims, exact);
}

}  // namespace nd
