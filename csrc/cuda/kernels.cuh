// Device-side helpers shared by the kernel files: element loads/stores by dtype (matching the CPU
// conversions of core/dtype.h), strided index arithmetic, and warp/block reductions.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "../core/tensor.h"

namespace nd::cuda {

// ---- scalar conversions ----
__device__ __forceinline__ float f8e4m3_to_float(uint8_t b) {
  const uint32_t sign = (b >> 7) & 1u, exp = (b >> 3) & 0xfu, man = b & 0x7u;
  float v;
  if (exp == 0xf && man == 0x7) {
    v = __int_as_float(0x7fc00000);
  } else if (exp == 0) {
    v = static_cast<float>(man) * (1.0f / 512.0f);
  } else {
    v = __uint_as_float(((exp + 120u) << 23) | (man << 20));
  }
  return sign ? -v : v;
}

__device__ __forceinline__ uint8_t float_to_f8e4m3(float f) {
  // Round to nearest even, saturating to +-448 (as the CPU's f32_to_f8e4m3); NaN keeps its sign.
  if (f != f) return static_cast<uint8_t>((__float_as_uint(f) >> 24 & 0x80u) | 0x7fu);
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3));
}

__device__ __forceinline__ float load_float(const void* base, DType t, int64_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(base)[i];
    case DType::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(base)[i]);
    case DType::F16: return __half2float(static_cast<const __half*>(base)[i]);
    case DType::I32: return static_cast<float>(static_cast<const int32_t*>(base)[i]);
    case DType::I64: return static_cast<float>(static_cast<const int64_t*>(base)[i]);
    case DType::U8: return static_cast<float>(static_cast<const uint8_t*>(base)[i]);
    case DType::F8E4M3: return f8e4m3_to_float(static_cast<const uint8_t*>(base)[i]);
  }
  return 0.0f;
}

// Float stores into float dtypes (integer destinations go through store_int).
__device__ __forceinline__ void store_float(void* base, DType t, int64_t i, float v) {
  switch (t) {
    case DType::F32: static_cast<float*>(base)[i] = v; break;
    case DType::BF16: static_cast<__nv_bfloat16*>(base)[i] = __float2bfloat16_rn(v); break;
    case DType::F16: static_cast<__half*>(base)[i] = __float2half_rn(v); break;
    case DType::F8E4M3: static_cast<uint8_t*>(base)[i] = float_to_f8e4m3(v); break;
    case DType::I32: static_cast<int32_t*>(base)[i] = static_cast<int32_t>(v); break;
    case DType::I64: static_cast<int64_t*>(base)[i] = static_cast<int64_t>(v); break;
    case DType::U8:  // truncates toward zero like every float -> integer cast, saturating (NaN -> 0)
      static_cast<uint8_t*>(base)[i] = !(v > 0.0f) ? 0 : (v >= 255.0f ? 255 : static_cast<uint8_t>(v));
      break;
  }
}

__host__ __device__ __forceinline__ int dtype_bytes(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: return 2;
    case DType::I64: return 8;
    default: return 1;
  }
}

__host__ __device__ __forceinline__ bool is_int_dtype(DType t) {
  return t == DType::I32 || t == DType::I64 || t == DType::U8;
}

__device__ __forceinline__ int64_t load_int(const void* base, DType t, int64_t i) {
  switch (t) {
    case DType::I32: return static_cast<const int32_t*>(base)[i];
    case DType::I64: return static_cast<const int64_t*>(base)[i];
    case DType::U8: return static_cast<const uint8_t*>(base)[i];
    default: return static_cast<int64_t>(load_float(base, t, i));
  }
}

__device__ __forceinline__ void store_int(void* base, DType t, int64_t i, int64_t v) {
  switch (t) {
    case DType::I32: static_cast<int32_t*>(base)[i] = static_cast<int32_t>(v); break;
    case DType::I64: static_cast<int64_t*>(base)[i] = v; break;
    case DType::U8: static_cast<uint8_t*>(base)[i] = static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v)); break;
    default: store_float(base, t, i, static_cast<float>(v));
  }
}

// Typed element access for kernels templated on the storage type.
template <class T> struct Elem;
template <> struct Elem<float> {
  static __device__ __forceinline__ float load(const float* p, int64_t i) { return p[i]; }
  static __device__ __forceinline__ void store(float* p, int64_t i, float v) { p[i] = v; }
};
template <> struct Elem<__nv_bfloat16> {
  static __device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }
  static __device__ __forceinline__ void store(__nv_bfloat16* p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }
};
template <> struct Elem<__half> {
  static __device__ __forceinline__ float load(const __half* p, int64_t i) { return __half2float(p[i]); }
  static __device__ __forceinline__ void store(__half* p, int64_t i, float v) { p[i] = __float2half_rn(v); }
};

// ---- strided indexing ----
constexpr int kMaxDims = 8;

// Maps a linear index over a shape to element offsets of N operands with their own strides.
template <int N>
struct Indexer {
  int ndim = 0;
  int64_t size[kMaxDims];
  int64_t stride[N][kMaxDims];
  bool linear = false;  // every operand contiguous over the whole (collapsed) shape: offset == index

  __device__ __forceinline__ void offsets(int64_t i, int64_t (&off)[N]) const {
    if (linear) {
#pragma unroll
      for (int k = 0; k < N; ++k) off[k] = i;
      return;
    }
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t idx = i % size[d];
      i /= size[d];
#pragma unroll
      for (int k = 0; k < N; ++k) off[k] += idx * stride[k][d];
    }
  }
};

// Builds an Indexer: drops size-1 dims and merges dims that are contiguous for every operand.
template <int N>
Indexer<N> make_indexer(const Shape& shape, const std::array<Shape, N>& strides) {
  Shape s;
  std::array<Shape, N> st;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 1) continue;
    if (!s.empty()) {
      bool merge = true;
      for (int k = 0; k < N; ++k)
        if (st[k].back() != strides[k][i] * shape[i]) merge = false;
      if (merge) {
        s.back() *= shape[i];
        for (int k = 0; k < N; ++k) st[k].back() = strides[k][i];
        continue;
      }
    }
    s.push_back(shape[i]);
    for (int k = 0; k < N; ++k) st[k].push_back(strides[k][i]);
  }
  if (s.empty()) {
    s.push_back(1);
    for (int k = 0; k < N; ++k) st[k].push_back(1);
  }
  if (s.size() > static_cast<size_t>(kMaxDims))
    throw std::invalid_argument("CUDA kernels support at most " + std::to_string(kMaxDims) +
                                " non-mergeable dimensions, got shape " + shape_str(shape));
  Indexer<N> ix;
  ix.ndim = static_cast<int>(s.size());
  ix.linear = s.size() == 1;
  for (int k = 0; k < N; ++k)
    if (st[k][0] != 1) ix.linear = false;
  for (int d = 0; d < ix.ndim; ++d) {
    ix.size[d] = s[d];
    for (int k = 0; k < N; ++k) ix.stride[k][d] = st[k][d];
  }
  return ix;
}

// ---- reductions ----
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result.
// `scratch` holds 32 values; the call synchronises the block.
template <class T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = lane < nwarps ? scratch[lane] : T(0);
  return warp_sum(r);
}

template <class T>
__device__ __forceinline__ T block_max(T v, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = lane < nwarps ? scratch[lane] : -INFINITY;
  return warp_max(r);
}

}  // namespace nd::cuda
