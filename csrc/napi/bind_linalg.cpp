// Bindings for matmul, linear, attention and LoRA merging (ops_linalg.cpp), and the FMA peak
// measurement and micro-kernel name that `npm run bench` reports.
#include <cmath>

#include "../cpu/gemm.h"
#include "common.h"

namespace nd::napi {

ND_BINDINGS(bind_linalg) {
  export_fn(env, exports, "matmul", [](const Napi::CallbackInfo& info) {
    return wrap(info.Env(), ops::matmul(arg_tensor(info, 0, "a"), arg_tensor(info, 1, "b")));
  });
  export_fn(env, exports, "linear", [](const Napi::CallbackInfo& info) {
    int64_t act = arg_int(info, 3, "act");
    if (act < 0 || act > static_cast<int64_t>(Activation::Relu))
      throw std::invalid_argument("linear: unknown activation code " + std::to_string(act));
    return wrap(info.Env(), ops::linear(arg_tensor(info, 0, "x"), arg_tensor(info, 1, "weight"), arg_opt_tensor(info, 2),
                                        static_cast<Activation>(act)));
  });
  export_fn(env, exports, "attention", [](const Napi::CallbackInfo& info) {
    AttentionArgs args;
    args.scale = static_cast<float>(arg_number(info, 3, "scale"));
    args.causal = arg_bool(info, 4, "causal");
    args.kv_lens = arg_opt_tensor(info, 5);
    args.bias = arg_opt_tensor(info, 6);
    const bool return_lse = arg_bool(info, 7, "returnLse");
    auto [out, lse] = ops::attention(arg_tensor(info, 0, "q"), arg_tensor(info, 1, "k"), arg_tensor(info, 2, "v"), args,
                                     return_lse);
    Napi::Array result = Napi::Array::New(info.Env(), 2);
    result.Set(0u, wrap(info.Env(), out));
    result.Set(1u, lse.defined() ? wrap(info.Env(), lse) : info.Env().Null());
    return result;
  });
  export_fn(env, exports, "loraMerge", [](const Napi::CallbackInfo& info) {
    const Tensor& base = arg_tensor(info, 0, "base");
    std::vector<Tensor> ups = arg_tensor_list(info, 1, "ups"), downs = arg_tensor_list(info, 2, "downs");
    if (info.Length() < 4 || !info[3].IsArray()) throw std::invalid_argument("argument 3 (scales) must be an array");
    Napi::Array scales = info[3].As<Napi::Array>();
    if (ups.size() != downs.size() || scales.Length() != ups.size())
      throw std::invalid_argument("loraMerge: ups, downs and scales differ in length");
    std::vector<LoraTerm> terms;
    for (uint32_t i = 0; i < scales.Length(); ++i) {
      Napi::Value s = scales.Get(i);
      if (!s.IsNumber()) throw std::invalid_argument("loraMerge: scales must be numbers");
      terms.push_back({ups[i], downs[i], static_cast<float>(s.As<Napi::Number>().DoubleValue())});
    }
    Tensor out = arg_tensor(info, 4, "out");
    ops::lora_merge(base, terms, out);
    return info.Env().Undefined();
  });
  // benchFmaPeak(threads, seconds) -> { wallGflops, coreGflops }: single-precision FMA rate of
  // `threads` threads over the wall time, and per CPU-second of one thread
  export_fn(env, exports, "benchFmaPeak", [](const Napi::CallbackInfo& info) {
    int64_t threads = arg_int(info, 0, "threads");
    double seconds = arg_number(info, 1, "seconds");
    if (threads < 1 || threads > 1024) throw std::out_of_range("benchFmaPeak: threads must be 1..1024");
    if (!(seconds > 0 && seconds <= 10)) throw std::out_of_range("benchFmaPeak: seconds must be in (0, 10]");
    const cpu::FmaPeak peak = cpu::measure_fma_peak(static_cast<int>(threads), seconds);
    Napi::Object result = Napi::Object::New(info.Env());
    result.Set("wallGflops", peak.wall_gflops);
    result.Set("coreGflops", peak.core_gflops);
    return result;
  });
  export_fn(env, exports, "gemmKernelName", [](const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), cpu::micro_kernel().name);
  });
}

}  // namespace nd::napi
