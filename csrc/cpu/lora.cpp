// LoRA merge: w = base + sum_i scale_i * up_i @ down_i. The deltas are one GEMM over the
// concatenated ranks ([s_1 up_1 | s_2 up_2 | ...] @ [down_1; down_2; ...]) accumulated onto
// base in float32, tile by tile, then stored in w's dtype (bf16/f16 round to nearest even).
// Each tile is read completely before it is written, so w may be base itself.
#include <algorithm>
#include <vector>

#include "../core/threadpool.h"
#include "cpu_backend.h"
#include "gemm.h"
#include "loops.h"

namespace nd {

void CpuBackend::lora_merge(const Tensor& base, const std::vector<LoraTerm>& terms, Tensor& w) {
  const int64_t O = base.shape[0], I = base.shape[1];
  if (O == 0 || I == 0) return;
  int64_t R = 0;
  for (const LoraTerm& t : terms) R += t.up.shape[1];
  // scaled ups side by side [O, R] and downs stacked [R, I], both float32
  std::vector<float> ups(static_cast<size_t>(O * R)), downs(static_cast<size_t>(R * I));
  int64_t r0 = 0;
  for (const LoraTerm& t : terms) {
    const int64_t r = t.up.shape[1];
    for (int64_t o = 0; o < O; ++o)
      for (int64_t j = 0; j < r; ++j)
        ups[o * R + r0 + j] = t.scale * load_as_f32(t.up.data(), t.up.dtype, o * t.up.strides[0] + j * t.up.strides[1]);
    for (int64_t j = 0; j < r; ++j) {
      float* dst = downs.data() + (r0 + j) * I;
      const float* src = cpu::load_row(t.down.data(), t.down.dtype, j * t.down.strides[0], t.down.strides[1], I, dst);
      if (src != dst) std::copy(src, src + I, dst);
    }
    r0 += r;
  }
  // tiles of rows x columns: the tile's f32 accumulator stays in L2 and the GEMM packs only the
  // tile's slice of the downs
  constexpr int64_t kRows = 112, kCols = 1024;
  const int64_t row_tiles = (O + kRows - 1) / kRows, col_tiles = (I + kCols - 1) / kCols;
  cpu::GemmEpilogue ep;
  ep.accumulate = true;
  parallel_for(0, row_tiles * col_tiles, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> acc(static_cast<size_t>(kRows * kCols));
    for (int64_t tile = lo; tile < hi; ++tile) {
      const int64_t o0 = tile / col_tiles * kRows, i0 = tile % col_tiles * kCols;
      const int64_t rows = std::min(kRows, O - o0), cols = std::min(kCols, I - i0);
      for (int64_t r = 0; r < rows; ++r) {
        float* dst = acc.data() + r * cols;
        const float* src = cpu::load_row(base.data(), base.dtype, (o0 + r) * base.strides[0] + i0 * base.strides[1],
                                         base.strides[1], cols, dst);
        if (src != dst) std::copy(src, src + cols, dst);
      }
      if (R > 0) {
        const cpu::MatRef up_ref{ups.data() + o0 * R, DType::F32, R, 1};
        const cpu::MatRef down_ref{downs.data() + i0, DType::F32, I, 1};
        cpu::gemm(rows, cols, R, up_ref, down_ref, acc.data(), cols, ep);
      }
      for (int64_t r = 0; r < rows; ++r)
        cpu::store_row(w.data(), w.dtype, (o0 + r) * w.strides[0] + i0 * w.strides[1], w.strides[1], cols,
                       acc.data() + r * cols);
    }
  });
}

}  // namespace nd
