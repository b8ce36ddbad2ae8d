// The library's C entry points, looked up with dlsym by csrc/core/cuda_loader.cpp.
#include <cuda_runtime.h>

#include <cstdio>
#include <exception>
#include <string>

#include "cuda_backend.h"
#include "runtime.h"

#define ND_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

std::string version_str(int v) { return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10); }

// "" when some device can run the kernels, else the reason.
std::string check_devices() {
  int n = 0;
  cudaError_t err = cudaGetDeviceCount(&n);
  if (err == cudaErrorInsufficientDriver) {
    int driver = 0;
    cudaDriverGetVersion(&driver);
    return "the NVIDIA driver supports CUDA " + version_str(driver) + " but libnd_cuda.so was built with CUDA " +
           version_str(CUDART_VERSION) + "; update the driver, or rebuild the package with an older CUDA toolkit";
  }
  if (err == cudaErrorNoDevice) return "no CUDA device";
  if (err != cudaSuccess) return std::string("cudaGetDeviceCount failed: ") + cudaGetErrorString(err);
  if (n == 0) return "no CUDA device";
  std::string seen;
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    if (prop.major >= 8) return "";
    seen += std::string(seen.empty() ? "" : ", ") + prop.name + " (sm_" + std::to_string(prop.major * 10 + prop.minor) + ")";
  }
  return "no supported CUDA device: found " + seen + "; the kernels need compute capability 8.0 or newer";
}

}  // namespace

// Creates the backend, or returns null with the reason written to err.
ND_EXPORT nd::Backend* nd_cuda_create_backend(char* err, size_t errlen) {
  try {
    std::string why = check_devices();
    if (!why.empty()) {
      std::snprintf(err, errlen, "%s", why.c_str());
      return nullptr;
    }
    static nd::CudaBackend* backend = new nd::CudaBackend();  // lives until exit, never destroyed
    return backend;
  } catch (const std::exception& e) {
    std::snprintf(err, errlen, "%s", e.what());
    return nullptr;
  }
}

// The compute stream of device `index` (a cudaStream_t), with the device made current on the
// calling thread; the addon's NCCL communicator (csrc/parallel) enqueues its collectives there.
// Null when the device cannot be used.
ND_EXPORT void* nd_cuda_compute_stream(int index) {
  try {
    return nd::cuda::device_context(index).compute;
  } catch (const std::exception&) {
    return nullptr;
  }
}

// What the library was compiled for, e.g. "CUDA 13.0, sm_80,89,90a".
ND_EXPORT const char* nd_cuda_build_info() {
  static const std::string info = "CUDA " + version_str(CUDART_VERSION) + ", sm_" ND_CUDA_ARCH_LIST;
  return info.c_str();
}
