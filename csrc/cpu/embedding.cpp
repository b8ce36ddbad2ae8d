// CPU embedding lookup: rows of weight [V, D] (any float dtype, any strides, e.g. a
// memory-mapped bf16 table) gathered by int32/int64 ids into float32 rows. Every id is
// checked before anything is written.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "cpu_backend.h"
#include "loops.h"

namespace nd {

void CpuBackend::embedding(const Tensor& weight, const Tensor& ids, Tensor& out) {
  const int64_t V = weight.shape[0], D = weight.shape[1], n = ids.numel();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = cpu::load_int(ids.data(), ids.dtype, i);
    if (id < 0 || id >= V)
      throw std::out_of_range("embedding: id " + std::to_string(id) + " at position " + std::to_string(i) +
                              " of ids " + shape_str(ids.shape) + " is outside [0, " + std::to_string(V) + ")");
  }
  float* dst = out.ptr<float>();
  parallel_for(0, n, std::max<int64_t>(1, 16384 / std::max<int64_t>(D, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t id = cpu::load_int(ids.data(), ids.dtype, i);
      float* row = dst + i * D;
      const float* src = cpu::load_row(weight.data(), weight.dtype, id * weight.strides[0], weight.strides[1], D, row);
      if (src != row) std::copy(src, src + D, row);
    }
  });
}

}  // namespace nd
