// Binding of normalize_channels (ops_channel_norm.cpp).
#include "common.h"

namespace nd::napi {

ND_BINDINGS(bind_channel_norm) {
  export_fn(env, exports, "normalizeChannels", [](const Napi::CallbackInfo& info) {
    const int64_t act = arg_int(info, 5, "activation");
    if (act != static_cast<int64_t>(Activation::None) && act != static_cast<int64_t>(Activation::Silu))
      throw std::invalid_argument("normalizeChannels: activation must be none or silu");
    return wrap(info.Env(), ops::normalize_channels(arg_tensor(info, 0, "x"), arg_opt_tensor(info, 1),
                                                    arg_opt_tensor(info, 2), static_cast<float>(arg_number(info, 3, "scale")),
                                                    static_cast<float>(arg_number(info, 4, "eps")),
                                                    static_cast<Activation>(act)));
  });
}

}  // namespace nd::napi
