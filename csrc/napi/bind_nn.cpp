// Bindings for the ops of ops_nn.cpp: convolution, nearest resampling, normalisation, RoPE
// and embedding lookup (signatures in lib/engine/ops/nn.ts).
#include "common.h"

namespace nd::napi {

// Reads stride/pad/dilation lists of a conv with `sd` spatial dims into ConvArgs, whose arrays
// hold (d,) h, w in their trailing slots.
static ConvArgs arg_conv(const Napi::CallbackInfo& info, int sd) {
  const auto stride = arg_int_list(info, 3, "stride");
  const auto pad = arg_int_list(info, 4, "pad");
  const auto dilation = arg_int_list(info, 5, "dilation");
  if (stride.size() != static_cast<size_t>(sd) || dilation.size() != static_cast<size_t>(sd) ||
      pad.size() != static_cast<size_t>(2 * sd))
    throw std::invalid_argument("conv" + std::to_string(sd) + "d needs " + std::to_string(sd) + " strides, " +
                                std::to_string(2 * sd) + " paddings and " + std::to_string(sd) + " dilations, got " +
                                std::to_string(stride.size()) + ", " + std::to_string(pad.size()) + " and " +
                                std::to_string(dilation.size()));
  ConvArgs a;
  const int off = 3 - sd;
  for (int i = 0; i < sd; ++i) {
    a.stride[off + i] = stride[i];
    a.dilation[off + i] = dilation[i];
    a.pad[2 * (off + i)] = pad[2 * i];
    a.pad[2 * (off + i) + 1] = pad[2 * i + 1];
  }
  a.groups = arg_int(info, 6, "groups");
  return a;
}

static float arg_eps(const Napi::CallbackInfo& info, size_t i) { return static_cast<float>(arg_number(info, i, "eps")); }

ND_BINDINGS(bind_nn) {
  export_fn(env, exports, "conv2d", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::conv2d(arg_tensor(info, 0, "x"), arg_tensor(info, 1, "weight"), arg_opt_tensor(info, 2),
                                        arg_conv(info, 2)));
  });
  export_fn(env, exports, "conv3d", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::conv3d(arg_tensor(info, 0, "x"), arg_tensor(info, 1, "weight"), arg_opt_tensor(info, 2),
                                        arg_conv(info, 3)));
  });
  export_fn(env, exports, "upsampleNearest", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::upsample_nearest(arg_tensor(info, 0, "x"), arg_int_list(info, 1, "size"),
                                                  arg_bool(info, 2, "exact")));
  });
  export_fn(env, exports, "layerNorm", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::layer_norm(arg_tensor(info, 0, "x"), arg_opt_tensor(info, 1), arg_opt_tensor(info, 2),
                                            arg_eps(info, 3)));
  });
  export_fn(env, exports, "rmsNorm", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::rms_norm(arg_tensor(info, 0, "x"), arg_opt_tensor(info, 1), arg_eps(info, 2)));
  });
  export_fn(env, exports, "groupNorm", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::group_norm(arg_tensor(info, 0, "x"), arg_int(info, 1, "groups"), arg_opt_tensor(info, 2),
                                            arg_opt_tensor(info, 3), arg_eps(info, 4)));
  });
  export_fn(env, exports, "rope", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::rope(arg_tensor(info, 0, "x"), arg_tensor(info, 1, "cos"), arg_tensor(info, 2, "sin"),
                                      arg_bool(info, 3, "interleaved")));
  });
  export_fn(env, exports, "embedding", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::embedding(arg_tensor(info, 0, "weight"), arg_tensor(info, 1, "ids")));
  });
}

}  // namespace nd::napi
