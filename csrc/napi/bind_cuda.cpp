// Bindings for CUDA discovery (cuda_loader.cpp) and device synchronisation.
#include "../core/cuda_loader.h"
#include "common.h"

namespace nd::napi {

static Napi::Value path_or_null(Napi::Env env, const std::string& p) {
  return p.empty() ? env.Null() : Napi::Value(Napi::String::New(env, p));
}

ND_BINDINGS(bind_cuda) {
  // cudaInfo(): {available, reason, driverVersion, devices: [{name, memory, sm}],
  //              library: {path, present, loaded, error, build}, cublasLt, nccl}
  export_fn(env, exports, "cudaInfo", [](const Napi::CallbackInfo& info) {
    Napi::Env e = info.Env();
    CudaInfo ci = cuda_info();
    Napi::Object o = Napi::Object::New(e);
    o.Set("available", ci.available);
    o.Set("reason", ci.reason);
    o.Set("driverVersion", ci.driver_version);
    Napi::Array devs = Napi::Array::New(e, ci.devices.size());
    for (size_t i = 0; i < ci.devices.size(); ++i) {
      Napi::Object d = Napi::Object::New(e);
      d.Set("name", ci.devices[i].name);
      d.Set("memory", static_cast<double>(ci.devices[i].memory));
      d.Set("sm", ci.devices[i].sm);
      devs.Set(static_cast<uint32_t>(i), d);
    }
    o.Set("devices", devs);
    Napi::Object lib = Napi::Object::New(e);
    lib.Set("path", ci.library.path);
    lib.Set("present", ci.library.present);
    lib.Set("loaded", ci.library.loaded);
    lib.Set("error", ci.library.error);
    lib.Set("build", ci.library.build);
    o.Set("library", lib);
    o.Set("cublasLt", path_or_null(e, ci.cublaslt));
    o.Set("nccl", path_or_null(e, ci.nccl));
    return Napi::Value(o);
  });

  // synchronize(device): waits until every queued kernel and copy on the device has finished.
  export_fn(env, exports, "synchronize", [](const Napi::CallbackInfo& info) {
    Device d = arg_device(info, 0);
    backend_for(d).synchronize(d);
    return info.Env().Undefined();
  });
}

}  // namespace nd::napi
