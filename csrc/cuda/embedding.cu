// Embedding lookup: out[r, :] = weight[ids[r], :]. The ids are checked on the host first (one
// small download) so an out-of-range id throws a clear error instead of faulting the device.
#include <stdexcept>
#include <vector>

#include "cuda_backend.h"
#include "kernels.cuh"
#include "runtime.h"

namespace nd {

namespace cuda {

__global__ void embedding_kernel(const void* w, DType wt, int64_t w_s0, int64_t w_s1, const void* ids, DType it,
                                 void* y, DType yt, int64_t rows, int64_t D) {
  const int64_t total = rows * D;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / D, d = i % D;
    const int64_t id = it == DType::I64 ? static_cast<const int64_t*>(ids)[r] : static_cast<const int32_t*>(ids)[r];
    const int64_t src = id * w_s0 + d * w_s1;
    if (wt == yt) {
      if (dtype_bytes(wt) == 4) static_cast<uint32_t*>(y)[i] = static_cast<const uint32_t*>(w)[src];
      else if (dtype_bytes(wt) == 2) static_cast<uint16_t*>(y)[i] = static_cast<const uint16_t*>(w)[src];
      else store_float(y, yt, i, load_float(w, wt, src));
    } else {
      store_float(y, yt, i, load_float(w, wt, src));
    }
  }
}

}  // namespace cuda

void CudaBackend::embedding(const Tensor& weight, const Tensor& ids, Tensor& out) {
  if (weight.dim() != 2) throw std::invalid_argument("embedding weight must be [V, D], got " + weight.describe());
  if (ids.dtype != DType::I32 && ids.dtype != DType::I64)
    throw std::invalid_argument("embedding ids must be int32 or int64, got " + ids.describe());
  if (!out.is_contiguous()) throw std::invalid_argument("embedding needs a contiguous output");
  const int64_t rows = ids.numel(), V = weight.shape[0], D = weight.shape[1];
  if (rows == 0 || D == 0) return;
  Tensor idc = ids;
  if (!ids.is_contiguous()) {
    idc = Tensor::empty(ids.shape, ids.dtype, ids.device());
    copy(ids, idc);
  }
  // validate on the host: a wrong id must not become an illegal memory access
  std::vector<int64_t> host(static_cast<size_t>(rows));
  if (idc.dtype == DType::I64) {
    download(idc, host.data());
  } else {
    std::vector<int32_t> h32(static_cast<size_t>(rows));
    download(idc, h32.data());
    for (int64_t i = 0; i < rows; ++i) host[i] = h32[i];
  }
  for (int64_t i = 0; i < rows; ++i)
    if (host[i] < 0 || host[i] >= V)
      throw std::out_of_range("embedding id " + std::to_string(host[i]) + " at position " + std::to_string(i) +
                              " is outside [0, " + std::to_string(V) + ")");
  cuda::DeviceContext& c = cuda::ctx_for(out);
  constexpr int kThreads = 256;
  cuda::embedding_kernel<<<cuda::grid_for(rows * D, kThreads), kThreads, 0, c.compute>>>(
      weight.data(), weight.dtype, weight.strides[0], weight.strides[1], idc.data(), idc.dtype, out.data(), out.dtype,
      rows, D);
  ND_CUDA_CHECK_LAUNCH("embedding_kernel");
}

}  // namespace nd
