#include "allocator.h"

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace nd::cuda {

size_t CachingAllocator::size_class(size_t nbytes) {
  if (nbytes == 0) nbytes = 1;
  constexpr size_t kSmall = size_t(1) << 20;
  if (nbytes <= kSmall) return (nbytes + 511) / 512 * 512;
  size_t pow2 = kSmall;
  while (pow2 * 2 <= nbytes) pow2 *= 2;  // pow2 <= nbytes < 2 * pow2
  const size_t step = pow2 / 8;
  return (nbytes + step - 1) / step * step;
}

void* CachingAllocator::allocate(size_t nbytes) {
  const size_t cls = size_class(nbytes);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = free_.find(cls);
  if (it != free_.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    cached_ -= cls;
    live_[p] = cls;
    return p;
  }
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, cls);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear the (non-sticky) error before retrying
    // Give the cached blocks back (cudaFree synchronises, so no kernel still uses them) and retry.
    for (auto& [size, blocks] : free_)
      for (void* b : blocks) {
        cudaFree(b);
        reserved_ -= size;
      }
    free_.clear();
    cached_ = 0;
    err = cudaMalloc(&p, cls);
  }
  if (err != cudaSuccess) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    throw std::runtime_error("CUDA out of memory allocating " + std::to_string(nbytes) + " bytes (" +
                             cudaGetErrorString(err) + "; " + std::to_string(free_b >> 20) + " MiB free of " +
                             std::to_string(total_b >> 20) + " MiB, " + std::to_string(reserved_ >> 20) +
                             " MiB held by this process)");
  }
  reserved_ += cls;
  live_[p] = cls;
  return p;
}

void CachingAllocator::release(void* p) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(p);
  if (it == live_.end()) return;  // not ours (called from destructors: never throw)
  const size_t cls = it->second;
  live_.erase(it);
  free_[cls].push_back(p);
  cached_ += cls;
}

void CachingAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [size, blocks] : free_)
    for (void* b : blocks) {
      cudaFree(b);
      reserved_ -= size;
    }
  free_.clear();
  cached_ = 0;
}

}  // namespace nd::cuda
