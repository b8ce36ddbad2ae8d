// Bindings for the ops of ops_basic.cpp: layout, dtype, creation, elementwise, reductions.
#include "../cpu/vecmath.h"
#include "common.h"

namespace nd::napi {

ND_BINDINGS(bind_basic) {
  export_fn(env, exports, "toDevice", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::to_device(arg_tensor(info, 0, "x"), arg_device(info, 1)));
  });
  export_fn(env, exports, "contiguous", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::contiguous(arg_tensor(info, 0, "x")));
  });
  export_fn(env, exports, "cast", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::cast(arg_tensor(info, 0, "x"), arg_dtype(info, 1)));
  });
  export_fn(env, exports, "reshape", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::reshape(arg_tensor(info, 0, "x"), arg_int_list(info, 1, "shape")));
  });
  export_fn(env, exports, "copyInto", [](const Napi::CallbackInfo& info) {
    Tensor dst = arg_tensor(info, 0, "dst");
    ops::copy_into(dst, arg_tensor(info, 1, "src"));
    return info.Env().Undefined();
  });
  export_fn(env, exports, "full", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::full(arg_shape(info, 0, "shape"), arg_dtype(info, 1), arg_device(info, 2),
                                      arg_number(info, 3, "value")));
  });
  export_fn(env, exports, "arange", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::arange(arg_number(info, 0, "start"), arg_number(info, 1, "end"),
                                        arg_number(info, 2, "step"), arg_dtype(info, 3), arg_device(info, 4)));
  });
  export_fn(env, exports, "linspace", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::linspace(arg_number(info, 0, "start"), arg_number(info, 1, "end"),
                                          arg_int(info, 2, "steps"), arg_dtype(info, 3), arg_device(info, 4)));
  });
  export_fn(env, exports, "randn", [](const Napi::CallbackInfo& info) {
    int64_t seed = arg_int(info, 3, "seed"), offset = arg_int(info, 4, "offset");
    if (seed < 0 || offset < 0) throw std::out_of_range("seed and offset must be >= 0");
    return wrap(info.Env(), ops::randn(arg_shape(info, 0, "shape"), arg_dtype(info, 1), arg_device(info, 2),
                                       static_cast<uint64_t>(seed), static_cast<uint64_t>(offset)));
  });
  export_fn(env, exports, "unary", [](const Napi::CallbackInfo& info) {
    int64_t op = arg_int(info, 0, "op");
    if (op < 0 || op > static_cast<int64_t>(UnaryOp::Reciprocal)) throw std::invalid_argument("unknown unary op");
    return wrap(info.Env(), ops::unary(static_cast<UnaryOp>(op), arg_tensor(info, 1, "x")));
  });
  export_fn(env, exports, "binary", [](const Napi::CallbackInfo& info) {
    int64_t op = arg_int(info, 0, "op");
    if (op < 0 || op > static_cast<int64_t>(BinaryOp::Pow)) throw std::invalid_argument("unknown binary op");
    return wrap(info.Env(), ops::binary(static_cast<BinaryOp>(op), arg_tensor(info, 1, "a"), arg_tensor(info, 2, "b")));
  });
  export_fn(env, exports, "affine", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::affine(arg_tensor(info, 0, "x"), arg_number(info, 1, "mul"), arg_number(info, 2, "add")));
  });
  export_fn(env, exports, "clamp", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::clamp(arg_tensor(info, 0, "x"), arg_number(info, 1, "min"), arg_number(info, 2, "max")));
  });
  export_fn(env, exports, "powScalar", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::pow_scalar(arg_tensor(info, 0, "x"), arg_number(info, 1, "exponent")));
  });
  export_fn(env, exports, "reduce", [](const Napi::CallbackInfo& info) {
    int64_t op = arg_int(info, 0, "op");
    if (op < 0 || op > static_cast<int64_t>(ReduceOp::Min)) throw std::invalid_argument("unknown reduce op");
    return wrap(info.Env(), ops::reduce(static_cast<ReduceOp>(op), arg_tensor(info, 1, "x"), arg_int(info, 2, "dim"),
                                        arg_bool(info, 3, "keepdim")));
  });
  export_fn(env, exports, "softmax", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::softmax(arg_tensor(info, 0, "x"), arg_int(info, 1, "dim")));
  });
  export_fn(env, exports, "concat", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::concat(arg_tensor_list(info, 0, "tensors"), arg_int(info, 1, "dim")));
  });
  export_fn(env, exports, "pad", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::pad(arg_tensor(info, 0, "x"), arg_int_list(info, 1, "pads"), arg_number(info, 2, "value")));
  });
  export_fn(env, exports, "vecKernelName", [](const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), cpu::vec_kernel_name());
  });
}

}  // namespace nd::napi
