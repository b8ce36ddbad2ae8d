// Front-end of normalize_channels: F.normalize over the channel dim of [N, C, *] tensors with an
// affine and an optional activation in one pass (the RMS norm of the Wan VAE).
#include <stdexcept>
#include <string>

#include "ops.h"

namespace nd::ops {

static Tensor channel_param(const Tensor& p, const Tensor& x, const char* what) {
  if (!p.defined()) return p;
  const int64_t c = x.shape[1];
  if (p.dim() != 1 || p.shape[0] != c)
    throw std::invalid_argument(std::string("normalize_channels: ") + what + " " + p.describe() + " must be [" +
                                std::to_string(c) + "] for input " + x.describe());
  if (!dtype_is_float(p.dtype) || p.dtype == DType::F8E4M3)
    throw std::invalid_argument(std::string("normalize_channels: ") + what + " must be a float tensor, got " +
                                p.describe());
  if (p.device() != x.device())
    throw std::invalid_argument(std::string("normalize_channels: ") + what + " is on " + p.device().str() +
                                ", input on " + x.device().str());
  return contiguous(cast(p, DType::F32));
}

Tensor normalize_channels(const Tensor& x, const Tensor& weight, const Tensor& bias, float scale, float eps,
                          Activation act) {
  if (!dtype_is_float(x.dtype) || x.dtype == DType::F8E4M3)
    throw std::invalid_argument("normalize_channels needs a float32/float16/bfloat16 tensor, got " + x.describe());
  if (x.dim() < 2) throw std::invalid_argument("normalize_channels needs [N, C, ...], got " + x.describe());
  if (!(eps >= 0.0f)) throw std::invalid_argument("normalize_channels: eps must be >= 0");
  if (act != Activation::None && act != Activation::Silu)
    throw std::invalid_argument("normalize_channels: activation must be none or silu");
  Tensor w = channel_param(weight, x, "weight");
  Tensor b = channel_param(bias, x, "bias");
  Tensor src = contiguous(x);
  Tensor out = Tensor::empty(src.shape, src.dtype, src.device());
  if (out.numel() > 0) backend_for(src.device()).normalize_channels(src, w, b, out, scale, eps, act);
  return out;
}

}  // namespace nd::ops
