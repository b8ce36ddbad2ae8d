// randn on the CPU: element i of the (contiguous) output is normal number (i + offset) of the
// Philox stream for `seed`, so a tensor can be drawn in pieces and CUDA draws the same values.
#include "../core/philox.h"
#include "cpu_backend.h"
#include "loops.h"

namespace nd {

void CpuBackend::randn(Tensor& out, uint64_t seed, uint64_t offset) {
  const int64_t n = out.numel();
  const DType t = out.dtype;
  void* base = out.data();
  parallel_for(0, n, 4096, [&](int64_t lo, int64_t hi) {
    float vals[4];
    uint64_t cached = ~0ull;
    for (int64_t i = lo; i < hi; ++i) {
      const uint64_t g = static_cast<uint64_t>(i) + offset;
      if (g / 4 != cached) {
        cached = g / 4;
        philox::normal4(seed, cached, vals);
      }
      store_from_f32(base, t, i, vals[g % 4]);
    }
  });
}

}  // namespace nd
