// Strided iteration shared by the CPU elementwise kernels: operands of one shape with
// arbitrary strides are walked row by row (the innermost collapsed dimension), rows spread
// over the thread pool, and rows converted to/from float32 scratch buffers as needed.
#pragma once
#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "../core/dtype.h"
#include "../core/tensor.h"
#include "../core/threadpool.h"

namespace nd::cpu {

constexpr int64_t kRowChunk = 4096;  // rows longer than this are processed in pieces

// Merges adjacent dimensions that are contiguous for every operand and drops size-1 dims.
template <size_t N>
void collapse_dims(Shape& shape, std::array<Shape, N>& strides) {
  Shape s;
  std::array<Shape, N> st;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 1) continue;
    if (!s.empty()) {
      bool merge = true;
      for (size_t k = 0; k < N; ++k)
        if (st[k].back() != strides[k][i] * shape[i]) { merge = false; break; }
      if (merge) {
        s.back() *= shape[i];
        for (size_t k = 0; k < N; ++k) st[k].back() = strides[k][i];
        continue;
      }
    }
    s.push_back(shape[i]);
    for (size_t k = 0; k < N; ++k) st[k].push_back(strides[k][i]);
  }
  if (s.empty()) {
    s.push_back(1);
    for (size_t k = 0; k < N; ++k) st[k].push_back(1);
  }
  shape = s;
  strides = st;
}

// Calls fn(offsets, n, inner_strides) for every row piece; offsets are element offsets of each
// operand's first element in the piece. Parallel over pieces.
template <size_t N, class Fn>
void for_each_row(const Shape& shape_in, const std::array<Shape, N>& strides_in, Fn&& fn) {
  Shape shape = shape_in;
  std::array<Shape, N> strides = strides_in;
  if (shape_numel(shape) == 0) return;
  collapse_dims<N>(shape, strides);
  const int64_t nd_ = static_cast<int64_t>(shape.size());
  const int64_t inner = shape.back();
  const int64_t pieces_per_row = (inner + kRowChunk - 1) / kRowChunk;
  const int64_t piece = (inner + pieces_per_row - 1) / pieces_per_row;
  int64_t rows = 1;
  for (int64_t d = 0; d < nd_ - 1; ++d) rows *= shape[d];
  std::array<int64_t, N> inner_strides;
  for (size_t k = 0; k < N; ++k) inner_strides[k] = strides[k].back();
  const int64_t total = rows * pieces_per_row;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, piece));
  parallel_for(0, total, grain, [&](int64_t lo, int64_t hi) {
    for (int64_t p = lo; p < hi; ++p) {
      int64_t row = p / pieces_per_row, part = p % pieces_per_row;
      std::array<int64_t, N> off{};
      int64_t r = row;
      for (int64_t d = nd_ - 2; d >= 0; --d) {
        int64_t idx = r % shape[d];
        r /= shape[d];
        for (size_t k = 0; k < N; ++k) off[k] += idx * strides[k][d];
      }
      int64_t start = part * piece, n = std::min(piece, inner - start);
      for (size_t k = 0; k < N; ++k) off[k] += start * inner_strides[k];
      fn(off, n, inner_strides);
    }
  });
}

// Loads n elements (stride in elements) of type t into buf as float; returns a pointer to
// the floats (the source itself when it already is contiguous float32).
inline const float* load_row(const void* base, DType t, int64_t offset, int64_t stride, int64_t n, float* buf) {
  if (t == DType::F32) {
    const float* p = static_cast<const float*>(base) + offset;
    if (stride == 1) return p;
    for (int64_t i = 0; i < n; ++i) buf[i] = p[i * stride];
    return buf;
  }
  if (t == DType::BF16) {
    const uint16_t* p = static_cast<const uint16_t*>(base) + offset;
    for (int64_t i = 0; i < n; ++i) buf[i] = bf16_to_f32(p[i * stride]);
    return buf;
  }
  if (t == DType::F16) {
    const uint16_t* p = static_cast<const uint16_t*>(base) + offset;
    for (int64_t i = 0; i < n; ++i) buf[i] = f16_to_f32(p[i * stride]);
    return buf;
  }
  for (int64_t i = 0; i < n; ++i) buf[i] = load_as_f32(base, t, offset + i * stride);
  return buf;
}

// Stores n floats into a row of type t (stride in elements).
inline void store_row(void* base, DType t, int64_t offset, int64_t stride, int64_t n, const float* src) {
  if (t == DType::F32) {
    float* p = static_cast<float*>(base) + offset;
    if (stride == 1) {
      if (p != src) std::copy(src, src + n, p);
    } else {
      for (int64_t i = 0; i < n; ++i) p[i * stride] = src[i];
    }
    return;
  }
  if (t == DType::BF16) {
    uint16_t* p = static_cast<uint16_t*>(base) + offset;
    for (int64_t i = 0; i < n; ++i) p[i * stride] = f32_to_bf16(src[i]);
    return;
  }
  if (t == DType::F16) {
    uint16_t* p = static_cast<uint16_t*>(base) + offset;
    for (int64_t i = 0; i < n; ++i) p[i * stride] = f32_to_f16(src[i]);
    return;
  }
  for (int64_t i = 0; i < n; ++i) store_from_f32(base, t, offset + i * stride, src[i]);
}

inline bool is_int(DType t) { return t == DType::I32 || t == DType::I64 || t == DType::U8; }

inline int64_t load_int(const void* base, DType t, int64_t i) {
  switch (t) {
    case DType::I32: return static_cast<const int32_t*>(base)[i];
    case DType::I64: return static_cast<const int64_t*>(base)[i];
    case DType::U8: return static_cast<const uint8_t*>(base)[i];
    default: return static_cast<int64_t>(load_as_f32(base, t, i));
  }
}

inline void store_int(void* base, DType t, int64_t i, int64_t v) {
  switch (t) {
    case DType::I32: static_cast<int32_t*>(base)[i] = static_cast<int32_t>(v); break;
    case DType::I64: static_cast<int64_t*>(base)[i] = v; break;
    case DType::U8: static_cast<uint8_t*>(base)[i] = static_cast<uint8_t>(std::clamp<int64_t>(v, 0, 255)); break;
    default: store_from_f32(base, t, i, static_cast<float>(v));
  }
}

}  // namespace nd::cpu
