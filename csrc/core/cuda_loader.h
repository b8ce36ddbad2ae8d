// Finds and loads the optional CUDA library (libnd_cuda.so, built from csrc/cuda) at run time.
// No CUDA headers: the driver (libcuda.so.1) is probed through dlopen, so the CPU build runs on
// machines without any NVIDIA software and reports why CUDA is unavailable.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace nd {

struct CudaDeviceInfo {
  std::string name;
  int64_t memory = 0;  // bytes
  int sm = 0;          // compute capability * 10 + minor (80, 89, 90, ...)
};

struct CudaLibraryInfo {
  std::string path;   // where libnd_cuda.so is expected (next to the loaded addon)
  bool present = false;
  bool loaded = false;  // dlopen with every symbol resolved succeeded
  std::string error;    // why it did not load
  std::string build;    // what it was compiled for (CUDA version, architectures)
};

struct CudaInfo {
  bool available = false;
  std::string reason;      // why not available ("" when available)
  int driver_version = 0;  // e.g. 13000 for CUDA 13.0; 0 without a driver
  std::vector<CudaDeviceInfo> devices;
  CudaLibraryInfo library;
  std::string cublaslt;  // path of the cuBLASLt library found, "" when none
  std::string nccl;      // path of the NCCL library found, "" when none
};

// Probes the driver and devices, then loads the CUDA backend if possible (once per process;
// later calls return the cached result). Never throws.
CudaInfo cuda_info();

// Loads and registers the CUDA backend (nd::set_cuda_backend); throws std::runtime_error
// naming the reason when CUDA is not usable.
void require_cuda_backend();

// The compute stream (a cudaStream_t) of CUDA device `device`, made the current device of the
// calling thread; code outside the CUDA library (NCCL) enqueues its work there so that it is
// ordered with the kernels. Null when CUDA is not usable or the device cannot be opened.
void* cuda_compute_stream(int device);

// Run-time libraries the CUDA backend dlopens, searched in: the env override
// (ND_CUBLASLT_PATH / ND_NCCL_PATH), the dynamic loader's path, the CUDA toolkit directories
// and the lib directories of NVIDIA's Python wheels. Return "" when not found.
std::string find_cublaslt();
std::string find_nccl();

}  // namespace nd
