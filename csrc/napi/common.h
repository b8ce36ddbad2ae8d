// Shared N-API plumbing: the Tensor handle class, argument conversion, and the registry
// through which each csrc/napi/bind_*.cpp file adds its functions to the module.
#pragma once
#include <napi.h>

#include <atomic>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "../core/ops.h"
#include "../core/tensor.h"

namespace nd::napi {

// JS-visible handle over one nd::Tensor (a view; storage is shared and ref-counted).
class TensorHandle : public Napi::ObjectWrap<TensorHandle> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Object New(Napi::Env env, Tensor t);
  static std::atomic<int64_t> live;  // handles not yet disposed or collected

  explicit TensorHandle(const Napi::CallbackInfo& info);
  ~TensorHandle() override;
  const Tensor& tensor() const;
  void dispose();

 private:
  Napi::Value Shape(const Napi::CallbackInfo& info);
  Napi::Value Strides(const Napi::CallbackInfo& info);
  Napi::Value Dtype(const Napi::CallbackInfo& info);
  Napi::Value DeviceName(const Napi::CallbackInfo& info);
  Napi::Value IsContiguous(const Napi::CallbackInfo& info);
  Napi::Value Disposed(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  Tensor t_;
  bool alive_ = false;
};

struct AddonData {
  Napi::FunctionReference tensor_ctor;
  Napi::FunctionReference mapping_ctor;
};

// ---- argument helpers (throw std::invalid_argument with the argument's name) ----
const Tensor& arg_tensor(const Napi::CallbackInfo& info, size_t i, const char* name);
Tensor arg_opt_tensor(const Napi::CallbackInfo& info, size_t i);  // undefined/null -> undefined tensor
double arg_number(const Napi::CallbackInfo& info, size_t i, const char* name);
int64_t arg_int(const Napi::CallbackInfo& info, size_t i, const char* name);
bool arg_bool(const Napi::CallbackInfo& info, size_t i, const char* name);
std::string arg_string(const Napi::CallbackInfo& info, size_t i, const char* name);
std::vector<int64_t> arg_int_list(const Napi::CallbackInfo& info, size_t i, const char* name);
std::vector<Tensor> arg_tensor_list(const Napi::CallbackInfo& info, size_t i, const char* name);
DType arg_dtype(const Napi::CallbackInfo& info, size_t i);
Device arg_device(const Napi::CallbackInfo& info, size_t i);
Shape arg_shape(const Napi::CallbackInfo& info, size_t i, const char* name);

Napi::Value wrap(Napi::Env env, Tensor t);

// Runs fn, converting C++ exceptions into JS errors (RangeError for out_of_range).
Napi::Value guarded(const Napi::CallbackInfo& info, const std::function<Napi::Value()>& fn);

using Binder = void (*)(Napi::Env, Napi::Object);
std::vector<Binder>& binders();
struct RegisterBinder {
  explicit RegisterBinder(Binder b) { binders().push_back(b); }
};

// Adds a function `name` to the module whose body is `body(info) -> Napi::Value`, guarded.
void export_fn(Napi::Env env, Napi::Object exports, const char* name,
               std::function<Napi::Value(const Napi::CallbackInfo&)> body);

}  // namespace nd::napi

// Defines a binder function registered at load time: ND_BINDINGS(name) { export_fn(...); }
#define ND_BINDINGS(name)                                                         \
  static void name(Napi::Env env, Napi::Object exports);                          \
  static ::nd::napi::RegisterBinder name##_registration(name);                    \
  static void name(Napi::Env env, Napi::Object exports)
