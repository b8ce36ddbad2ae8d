// Bindings for the fused DiT elementwise ops (ops_fused.cpp).
#include "common.h"

namespace nd::napi {

ND_BINDINGS(bind_fused) {
  // normModulate(x, kind: 0 layer | 1 rms, weight|null, bias|null, shift|null, scale|null, eps)
  export_fn(env, exports, "normModulate", [](const Napi::CallbackInfo& info) {
    const int64_t kind = arg_int(info, 1, "kind");
    if (kind != 0 && kind != 1) throw std::invalid_argument("normModulate: kind must be 0 (layer) or 1 (rms)");
    return wrap(info.Env(), ops::norm_modulate(static_cast<NormKind>(kind), arg_tensor(info, 0, "x"),
                                               arg_opt_tensor(info, 2), arg_opt_tensor(info, 3),
                                               arg_opt_tensor(info, 4), arg_opt_tensor(info, 5),
                                               static_cast<float>(arg_number(info, 6, "eps"))));
  });
  export_fn(env, exports, "gatedAdd", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::gated_add(arg_tensor(info, 0, "x"), arg_tensor(info, 1, "y"),
                                           arg_tensor(info, 2, "gate")));
  });
}

}  // namespace nd::napi
