// CUDA reductions over one dim (sum/mean in double, as the CPU) and softmax over the last dim.
#include <cmath>

#include "cuda_backend.h"
#include "kernels.cuh"
#include "runtime.h"

namespace nd {

namespace cuda {

// One warp per output element; ix maps an output index to (out offset, x offset of element 0).
__global__ void reduce_kernel(ReduceOp op, Indexer<2> ix, int64_t nout, int64_t len, int64_t step, const void* x,
                              DType xt, void* y, DType yt) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5;
  const int64_t nwarps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  const bool integer = is_int_dtype(yt);
  for (int64_t o = warp; o < nout; o += nwarps) {
    int64_t off[2];
    ix.offsets(o, off);
    double acc = op == ReduceOp::Max ? -INFINITY : (op == ReduceOp::Min ? INFINITY : 0.0);
    bool nan = false;
    for (int64_t j = lane; j < len; j += 32) {
      const int64_t at = off[1] + j * step;
      const double v = integer ? static_cast<double>(load_int(x, xt, at)) : static_cast<double>(load_float(x, xt, at));
      if (v != v) nan = true;
      if (op == ReduceOp::Max) acc = v > acc ? v : acc;
      else if (op == ReduceOp::Min) acc = v < acc ? v : acc;
      else acc += v;
    }
#pragma unroll
    for (int s = 16; s > 0; s >>= 1) {
      const double other = __shfl_xor_sync(0xffffffffu, acc, s);
      if (op == ReduceOp::Max) acc = other > acc ? other : acc;
      else if (op == ReduceOp::Min) acc = other < acc ? other : acc;
      else acc += other;
    }
    nan = __any_sync(0xffffffffu, nan);
    if (lane == 0) {
      if (op == ReduceOp::Mean) acc /= static_cast<double>(len);
      if (nan && (op == ReduceOp::Max || op == ReduceOp::Min)) acc = NAN;
      if (integer) store_int(y, yt, off[0], static_cast<int64_t>(acc));
      else store_float(y, yt, off[0], static_cast<float>(acc));
    }
  }
}

// One warp per row of a contiguous [rows, cols] tensor.
__global__ void softmax_kernel(int64_t rows, int64_t cols, const void* x, DType xt, void* y, DType yt) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) >> 5;
  const int64_t nwarps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t r = warp; r < rows; r += nwarps) {
    const int64_t base = r * cols;
    float m = -INFINITY;
    for (int64_t j = lane; j < cols; j += 32) m = fmaxf(m, load_float(x, xt, base + j));
    m = warp_max(m);
    if (m == -INFINITY) m = 0.0f;  // fully masked row -> zeros, not NaN (as the CPU)
    float sum = 0.0f;
    for (int64_t j = lane; j < cols; j += 32) sum += expf(load_float(x, xt, base + j) - m);
    sum = warp_sum(sum);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (int64_t j = lane; j < cols; j += 32) store_float(y, yt, base + j, expf(load_float(x, xt, base + j) - m) * inv);
  }
}

}  // namespace cuda

using namespace cuda;

void CudaBackend::reduce(ReduceOp op, const Tensor& x, int64_t dim, Tensor& out) {
  const int64_t nout = out.numel();
  if (nout == 0) return;
  DeviceContext& c = ctx_for(out);
  Shape xstr = x.strides;
  xstr[dim] = 0;
  auto ix = make_indexer<2>(out.shape, {out.strides, xstr});
  constexpr int kThreads = 256;
  reduce_kernel<<<grid_for(nout * 32, kThreads), kThreads, 0, c.compute>>>(op, ix, nout, x.shape[dim], x.strides[dim],
                                                                            x.data(), x.dtype, out.data(), out.dtype);
  ND_CUDA_CHECK_LAUNCH("reduce_kernel");
}

void CudaBackend::softmax(const Tensor& x, Tensor& out) {
  const int64_t cols = x.shape.empty() ? 1 : x.shape.back();
  const int64_t rows = cols == 0 ? 0 : x.numel() / cols;
  if (rows == 0) return;
  if (!x.is_contiguous() || !out.is_contiguous()) throw std::invalid_argument("softmax needs contiguous tensors");
  DeviceContext& c = ctx_for(out);
  constexpr int kThreads = 256;
  softmax_kernel<<<grid_for(rows * 32, kThreads), kThreads, 0, c.compute>>>(rows, cols, x.data(), x.dtype, out.data(),
                                                                             out.dtype);
  ND_CUDA_CHECK_LAUNCH("softmax_kernel");
}

}  // namespace nd
