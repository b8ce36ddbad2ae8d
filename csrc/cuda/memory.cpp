// Device memory (caching allocator) and host <-> device transfers through pinned staging buffers
// on the copy stream. Uploads return once the data sits in pinned memory; the compute stream
// waits for the copy on the device. Downloads are the one place the host waits for the device.
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "cuda_backend.h"
#include "runtime.h"

namespace nd {

using cuda::DeviceContext;

// ND_CUDA_POISON=1 fills every new allocation with 0xff bytes (NaN in every float dtype), so an
// output element a kernel forgets to write shows up in the GPU checks (test/gpu/run.ts).
static bool poison_allocations() {
  static const bool on = [] {
    const char* v = std::getenv("ND_CUDA_POISON");
    return v && v[0] == '1';
  }();
  return on;
}

void* CudaBackend::allocate(size_t nbytes, Device device) {
  DeviceContext& c = cuda::device_context(device.index);
  void* p = c.allocator.allocate(nbytes);
  if (poison_allocations()) ND_CUDA_CHECK(cudaMemsetAsync(p, 0xff, nbytes, c.compute));
  return p;
}

void CudaBackend::deallocate(void* p, size_t, Device device) {
  if (DeviceContext* c = cuda::existing_context(device.index)) c->allocator.release(p);
}

static void ensure_staging(DeviceContext& c) {
  for (auto& buf : c.staging)
    if (!buf) ND_CUDA_CHECK(cudaHostAlloc(&buf, DeviceContext::kStagingBytes, cudaHostAllocPortable));
}

// The copy stream must not touch a block before the kernels queued for its previous owner ran.
static void copy_stream_follows_compute(DeviceContext& c) {
  ND_CUDA_CHECK(cudaEventRecord(c.compute_done, c.compute));
  ND_CUDA_CHECK(cudaStreamWaitEvent(c.copy, c.compute_done, 0));
}

void CudaBackend::upload(const void* host, Tensor& dst) {
  if (!dst.is_contiguous()) throw std::invalid_argument("upload needs a contiguous destination, got " + dst.describe());
  const size_t n = dst.nbytes();
  if (n == 0) return;
  DeviceContext& c = cuda::ctx_for(dst);
  std::lock_guard<std::mutex> lock(c.staging_mu);
  ensure_staging(c);
  copy_stream_follows_compute(c);
  char* d = static_cast<char*>(dst.data());
  const char* h = static_cast<const char*>(host);
  int slot = 0;
  for (size_t off = 0; off < n; off += DeviceContext::kStagingBytes) {
    const size_t len = std::min(DeviceContext::kStagingBytes, n - off);
    ND_CUDA_CHECK(cudaEventSynchronize(c.staging_free[slot]));  // the slot's previous transfer is done
    std::memcpy(c.staging[slot], h + off, len);
    ND_CUDA_CHECK(cudaMemcpyAsync(d + off, c.staging[slot], len, cudaMemcpyHostToDevice, c.copy));
    ND_CUDA_CHECK(cudaEventRecord(c.staging_free[slot], c.copy));
    slot ^= 1;
  }
  ND_CUDA_CHECK(cudaEventRecord(c.copy_done, c.copy));
  ND_CUDA_CHECK(cudaStreamWaitEvent(c.compute, c.copy_done, 0));
}

void CudaBackend::download(const Tensor& src, void* host) {
  if (!src.is_contiguous()) throw std::invalid_argument("download needs a contiguous source, got " + src.describe());
  const size_t n = src.nbytes();
  if (n == 0) return;
  DeviceContext& c = cuda::ctx_for(src);
  std::lock_guard<std::mutex> lock(c.staging_mu);
  ensure_staging(c);
  copy_stream_follows_compute(c);
  const char* s = static_cast<const char*>(src.data());
  char* h = static_cast<char*>(host);
  // Two chunks in flight: chunk i is copied into one slot while chunk i-1 drains from the other.
  struct Pending {
    size_t off, len;
    int slot;
  };
  Pending prev{0, 0, -1};
  auto drain = [&](const Pending& p) {
    ND_CUDA_CHECK(cudaEventSynchronize(c.staging_free[p.slot]));  // reports kernel faults too
    std::memcpy(h + p.off, c.staging[p.slot], p.len);
  };
  int slot = 0;
  for (size_t off = 0; off < n; off += DeviceContext::kStagingBytes) {
    const size_t len = std::min(DeviceContext::kStagingBytes, n - off);
    ND_CUDA_CHECK(cudaMemcpyAsync(c.staging[slot], s + off, len, cudaMemcpyDeviceToHost, c.copy));
    ND_CUDA_CHECK(cudaEventRecord(c.staging_free[slot], c.copy));
    if (prev.slot >= 0) drain(prev);
    prev = Pending{off, len, slot};
    slot ^= 1;
  }
  drain(prev);
}

void CudaBackend::synchronize(Device device) {
  DeviceContext& c = cuda::device_context(device.index);
  ND_CUDA_CHECK(cudaStreamSynchronize(c.compute));
  ND_CUDA_CHECK(cudaStreamSynchronize(c.copy));
}

}  // namespace nd
