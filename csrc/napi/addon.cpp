// Module entry: the Tensor handle class, argument helpers, and module initialisation that
// runs every registered binder (csrc/napi/bind_*.cpp).
#include <cmath>

#include "common.h"

namespace nd::napi {

std::atomic<int64_t> TensorHandle::live{0};

std::vector<Binder>& binders() {
  static std::vector<Binder> list;
  return list;
}

Napi::Function TensorHandle::Define(Napi::Env env) {
  return DefineClass(env, "NativeTensor",
                     {
                         InstanceAccessor<&TensorHandle::Shape>("shape"),
                         InstanceAccessor<&TensorHandle::Strides>("strides"),
                         InstanceAccessor<&TensorHandle::Dtype>("dtype"),
                         InstanceAccessor<&TensorHandle::DeviceName>("device"),
                         InstanceAccessor<&TensorHandle::IsContiguous>("isContiguous"),
                         InstanceAccessor<&TensorHandle::Disposed>("disposed"),
                         InstanceMethod<&TensorHandle::Dispose>("dispose"),
                     });
}

Napi::Object TensorHandle::New(Napi::Env env, Tensor t) {
  auto* data = env.GetInstanceData<AddonData>();
  Napi::Object obj = data->tensor_ctor.New({});
  TensorHandle* h = Napi::ObjectWrap<TensorHandle>::Unwrap(obj);
  h->t_ = std::move(t);
  h->alive_ = true;
  live++;
  return obj;
}

TensorHandle::TensorHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TensorHandle>(info) {}

TensorHandle::~TensorHandle() { dispose(); }

void TensorHandle::dispose() {
  if (!alive_) return;
  alive_ = false;
  t_ = Tensor();
  live--;
}

const Tensor& TensorHandle::tensor() const {
  if (!alive_) throw std::invalid_argument("tensor has been disposed");
  return t_;
}

static Napi::Array int_array(Napi::Env env, const std::vector<int64_t>& v) {
  Napi::Array a = Napi::Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); ++i) a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(v[i])));
  return a;
}

Napi::Value TensorHandle::Shape(const Napi::CallbackInfo& info) {
  return guarded(info, [&] { return Napi::Value(int_array(info.Env(), tensor().shape)); });
}
Napi::Value TensorHandle::Strides(const Napi::CallbackInfo& info) {
  return guarded(info, [&] { return Napi::Value(int_array(info.Env(), tensor().strides)); });
}
Napi::Value TensorHandle::Dtype(const Napi::CallbackInfo& info) {
  return guarded(info, [&] { return Napi::Value(Napi::Number::New(info.Env(), static_cast<int>(tensor().dtype))); });
}
Napi::Value TensorHandle::DeviceName(const Napi::CallbackInfo& info) {
  return guarded(info, [&] { return Napi::Value(Napi::String::New(info.Env(), tensor().device().str())); });
}
Napi::Value TensorHandle::IsContiguous(const Napi::CallbackInfo& info) {
  return guarded(info, [&] { return Napi::Value(Napi::Boolean::New(info.Env(), tensor().is_contiguous())); });
}
Napi::Value TensorHandle::Disposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !alive_); }
Napi::Value TensorHandle::Dispose(const Napi::CallbackInfo& info) {
  dispose();
  return info.Env().Undefined();
}

// ---- argument helpers ----
static std::string argname(size_t i, const char* name) {
  return std::string("argument ") + std::to_string(i) + " (" + name + ")";
}

const Tensor& arg_tensor(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsObject()) throw std::invalid_argument(argname(i, name) + " must be a Tensor");
  Napi::Object o = info[i].As<Napi::Object>();
  auto* data = info.Env().GetInstanceData<AddonData>();
  if (!o.InstanceOf(data->tensor_ctor.Value())) throw std::invalid_argument(argname(i, name) + " must be a Tensor");
  return Napi::ObjectWrap<TensorHandle>::Unwrap(o)->tensor();
}

Tensor arg_opt_tensor(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || info[i].IsUndefined() || info[i].IsNull()) return Tensor();
  return arg_tensor(info, i, "optional tensor");
}

double arg_number(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber()) throw std::invalid_argument(argname(i, name) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

int64_t arg_int(const Napi::CallbackInfo& info, size_t i, const char* name) {
  double v = arg_number(info, i, name);
  if (!std::isfinite(v) || v != std::floor(v) || std::fabs(v) > 9.007199254740992e15)
    throw std::invalid_argument(argname(i, name) + " must be an integer");
  return static_cast<int64_t>(v);
}

bool arg_bool(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsBoolean()) throw std::invalid_argument(argname(i, name) + " must be a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

std::string arg_string(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsString()) throw std::invalid_argument(argname(i, name) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

std::vector<int64_t> arg_int_list(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsArray()) throw std::invalid_argument(argname(i, name) + " must be an array of integers");
  Napi::Array a = info[i].As<Napi::Array>();
  if (a.Length() > 64) throw std::invalid_argument(argname(i, name) + " is too long");
  std::vector<int64_t> out(a.Length());
  for (uint32_t k = 0; k < a.Length(); ++k) {
    Napi::Value v = a.Get(k);
    if (!v.IsNumber()) throw std::invalid_argument(argname(i, name) + " must be an array of integers");
    double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9.007199254740992e15)
      throw std::invalid_argument(argname(i, name) + " must be an array of integers");
    out[k] = static_cast<int64_t>(d);
  }
  return out;
}

std::vector<Tensor> arg_tensor_list(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsArray()) throw std::invalid_argument(argname(i, name) + " must be an array of Tensors");
  Napi::Array a = info[i].As<Napi::Array>();
  auto* data = info.Env().GetInstanceData<AddonData>();
  std::vector<Tensor> out;
  for (uint32_t k = 0; k < a.Length(); ++k) {
    Napi::Value v = a.Get(k);
    if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(data->tensor_ctor.Value()))
      throw std::invalid_argument(argname(i, name) + " must be an array of Tensors");
    out.push_back(Napi::ObjectWrap<TensorHandle>::Unwrap(v.As<Napi::Object>())->tensor());
  }
  return out;
}

DType arg_dtype(const Napi::CallbackInfo& info, size_t i) {
  return dtype_from_int(static_cast<int>(arg_int(info, i, "dtype")));
}

Device arg_device(const Napi::CallbackInfo& info, size_t i) {
  std::string s = arg_string(info, i, "device");
  if (s == "cpu") return Device{DeviceType::CPU, 0};
  if (s == "cuda") return Device{DeviceType::CUDA, 0};
  if (s.rfind("cuda:", 0) == 0) {
    std::string idx = s.substr(5);
    if (idx.empty() || idx.size() > 3 || idx.find_first_not_of("0123456789") != std::string::npos)
      throw std::invalid_argument("invalid device '" + s + "'");
    return Device{DeviceType::CUDA, std::stoi(idx)};
  }
  throw std::invalid_argument("invalid device '" + s + "' (expected cpu, cuda or cuda:N)");
}

Shape arg_shape(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Shape s = arg_int_list(info, i, name);
  double total = 1;
  for (auto d : s) {
    if (d < 0) throw std::invalid_argument(argname(i, name) + " has a negative dimension");
    total *= static_cast<double>(d);
  }
  if (total > 1e13) throw std::invalid_argument(argname(i, name) + " " + shape_str(s) + " is too large");
  return s;
}

Napi::Value wrap(Napi::Env env, Tensor t) { return TensorHandle::New(env, std::move(t)); }

Napi::Value guarded(const Napi::CallbackInfo& info, const std::function<Napi::Value()>& fn) {
  Napi::Env env = info.Env();
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::out_of_range& e) {
    throw Napi::RangeError::New(env, e.what());
  } catch (const std::invalid_argument& e) {
    throw Napi::TypeError::New(env, e.what());
  } catch (const std::bad_alloc&) {
    throw Napi::Error::New(env, "out of memory");
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

void export_fn(Napi::Env env, Napi::Object exports, const char* name,
               std::function<Napi::Value(const Napi::CallbackInfo&)> body) {
  exports.Set(name, Napi::Function::New(
                        env, [body](const Napi::CallbackInfo& info) { return guarded(info, [&] { return body(info); }); },
                        name));
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  Napi::Function ctor = TensorHandle::Define(env);
  data->tensor_ctor = Napi::Persistent(ctor);
  exports.Set("NativeTensor", ctor);
  for (Binder b : binders()) b(env, exports);
  return exports;
}

}  // namespace nd::napi

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return nd::napi::Init(env, exports); }
NODE_API_MODULE(node_diffusion, InitModule)
