// Run-time discovery of the NVIDIA driver, the CUDA library built from csrc/cuda, cuBLASLt and
// NCCL. Everything goes through dlopen so the addon itself links no CUDA code.
#include "cuda_loader.h"

#include <dlfcn.h>
#include <glob.h>
#include <link.h>
#include <sys/stat.h>

#include <cstdlib>
#include <mutex>
#include <stdexcept>

#include "backend.h"

namespace nd {

namespace {

bool is_file(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

std::string dl_error() {
  const char* e = dlerror();
  return e ? std::string(e) : std::string("unknown dlopen error");
}

// Absolute path of a library opened through dlopen.
std::string handle_path(void* h, const std::string& fallback) {
  struct link_map* lm = nullptr;
  if (dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name && lm->l_name[0]) return lm->l_name;
  return fallback;
}

std::vector<std::string> glob_dirs(const std::string& pattern) {
  std::vector<std::string> out;
  glob_t g;
  if (::glob(pattern.c_str(), GLOB_ONLYDIR | GLOB_NOSORT, nullptr, &g) == 0) {
    for (size_t i = 0; i < g.gl_pathc; ++i) out.emplace_back(g.gl_pathv[i]);
  }
  ::globfree(&g);
  return out;
}

// Python site-packages directories of the usual environments (venv, conda, user, system).
std::vector<std::string> site_packages_dirs() {
  std::vector<std::string> roots;
  for (const char* var : {"VIRTUAL_ENV", "CONDA_PREFIX"}) {
    std::string v = env(var);
    if (!v.empty()) roots.push_back(v + "/lib/python3*/site-packages");
  }
  std::string home = env("HOME");
  if (!home.empty()) roots.push_back(home + "/.local/lib/python3*/site-packages");
  for (const char* p : {"/usr/local/lib/python3*/dist-packages", "/usr/local/lib/python3*/site-packages",
                        "/usr/lib/python3*/dist-packages", "/usr/lib/python3/dist-packages",
                        "/opt/conda/lib/python3*/site-packages"})
    roots.emplace_back(p);
  std::vector<std::string> out;
  for (const auto& r : roots)
    for (auto& d : glob_dirs(r)) out.push_back(d);
  return out;
}

std::vector<std::string> cuda_toolkit_dirs() {
  std::vector<std::string> out;
  for (const char* var : {"CUDA_HOME", "CUDA_PATH"}) {
    std::string v = env(var);
    if (!v.empty()) {
      out.push_back(v + "/lib64");
      out.push_back(v + "/lib");
    }
  }
  std::string conda = env("CONDA_PREFIX");
  if (!conda.empty()) out.push_back(conda + "/lib");
  out.emplace_back("/usr/local/cuda/lib64");
  out.emplace_back("/usr/local/cuda/targets/x86_64-linux/lib");
  out.emplace_back("/usr/local/cuda/targets/sbsa-linux/lib");
  for (const char* p : {"/usr/local/cuda-13*/lib64", "/usr/local/cuda-12*/lib64"})
    for (auto& d : glob_dirs(p)) out.push_back(d);
  out.emplace_back("/usr/lib/x86_64-linux-gnu");
  out.emplace_back("/usr/lib/aarch64-linux-gnu");
  out.emplace_back("/usr/lib64");
  return out;
}

// Opens the first loadable candidate and returns its path ("" when none loads). The handle is
// kept: the CUDA backend opens the same path again and gets the same instance.
std::string find_library(const char* env_var, const std::vector<std::string>& sonames,
                         const std::vector<std::string>& wheel_subdirs) {
  auto try_open = [](const std::string& p) -> std::string {
    void* h = dlopen(p.c_str(), RTLD_LAZY | RTLD_LOCAL);
    return h ? handle_path(h, p) : std::string();
  };
  std::string over = env(env_var);
  if (!over.empty()) return try_open(over);  // an explicit choice is never second-guessed
  for (const auto& so : sonames) {
    std::string p = try_open(so);
    if (!p.empty()) return p;
  }
  std::vector<std::string> dirs = cuda_toolkit_dirs();
  for (const auto& sp : site_packages_dirs())
    for (const auto& sub : wheel_subdirs) dirs.push_back(sp + "/" + sub);
  for (const auto& d : dirs)
    for (const auto& so : sonames) {
      std::string p = d + "/" + so;
      if (!is_file(p)) continue;
      std::string opened = try_open(p);
      if (!opened.empty()) return opened;
    }
  return "";
}

// ---- the driver API, declared here (no cuda.h in the CPU build) ----
using CUresult = int;
using CUdevice = int;
constexpr int kAttrCcMajor = 75;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
constexpr int kAttrCcMinor = 76;  // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR

struct DriverApi {
  CUresult (*cuInit)(unsigned) = nullptr;
  CUresult (*cuDriverGetVersion)(int*) = nullptr;
  CUresult (*cuDeviceGetCount)(int*) = nullptr;
  CUresult (*cuDeviceGet)(CUdevice*, int) = nullptr;
  CUresult (*cuDeviceGetName)(char*, int, CUdevice) = nullptr;
  CUresult (*cuDeviceTotalMem)(size_t*, CUdevice) = nullptr;
  CUresult (*cuDeviceGetAttribute)(int*, int, CUdevice) = nullptr;
  CUresult (*cuGetErrorString)(CUresult, const char**) = nullptr;

  std::string error(CUresult r) const {
    const char* s = nullptr;
    if (cuGetErrorString && cuGetErrorString(r, &s) == 0 && s) return s;
    return "CUDA driver error " + std::to_string(r);
  }
};

template <class F>
bool bind(void* h, const char* name, F& fn) {
  fn = reinterpret_cast<F>(dlsym(h, name));
  return fn != nullptr;
}

// Fills driver_version and devices; returns "" or the reason no device is usable.
std::string probe_driver(CudaInfo& info) {
  void* h = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (!h) return "no NVIDIA driver (libcuda.so.1 could not be loaded: " + dl_error() + ")";
  DriverApi d;
  if (!bind(h, "cuInit", d.cuInit) || !bind(h, "cuDriverGetVersion", d.cuDriverGetVersion) ||
      !bind(h, "cuDeviceGetCount", d.cuDeviceGetCount) || !bind(h, "cuDeviceGet", d.cuDeviceGet) ||
      !bind(h, "cuDeviceGetName", d.cuDeviceGetName) || !bind(h, "cuDeviceTotalMem_v2", d.cuDeviceTotalMem) ||
      !bind(h, "cuDeviceGetAttribute", d.cuDeviceGetAttribute))
    return "libcuda.so.1 lacks the driver API entry points (driver too old or not an NVIDIA driver)";
  bind(h, "cuGetErrorString", d.cuGetErrorString);
  d.cuDriverGetVersion(&info.driver_version);
  CUresult r = d.cuInit(0);
  if (r != 0) return "no CUDA device (driver initialisation failed: " + d.error(r) + ")";
  int count = 0;
  r = d.cuDeviceGetCount(&count);
  if (r != 0) return "no CUDA device (" + d.error(r) + ")";
  if (count == 0) return "no CUDA device (the driver reports 0 devices)";
  for (int i = 0; i < count; ++i) {
    CUdevice dev = 0;
    if (d.cuDeviceGet(&dev, i) != 0) continue;
    CudaDeviceInfo di;
    char name[256] = {0};
    d.cuDeviceGetName(name, sizeof(name) - 1, dev);
    di.name = name;
    size_t mem = 0;
    d.cuDeviceTotalMem(&mem, dev);
    di.memory = static_cast<int64_t>(mem);
    int major = 0, minor = 0;
    d.cuDeviceGetAttribute(&major, kAttrCcMajor, dev);
    d.cuDeviceGetAttribute(&minor, kAttrCcMinor, dev);
    di.sm = major * 10 + minor;
    info.devices.push_back(di);
  }
  return "";
}

// Directory of the module holding this code (the .node addon, or a harness executable).
std::string module_dir() {
  Dl_info di;
  if (dladdr(reinterpret_cast<void*>(&cuda_info), &di) == 0 || !di.dli_fname) return "";
  std::string p = di.dli_fname;
  size_t slash = p.rfind('/');
  return slash == std::string::npos ? std::string(".") : p.substr(0, slash);
}

// The CUDA library resolves the engine's symbols (Tensor, Backend, memory_stats) from the module
// that loaded it; Node opens addons with RTLD_LOCAL, so the addon is promoted to global scope.
void export_engine_symbols() {
  Dl_info di;
  if (dladdr(reinterpret_cast<void*>(&cuda_info), &di) != 0 && di.dli_fname)
    dlopen(di.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_GLOBAL);
}

using CreateFn = Backend* (*)(char*, size_t);
using BuildInfoFn = const char* (*)();

void* g_library = nullptr;

void open_library(CudaLibraryInfo& lib) {
  std::string dir = module_dir();
  lib.path = (dir.empty() ? std::string(".") : dir) + "/libnd_cuda.so";
  lib.present = is_file(lib.path);
  if (!lib.present) {
    lib.error = "libnd_cuda.so is not next to the addon in " + dir +
                " (the package was built without nvcc; reinstall with the CUDA toolkit on PATH)";
    return;
  }
  export_engine_symbols();
  g_library = dlopen(lib.path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!g_library) {
    lib.error = "loading " + lib.path + " failed: " + dl_error();
    return;
  }
  auto build = reinterpret_cast<BuildInfoFn>(dlsym(g_library, "nd_cuda_build_info"));
  if (!build || !dlsym(g_library, "nd_cuda_create_backend")) {
    lib.error = lib.path + " does not export the nd_cuda entry points";
    g_library = nullptr;
    return;
  }
  lib.loaded = true;
  lib.build = build();
}

CudaInfo probe() {
  CudaInfo info;
  info.cublaslt = find_cublaslt();
  info.nccl = find_nccl();
  open_library(info.library);
  info.reason = probe_driver(info);
  if (!info.reason.empty()) return info;
  if (!info.library.loaded) {
    info.reason = info.library.error;
    return info;
  }
  auto create = reinterpret_cast<CreateFn>(dlsym(g_library, "nd_cuda_create_backend"));
  char err[1024] = {0};
  Backend* be = create(err, sizeof(err));
  if (!be) {
    info.reason = err[0] ? std::string(err) : std::string("the CUDA library could not create its backend");
    return info;
  }
  set_cuda_backend(be);
  info.available = true;
  return info;
}

}  // namespace

std::string find_cublaslt() {
  return find_library("ND_CUBLASLT_PATH", {"libcublasLt.so.13", "libcublasLt.so.12"},
                      {"nvidia/cu13/lib", "nvidia/cublas/lib"});
}

void* cuda_compute_stream(int device) {
  if (!cuda_info().available) return nullptr;
  using StreamFn = void* (*)(int);
  static StreamFn fn = reinterpret_cast<StreamFn>(dlsym(g_library, "nd_cuda_compute_stream"));
  return fn ? fn(device) : nullptr;
}

std::string find_nccl() {
  return find_library("ND_NCCL_PATH", {"libnccl.so.2"}, {"nvidia/nccl/lib", "nvidia/cu13/lib"});
}

CudaInfo cuda_info() {
  static std::once_flag once;
  static CudaInfo info;
  std::call_once(once, [] { info = probe(); });
  return info;
}

void require_cuda_backend() {
  if (cuda_backend()) return;
  CudaInfo info = cuda_info();
  if (!info.available) throw std::runtime_error("CUDA is not available: " + info.reason);
}

}  // namespace nd
