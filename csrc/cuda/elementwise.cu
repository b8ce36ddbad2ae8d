// CUDA elementwise kernels: strided copy/cast, fill, unary math, broadcasting binary ops,
// affine/clamp, pow and the DiT gated residual add. Semantics follow csrc/cpu/elementwise.cpp and memory.cpp exactly: float
// math in float32 (accurate libdevice functions, no fast-math), integer math in int64.
#include <cmath>
#include <stdexcept>

#include "cuda_backend.h"
#include "kernels.cuh"
#include "runtime.h"

namespace nd {

namespace cuda {

constexpr int kThreads = 256;

__global__ void copy_kernel(Indexer<2> ix, int64_t n, const void* src, DType st, void* dst, DType dt) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    ix.offsets(i, off);
    const int64_t d = off[0], s = off[1];
    if (st == dt) {
      switch (dtype_bytes(st)) {
        case 1: static_cast<uint8_t*>(dst)[d] = static_cast<const uint8_t*>(src)[s]; break;
        case 2: static_cast<uint16_t*>(dst)[d] = static_cast<const uint16_t*>(src)[s]; break;
        case 4: static_cast<uint32_t*>(dst)[d] = static_cast<const uint32_t*>(src)[s]; break;
        default: static_cast<uint64_t*>(dst)[d] = static_cast<const uint64_t*>(src)[s]; break;
      }
    } else if (is_int_dtype(dt)) {
      // int -> int keeps the value; float -> int truncates toward zero (as torch and the CPU)
      const int64_t v = is_int_dtype(st) ? load_int(src, st, s) : static_cast<int64_t>(load_float(src, st, s));
      store_int(dst, dt, d, v);
    } else {
      store_float(dst, dt, d, load_float(src, st, s));
    }
  }
}

__global__ void fill_kernel(Indexer<1> ix, int64_t n, void* out, DType t, float fv, int64_t iv) {
  const bool integer = is_int_dtype(t);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[1];
    ix.offsets(i, off);
    if (integer) store_int(out, t, off[0], iv);
    else store_float(out, t, off[0], fv);
  }
}

__device__ __forceinline__ float unary_f(UnaryOp op, float x) {
  switch (op) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Abs: return fabsf(x);
    case UnaryOp::Exp: return expf(x);
    case UnaryOp::Log: return logf(x);
    case UnaryOp::Sqrt: return sqrtf(x);
    case UnaryOp::Rsqrt: return 1.0f / sqrtf(x);
    case UnaryOp::Sin: return sinf(x);
    case UnaryOp::Cos: return cosf(x);
    case UnaryOp::Tanh: return tanhf(x);
    case UnaryOp::Sigmoid: return 1.0f / (1.0f + expf(-x));
    case UnaryOp::Silu: return x / (1.0f + expf(-x));
    case UnaryOp::GeluErf: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case UnaryOp::GeluTanh: {
      const float inner = 0.7978845608028654f * (x + 0.044715f * x * x * x);
      return 0.5f * x * (1.0f + tanhf(inner));
    }
    case UnaryOp::Relu: return x > 0.0f ? x : 0.0f;
    case UnaryOp::Square: return x * x;
    case UnaryOp::Reciprocal: return 1.0f / x;
  }
  return x;
}

__global__ void unary_kernel(UnaryOp op, Indexer<2> ix, int64_t n, const void* x, DType xt, void* y, DType yt) {
  const bool integer = is_int_dtype(yt);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    ix.offsets(i, off);
    if (integer) {
      const int64_t v = load_int(x, xt, off[1]);
      const int64_t r = op == UnaryOp::Neg ? -v : (op == UnaryOp::Abs ? (v < 0 ? -v : v) : v * v);
      store_int(y, yt, off[0], r);
    } else {
      store_float(y, yt, off[0], unary_f(op, load_float(x, xt, off[1])));
    }
  }
}

__device__ __forceinline__ float binary_f(BinaryOp op, float u, float v) {
  switch (op) {
    case BinaryOp::Add: return u + v;
    case BinaryOp::Sub: return u - v;
    case BinaryOp::Mul: return u * v;
    case BinaryOp::Div: return u / v;
    case BinaryOp::Maximum: return (u > v || u != u) ? u : v;
    case BinaryOp::Minimum: return (u < v || u != u) ? u : v;
    case BinaryOp::Pow: return powf(u, v);
  }
  return u;
}

__device__ __forceinline__ int64_t binary_i(BinaryOp op, int64_t a, int64_t b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Maximum: return a > b ? a : b;
    case BinaryOp::Minimum: return a < b ? a : b;
    default: return 0;  // rejected on the host
  }
}

__global__ void binary_kernel(BinaryOp op, Indexer<3> ix, int64_t n, const void* a, DType at, const void* b, DType bt,
                              void* y, DType yt) {
  const bool integer = is_int_dtype(yt);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[3];
    ix.offsets(i, off);
    if (integer) store_int(y, yt, off[0], binary_i(op, load_int(a, at, off[1]), load_int(b, bt, off[2])));
    else store_float(y, yt, off[0], binary_f(op, load_float(a, at, off[1]), load_float(b, bt, off[2])));
  }
}

__global__ void affine_kernel(Indexer<2> ix, int64_t n, const void* x, DType xt, void* y, DType yt, double mul,
                              double add, bool clamp, double lo, double hi) {
  const bool integer = is_int_dtype(yt);
  const float m = static_cast<float>(mul), a = static_cast<float>(add);
  const float l = static_cast<float>(lo), h = static_cast<float>(hi);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    ix.offsets(i, off);
    if (integer) {
      double v = static_cast<double>(load_int(x, xt, off[1])) * mul + add;
      if (clamp) v = v < lo ? lo : (v > hi ? hi : v);
      store_int(y, yt, off[0], llround(v));
    } else {
      float v = load_float(x, xt, off[1]) * m + a;
      if (clamp) v = v < l ? l : (v > h ? h : v);
      store_float(y, yt, off[0], v);
    }
  }
}

__global__ void pow_scalar_kernel(Indexer<2> ix, int64_t n, const void* x, DType xt, void* y, DType yt, float e) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[2];
    ix.offsets(i, off);
    const float v = load_float(x, xt, off[1]);
    const float r = e == 2.0f ? v * v : (e == 0.5f ? sqrtf(v) : powf(v, e));
    store_float(y, yt, off[0], r);
  }
}

__global__ void gated_add_kernel(Indexer<4> ix, int64_t n, const void* x, DType xt, const void* y, DType yt,
                                 const void* g, DType gt, void* out, DType ot) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t off[4];
    ix.offsets(i, off);
    store_float(out, ot, off[0], load_float(x, xt, off[1]) + load_float(y, yt, off[2]) * load_float(g, gt, off[3]));
  }
}

void activation_inplace(Tensor& t, Activation act) {
  UnaryOp op;
  switch (act) {
    case Activation::None: return;
    case Activation::GeluTanh: op = UnaryOp::GeluTanh; break;
    case Activation::GeluErf: op = UnaryOp::GeluErf; break;
    case Activation::Silu: op = UnaryOp::Silu; break;
    case Activation::Relu: op = UnaryOp::Relu; break;
    default: throw std::invalid_argument("unknown activation");
  }
  const int64_t n = t.numel();
  if (n == 0) return;
  DeviceContext& c = ctx_for(t);
  auto ix = make_indexer<2>(t.shape, {t.strides, t.strides});
  unary_kernel<<<grid_for(n, kThreads), kThreads, 0, c.compute>>>(op, ix, n, t.data(), t.dtype, t.data(), t.dtype);
  ND_CUDA_CHECK_LAUNCH("unary_kernel (activation)");
}

}  // namespace cuda

using namespace cuda;

void CudaBackend::copy(const Tensor& src, Tensor& dst) {
  if (src.shape != dst.shape)
    throw std::invalid_argument("copy: shapes " + shape_str(src.shape) + " and " + shape_str(dst.shape) + " differ");
  const int64_t n = dst.numel();
  if (n == 0) return;
  DeviceContext& c = ctx_for(dst);
  if (src.dtype == dst.dtype && src.is_contiguous() && dst.is_contiguous()) {
    ND_CUDA_CHECK(cudaMemcpyAsync(dst.data(), src.data(), dst.nbytes(), cudaMemcpyDeviceToDevice, c.compute));
    return;
  }
  auto ix = make_indexer<2>(dst.shape, {dst.strides, src.strides});
  copy_kernel<<<grid_for(n, kThreads), kThreads, 0, c.compute>>>(ix, n, src.data(), src.dtype, dst.data(), dst.dtype);
  ND_CUDA_CHECK_LAUNCH("copy_kernel");
}

void CudaBackend::fill(Tensor& out, double value) {
  const int64_t n = out.numel();
  if (n == 0) return;
  DeviceContext& c = ctx_for(out);
  if (value == 0.0 && !std::signbit(value) && out.is_contiguous()) {  // all-zero bits in every dtype
    ND_CUDA_CHECK(cudaMemsetAsync(out.data(), 0, out.nbytes(), c.compute));
    return;
  }
  auto ix = make_indexer<1>(out.shape, {out.strides});
  const int64_t iv = is_int_dtype(out.dtype) ? static_cast<int64_t>(value) : 0;  // (inf/NaN only fill floats)
  fill_kernel<<<grid_for(n, kThreads), kThreads, 0, c.compute>>>(ix, n, out.data(), out.dtype,
                                                                  static_cast<float>(value), iv);
  ND_CUDA_CHECK_LAUNCH("fill_kernel");
}

void CudaBackend::unary(UnaryOp op, const Tensor& x, Tensor& out) {
  if (static_cast<int>(op) < 0 || op > UnaryOp::Reciprocal) throw std::invalid_argument("unknown unary op");
  const int64_t n = out.numel();
  if (n == 0) return;
  DeviceContext& c = ctx_for(out);
  auto ix = make_indexer<2>(out.shape, {out.strides, x.strides});
  unary_kernel<<<grid_for(n, kThreads), kThreads, 0, c.compute>>>(op, ix, n, x.data(), x.dtype, out.data(), out.dtype);
  ND_CUDA_CHECK_LAUNCH("unary_kernel");
}

void CudaBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  if (static_cast<int>(op) < 0 || op > BinaryOp::Pow) throw std::invalid_argument("unknown binary op");
  if (is_int_dtype(out.dtype) && (op == BinaryOp::Div || op == BinaryOp::Pow))
    throw std::invalid_argument("integer division/pow not supported");
  const int64_t n = out.numel();
  if (n == 0) return;
  DeviceContext& c = ctx_for(out);
  auto ix = make_indexer<3>(out.shape, {out.strides, a.strides, b.strides});
  binary_kernel<<<grid_for(n, kThreads), kThreads, 0, c.compute>>>(op, ix, n, a.data(), a.dtype, b.data(), b.dtype,
                                                                    out.data(), out.dtype);
  ND_CUDA_CHECK_LAUNCH("binary_kernel");
}

void CudaBackend::affine(const Tensor& x, Tensor& out, double mul, double add, double lo, double hi) {
  const int64_t n = out.numel();
  if (n == 0) return;
  DeviceContext& c = ctx_for(out);
  auto ix = make_indexer<2>(out.shape, {out.strides, x.strides});
  affine_kernel<<<grid_for(n, kThreads), kThreads, 0, c.compute>>>(ix, n, x.data(), x.dtype, out.data(), out.dtype, mul,
                                                                    add, lo <= hi, lo, hi);
  ND_CUDA_CHECK_LAUNCH("affine_kernel");
}

void CudaBackend::pow_scalar(const Tensor& x, Tensor& out, double exponent) {
  const int64_t n = out.numel();
  if (n == 0) return;
  DeviceContext& c = ctx_for(out);
  auto ix = make_indexer<2>(out.shape, {out.strides, x.strides});
  pow_scalar_kernel<<<grid_for(n, kThreads), kThreads, 0, c.compute>>>(ix, n, x.data(), x.dtype, out.data(), out.dtype,
                                                                        static_cast<float>(exponent));
  ND_CUDA_CHECK_LAUNCH("pow_scalar_kernel");
}

void CudaBackend::gated_add(const Tensor& x, const Tensor& y, const Tensor& gate, Tensor& out) {
  for (const Tensor* t : {&x, &y, &gate}) require_float_dtype(*t, "gated_add");
  if (x.shape != out.shape || y.shape != out.shape || gate.shape != out.shape)
    throw std::invalid_argument("gated_add: operands must be views of the output's shape");
  const int64_t n = out.numel();
  if (n == 0) return;
  DeviceContext& c = ctx_for(out);
  auto ix = make_indexer<4>(out.shape, {out.strides, x.strides, y.strides, gate.strides});
  gated_add_kernel<<<grid_for(n, kThreads), kThreads, 0, c.compute>>>(ix, n, x.data(), x.dtype, y.data(), y.dtype,
                                                                       gate.data(), gate.dtype, out.data(), out.dtype);
  ND_CUDA_CHECK_LAUNCH("gated_add_kernel");
}

}  // namespace nd
