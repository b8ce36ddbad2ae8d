#include "runtime.h"

#include <atomic>
#include <cstring>
#include <stdexcept>

namespace nd::cuda {

void check(cudaError_t err, const char* what, const char* file, int line) {
  if (err == cudaSuccess) return;
  const char* base = std::strrchr(file, '/');
  throw std::runtime_error(std::string("CUDA error in ") + what + " (" + (base ? base + 1 : file) + ":" +
                           std::to_string(line) + "): " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

namespace {

constexpr int kMaxDevices = 64;
std::atomic<DeviceContext*> g_contexts[kMaxDevices];
std::mutex g_create_mu;
thread_local int t_current_device = -1;

DeviceContext* create_context(int index) {
  ND_CUDA_CHECK(cudaSetDevice(index));
  cudaDeviceProp prop;
  ND_CUDA_CHECK(cudaGetDeviceProperties(&prop, index));
  const int sm = prop.major * 10 + prop.minor;
  if (sm < 80)
    throw std::runtime_error("cuda:" + std::to_string(index) + " (" + prop.name + ", sm_" + std::to_string(sm) +
                             ") is not supported: the CUDA kernels need compute capability 8.0 or newer");
  auto* c = new DeviceContext();
  c->index = index;
  c->sm = sm;
  c->sm_count = prop.multiProcessorCount;
  int optin = 0;
  ND_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, index));
  c->smem_optin = static_cast<size_t>(optin);
  ND_CUDA_CHECK(cudaStreamCreateWithFlags(&c->compute, cudaStreamNonBlocking));
  ND_CUDA_CHECK(cudaStreamCreateWithFlags(&c->copy, cudaStreamNonBlocking));
  ND_CUDA_CHECK(cudaEventCreateWithFlags(&c->compute_done, cudaEventDisableTiming));
  ND_CUDA_CHECK(cudaEventCreateWithFlags(&c->copy_done, cudaEventDisableTiming));
  for (auto& ev : c->staging_free) ND_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  return c;
}

}  // namespace

int device_count() {
  static int count = [] {
    int n = 0;
    ND_CUDA_CHECK(cudaGetDeviceCount(&n));
    return n < kMaxDevices ? n : kMaxDevices;
  }();
  return count;
}

DeviceContext& device_context(int index) {
  if (index < 0 || index >= device_count())
    throw std::invalid_argument("device cuda:" + std::to_string(index) + " does not exist (" +
                                std::to_string(device_count()) + " CUDA device(s))");
  DeviceContext* c = g_contexts[index].load(std::memory_order_acquire);
  if (!c) {
    std::lock_guard<std::mutex> lock(g_create_mu);
    c = g_contexts[index].load(std::memory_order_acquire);
    if (!c) {
      c = create_context(index);
      g_contexts[index].store(c, std::memory_order_release);
    }
    t_current_device = index;  // create_context made it current
  }
  if (t_current_device != index) {
    ND_CUDA_CHECK(cudaSetDevice(index));
    t_current_device = index;
  }
  return *c;
}

DeviceContext* existing_context(int index) {
  if (index < 0 || index >= kMaxDevices) return nullptr;
  return g_contexts[index].load(std::memory_order_acquire);
}

void require_float_dtype(const Tensor& t, const char* op) {
  if (t.dtype != DType::F32 && t.dtype != DType::F16 && t.dtype != DType::BF16)
    throw std::invalid_argument(std::string(op) + " on CUDA needs float32/float16/bfloat16 tensors, got " +
                                t.describe());
}

}  // namespace nd::cuda
