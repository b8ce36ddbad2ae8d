// Tensor creation from JS data, data back to JS, memory-mapped files, views, memory stats.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "../core/threadpool.h"
#include "common.h"

namespace nd::napi {

// Maps a whole file copy-on-write (writes never reach the file) as a uint8 tensor.
static Tensor map_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot open " + path + ": " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw std::runtime_error("cannot stat " + path + ": " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw std::runtime_error(path + " is not a regular file");
  }
  size_t size = static_cast<size_t>(st.st_size);
  void* p = nullptr;
  if (size > 0) {
    p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      throw std::runtime_error("cannot map " + path + ": " + std::strerror(e));
    }
  }
  ::close(fd);
  auto s = std::make_shared<Storage>();
  s->data = p;
  s->nbytes = size;
  s->kind = Storage::Kind::Mapped;
  s->release = [](Storage& st) {
    if (st.data) ::munmap(st.data, st.nbytes);
  };
  memory_stats().storages++;
  memory_stats().mapped_bytes += static_cast<int64_t>(size);
  return Tensor::from_storage(s, 0, DType::U8, {static_cast<int64_t>(size)});
}

ND_BINDINGS(bind_tensor) {
  export_fn(env, exports, "empty", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), Tensor::empty(arg_shape(info, 0, "shape"), arg_dtype(info, 1), arg_device(info, 2)));
  });

  // fromBytes(view: ArrayBufferView, shape, dtype, device): copies the bytes into a new tensor.
  export_fn(env, exports, "fromBytes", [](const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || (!info[0].IsTypedArray() && !info[0].IsDataView()))
      throw std::invalid_argument("argument 0 (data) must be a typed array or Buffer");
    Napi::Value v = info[0];
    const uint8_t* bytes;
    size_t len;
    if (v.IsTypedArray()) {
      Napi::TypedArray ta = v.As<Napi::TypedArray>();
      bytes = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
      len = ta.ByteLength();
    } else {
      Napi::DataView dv = v.As<Napi::DataView>();
      bytes = static_cast<const uint8_t*>(dv.ArrayBuffer().Data()) + dv.ByteOffset();
      len = dv.ByteLength();
    }
    Shape shape = arg_shape(info, 1, "shape");
    DType dt = arg_dtype(info, 2);
    Device dev = arg_device(info, 3);
    size_t need = static_cast<size_t>(shape_numel(shape)) * dtype_size(dt);
    if (len != need)
      throw std::invalid_argument("data has " + std::to_string(len) + " bytes but " + dtype_name(dt) +
                                  shape_str(shape) + " needs " + std::to_string(need));
    Tensor host = Tensor::empty(shape, dt, Device{});
    if (need) std::memcpy(host.data(), bytes, need);
    return wrap(info.Env(), ops::to_device(host, dev));
  });

  // toBytes(t): an ArrayBuffer with the tensor's elements in row-major order.
  export_fn(env, exports, "toBytes", [](const Napi::CallbackInfo& info) {
    Tensor t = ops::contiguous(arg_tensor(info, 0, "tensor"));
    Tensor host = ops::to_device(t, Device{});
    Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(info.Env(), host.nbytes());
    if (host.nbytes()) std::memcpy(buf.Data(), host.data(), host.nbytes());
    return Napi::Value(buf);
  });

  exports.Set("mapFile", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
    return guarded(info, [&] { return wrap(info.Env(), map_file(arg_string(info, 0, "path"))); });
  }));

  // viewBytes(bytes: uint8 tensor, byteOffset, dtype, shape): reinterprets a byte range in place
  // (copied when the offset is not aligned to the element size).
  export_fn(env, exports, "viewBytes", [](const Napi::CallbackInfo& info) {
    const Tensor& b = arg_tensor(info, 0, "bytes");
    if (b.dtype != DType::U8 || b.dim() != 1 || !b.is_contiguous())
      throw std::invalid_argument("viewBytes needs a contiguous 1-D uint8 tensor");
    int64_t off = arg_int(info, 1, "byteOffset");
    DType dt = arg_dtype(info, 2);
    Shape shape = arg_shape(info, 3, "shape");
    int64_t need = shape_numel(shape) * static_cast<int64_t>(dtype_size(dt));
    if (off < 0 || off + need > b.numel())
      throw std::out_of_range("byte range [" + std::to_string(off) + ", " + std::to_string(off + need) +
                              ") lies outside a buffer of " + std::to_string(b.numel()) + " bytes");
    int64_t abs_off = b.offset + off;
    if (abs_off % static_cast<int64_t>(dtype_size(dt)) == 0)
      return wrap(info.Env(), Tensor::from_storage(b.storage, abs_off, dt, shape));
    Tensor out = Tensor::empty(shape, dt, b.device());
    if (need) std::memcpy(out.data(), static_cast<const char*>(b.data()) + off, static_cast<size_t>(need));
    return wrap(info.Env(), out);
  });

  export_fn(env, exports, "reshapeView", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), arg_tensor(info, 0, "x").reshape_view(arg_int_list(info, 1, "shape")));
  });
  export_fn(env, exports, "permute", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), arg_tensor(info, 0, "x").permute(arg_int_list(info, 1, "order")));
  });
  export_fn(env, exports, "slice", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), arg_tensor(info, 0, "x").slice(arg_int(info, 1, "dim"), arg_int(info, 2, "start"),
                                                           arg_int(info, 3, "end"), arg_int(info, 4, "step")));
  });
  export_fn(env, exports, "expand", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), arg_tensor(info, 0, "x").expand(arg_int_list(info, 1, "shape")));
  });
  export_fn(env, exports, "unsqueeze", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), arg_tensor(info, 0, "x").unsqueeze(arg_int(info, 1, "dim")));
  });
  export_fn(env, exports, "squeeze", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), arg_tensor(info, 0, "x").squeeze(arg_int(info, 1, "dim")));
  });
  export_fn(env, exports, "storageInfo", [](const Napi::CallbackInfo& info) {
    const Tensor& t = arg_tensor(info, 0, "x");
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("offset", static_cast<double>(t.offset));
    o.Set("nbytes", static_cast<double>(t.storage->nbytes));
    o.Set("kind", t.storage->kind == Storage::Kind::Mapped ? "mapped" : t.storage->kind == Storage::Kind::Owned ? "owned" : "borrowed");
    o.Set("useCount", static_cast<double>(t.storage.use_count()));
    return Napi::Value(o);
  });

  export_fn(env, exports, "memoryStats", [](const Napi::CallbackInfo& info) {
    auto& s = memory_stats();
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("liveTensors", static_cast<double>(TensorHandle::live.load()));
    o.Set("storages", static_cast<double>(s.storages.load()));
    o.Set("hostBytes", static_cast<double>(s.host_bytes.load()));
    o.Set("hostPeakBytes", static_cast<double>(s.host_peak_bytes.load()));
    o.Set("mappedBytes", static_cast<double>(s.mapped_bytes.load()));
    o.Set("deviceBytes", static_cast<double>(s.device_bytes.load()));
    o.Set("devicePeakBytes", static_cast<double>(s.device_peak_bytes.load()));
    return Napi::Value(o);
  });
  export_fn(env, exports, "resetPeakMemory", [](const Napi::CallbackInfo& info) {
    auto& s = memory_stats();
    s.host_peak_bytes = s.host_bytes.load();
    s.device_peak_bytes = s.device_bytes.load();
    return info.Env().Undefined();
  });
  export_fn(env, exports, "numThreads", [](const Napi::CallbackInfo& info) {
    return Napi::Value(Napi::Number::New(info.Env(), num_threads()));
  });
  export_fn(env, exports, "setNumThreads", [](const Napi::CallbackInfo& info) {
    int64_t n = arg_int(info, 0, "n");
    if (n < 1 || n > 1024) throw std::out_of_range("thread count must be in 1..1024");
    set_num_threads(static_cast<int>(n));
    return info.Env().Undefined();
  });
}

}  // namespace nd::napi
