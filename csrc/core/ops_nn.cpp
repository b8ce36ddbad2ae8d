// Front-end ops for convolution, nearest resampling, normalisation, rotary embeddings and
// embedding lookup: argument validation (errors name the shapes), output allocation, and the
// layout the kernels expect (contiguous NC[D]HW for conv/resample/norm inputs).
#include <algorithm>
#include <stdexcept>
#include <string>

#include "ops.h"

namespace nd::ops {

static std::string ints_str(const int64_t* v, int n) {
  std::string s = "(";
  for (int i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + ")";
}

static void require_activation(const Tensor& x, const char* op, const char* what) {
  if (x.dtype != DType::F32 && x.dtype != DType::BF16 && x.dtype != DType::F16)
    throw std::invalid_argument(std::string(op) + ": " + what + " must be float32, bfloat16 or float16, got " +
                                x.describe());
}

static void require_same_device(const Tensor& a, const Tensor& b, const char* op, const char* what) {
  if (b.defined() && a.device() != b.device())
    throw std::invalid_argument(std::string(op) + ": " + what + " is on " + b.device().str() + " but the input is on " +
                                a.device().str());
}

// Checks an optional per-feature parameter (norm weight/bias, conv bias): shape [n], float.
static void require_vector(const Tensor& p, int64_t n, const Tensor& x, const char* op, const char* what) {
  if (!p.defined()) return;
  require_same_device(x, p, op, what);
  require_activation(p, op, what);
  if (p.dim() != 1 || p.shape[0] != n)
    throw std::invalid_argument(std::string(op) + ": " + what + " " + shape_str(p.shape) + " must have shape [" +
                                std::to_string(n) + "] for input " + shape_str(x.shape));
}

static Tensor contiguous_or_undefined(const Tensor& t) { return t.defined() ? contiguous(t) : t; }

// ---- convolution ----

// Shared by conv2d (sd = 2) and conv3d (sd = 3); args.stride/pad/dilation hold the trailing
// spatial dims' values at index 3 - sd (stride/dilation) and 2 * (3 - sd) (pad).
static Tensor conv(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvArgs& args, int sd, const char* op) {
  const int off = 3 - sd;
  require_activation(x, op, "input");
  require_activation(w, op, "weight");
  require_same_device(x, w, op, "weight");
  if (x.dim() != sd + 2)
    throw std::invalid_argument(std::string(op) + ": input " + shape_str(x.shape) + " must be " +
                                (sd == 2 ? "[N, C, H, W]" : "[N, C, D, H, W]"));
  if (w.dim() != sd + 2)
    throw std::invalid_argument(std::string(op) + ": weight " + shape_str(w.shape) + " must be " +
                                (sd == 2 ? "[O, C/groups, kh, kw]" : "[O, C/groups, kd, kh, kw]"));
  const int64_t groups = args.groups;
  const int64_t C = x.shape[1], O = w.shape[0];
  if (groups < 1) throw std::invalid_argument(std::string(op) + ": groups must be >= 1, got " + std::to_string(groups));
  if (C % groups != 0 || O % groups != 0)
    throw std::invalid_argument(std::string(op) + ": groups " + std::to_string(groups) + " must divide the input channels (" +
                                std::to_string(C) + ", input " + shape_str(x.shape) + ") and the output channels (" +
                                std::to_string(O) + ", weight " + shape_str(w.shape) + ")");
  if (w.shape[1] * groups != C)
    throw std::invalid_argument(std::string(op) + ": input " + shape_str(x.shape) + " has " + std::to_string(C) +
                                " channels but weight " + shape_str(w.shape) + " expects " +
                                std::to_string(w.shape[1] * groups) + " (groups " + std::to_string(groups) + ")");
  if (w.shape[1] < 1)
    throw std::invalid_argument(std::string(op) + ": weight " + shape_str(w.shape) + " has no input channels");
  require_vector(bias, O, x, op, "bias");
  for (int i = 0; i < sd; ++i) {
    if (args.stride[off + i] < 1 || args.dilation[off + i] < 1)
      throw std::invalid_argument(std::string(op) + ": stride " + ints_str(args.stride + off, sd) + " and dilation " +
                                  ints_str(args.dilation + off, sd) + " must be >= 1");
    if (args.pad[2 * (off + i)] < 0 || args.pad[2 * (off + i) + 1] < 0)
      throw std::invalid_argument(std::string(op) + ": padding " + ints_str(args.pad + 2 * off, 2 * sd) +
                                  " must be >= 0");
  }
  Shape out_shape = {x.shape[0], O};
  for (int i = 0; i < sd; ++i) {
    const int64_t padded = x.shape[2 + i] + args.pad[2 * (off + i)] + args.pad[2 * (off + i) + 1];
    const int64_t span = args.dilation[off + i] * (w.shape[2 + i] - 1) + 1;
    if (w.shape[2 + i] < 1 || span > padded)
      throw std::invalid_argument(std::string(op) + ": kernel " + shape_str(Shape(w.shape.begin() + 2, w.shape.end())) +
                                  " with dilation " + ints_str(args.dilation + off, sd) + " is larger than input " +
                                  shape_str(x.shape) + " padded by " + ints_str(args.pad + 2 * off, 2 * sd));
    out_shape.push_back((padded - span) / args.stride[off + i] + 1);
  }
  Tensor out = Tensor::empty(out_shape, x.dtype, x.device());
  if (out.numel() == 0) return out;
  Backend& be = backend_for(x.device());
  if (sd == 2)
    be.conv2d(contiguous(x), contiguous(w), contiguous_or_undefined(bias), out, args);
  else
    be.conv3d(contiguous(x), contiguous(w), contiguous_or_undefined(bias), out, args);
  return out;
}

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvArgs& args) {
  return conv(x, w, bias, args, 2, "conv2d");
}

Tensor conv3d(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvArgs& args) {
  return conv(x, w, bias, args, 3, "conv3d");
}

Tensor upsample_nearest(const Tensor& x, const Shape& out_spatial, bool exact) {
  const char* op = exact ? "upsample_nearest (nearest-exact)" : "upsample_nearest";
  require_activation(x, op, "input");
  const int64_t sd = static_cast<int64_t>(out_spatial.size());
  if (sd != 2 && sd != 3)
    throw std::invalid_argument(std::string(op) + ": output size " + shape_str(out_spatial) +
                                " must name 2 (H, W) or 3 (D, H, W) spatial dims");
  if (x.dim() < sd + 1)
    throw std::invalid_argument(std::string(op) + ": input " + shape_str(x.shape) + " needs at least " +
                                std::to_string(sd + 1) + " dims for " + std::to_string(sd) + " spatial dims");
  Shape out_shape = x.shape;
  for (int64_t i = 0; i < sd; ++i) {
    const int64_t in = x.shape[x.dim() - sd + i];
    if (out_spatial[i] < 1 || in < 1)
      throw std::invalid_argument(std::string(op) + ": cannot resize input " + shape_str(x.shape) + " to spatial size " +
                                  shape_str(out_spatial) + " (sizes must be >= 1)");
    out_shape[x.dim() - sd + i] = out_spatial[i];
  }
  Tensor out = Tensor::empty(out_shape, x.dtype, x.device());
  if (out.numel() == 0) return out;
  backend_for(x.device()).upsample_nearest(contiguous(x), out, static_cast<int>(sd), exact);
  return out;
}

// ---- normalisation ----

static void require_eps(float eps, const char* op) {
  if (!(eps >= 0)) throw std::invalid_argument(std::string(op) + ": eps must be >= 0, got " + std::to_string(eps));
}

Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps) {
  require_activation(x, "layer_norm", "input");
  require_eps(eps, "layer_norm");
  if (x.dim() < 1) throw std::invalid_argument("layer_norm: input " + x.describe() + " needs at least one dim");
  const int64_t D = x.shape.back();
  require_vector(weight, D, x, "layer_norm", "weight");
  require_vector(bias, D, x, "layer_norm", "bias");
  Tensor out = Tensor::empty(x.shape, x.dtype, x.device());
  if (out.numel() == 0) return out;
  backend_for(x.device()).layer_norm(contiguous(x), contiguous_or_undefined(weight), contiguous_or_undefined(bias), out,
                                     eps);
  return out;
}

Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps) {
  require_activation(x, "rms_norm", "input");
  require_eps(eps, "rms_norm");
  if (x.dim() < 1) throw std::invalid_argument("rms_norm: input " + x.describe() + " needs at least one dim");
  require_vector(weight, x.shape.back(), x, "rms_norm", "weight");
  Tensor out = Tensor::empty(x.shape, x.dtype, x.device());
  if (out.numel() == 0) return out;
  backend_for(x.device()).rms_norm(contiguous(x), contiguous_or_undefined(weight), out, eps);
  return out;
}

Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias, float eps) {
  require_activation(x, "group_norm", "input");
  require_eps(eps, "group_norm");
  if (x.dim() < 2) throw std::invalid_argument("group_norm: input " + shape_str(x.shape) + " must be [N, C, *]");
  const int64_t C = x.shape[1];
  if (groups < 1 || C % groups != 0)
    throw std::invalid_argument("group_norm: " + std::to_string(groups) + " groups do not divide the " +
                                std::to_string(C) + " channels of input " + shape_str(x.shape));
  require_vector(weight, C, x, "group_norm", "weight");
  require_vector(bias, C, x, "group_norm", "bias");
  Tensor out = Tensor::empty(x.shape, x.dtype, x.device());
  if (out.numel() == 0) return out;
  backend_for(x.device()).group_norm(contiguous(x), groups, contiguous_or_undefined(weight),
                                     contiguous_or_undefined(bias), out, eps);
  return out;
}

Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin, bool interleaved) {
  require_activation(x, "rope", "input");
  require_same_device(x, cos, "rope", "cos");
  require_same_device(x, sin, "rope", "sin");
  if (x.dim() != 4) throw std::invalid_argument("rope: input " + shape_str(x.shape) + " must be [B, L, H, D]");
  const int64_t B = x.shape[0], L = x.shape[1], D = x.shape[3];
  if (D % 2 != 0)
    throw std::invalid_argument("rope: head dim D = " + std::to_string(D) + " of input " + shape_str(x.shape) +
                                " must be even");
  if (cos.shape != sin.shape)
    throw std::invalid_argument("rope: cos " + shape_str(cos.shape) + " and sin " + shape_str(sin.shape) +
                                " must have the same shape");
  const Shape per_pos = {L, D / 2}, per_batch = {B, L, D / 2};
  if (cos.shape != per_pos && cos.shape != per_batch)
    throw std::invalid_argument("rope: tables " + shape_str(cos.shape) + " must be [L, D/2] = " + shape_str(per_pos) +
                                " or [B, L, D/2] = " + shape_str(per_batch) + " for input " + shape_str(x.shape));
  if (!dtype_is_float(cos.dtype) || !dtype_is_float(sin.dtype))
    throw std::invalid_argument("rope: cos/sin tables must be float, got " + cos.describe() + " and " + sin.describe());
  Tensor out = Tensor::empty(x.shape, x.dtype, x.device());
  if (out.numel() == 0) return out;
  // the kernel takes any strides for x's outer dims but a contiguous last dim
  Tensor xin = x.strides[3] == 1 ? x : contiguous(x);
  backend_for(x.device()).rope(xin, contiguous(cast(cos, DType::F32)), contiguous(cast(sin, DType::F32)), out,
                               interleaved);
  return out;
}

// ---- lookup ----

Tensor embedding(const Tensor& weight, const Tensor& ids) {
  require_same_device(weight, ids, "embedding", "ids");
  if (weight.dim() != 2) throw std::invalid_argument("embedding: weight " + shape_str(weight.shape) + " must be [V, D]");
  if (!dtype_is_float(weight.dtype))
    throw std::invalid_argument("embedding: weight must be a float tensor, got " + weight.describe());
  if (ids.dtype != DType::I32 && ids.dtype != DType::I64)
    throw std::invalid_argument("embedding: ids must be int32 or int64, got " + ids.describe());
  Shape out_shape = ids.shape;
  out_shape.push_back(weight.shape[1]);
  // float weights of any width are looked up into float32 rows (the activation dtype)
  Tensor out = Tensor::empty(out_shape, DType::F32, weight.device());
  backend_for(weight.device()).embedding(weight, contiguous(ids), out);
  return out;
}

}  // namespace nd::ops
