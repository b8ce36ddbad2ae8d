// Front-end of the fused DiT elementwise ops: norm + adaptive modulation, gated residual add.
#include <stdexcept>
#include <string>

#include "ops.h"

namespace nd::ops {

namespace {

bool is_activation_dtype(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16; }

void require_float(const Tensor& t, const std::string& op, const char* what) {
  if (!is_activation_dtype(t.dtype))
    throw std::invalid_argument(op + ": " + what + " must be float32, bfloat16 or float16, got " + t.describe());
}

void require_device(const Tensor& x, const Tensor& t, const std::string& op, const char* what) {
  if (t.device() != x.device())
    throw std::invalid_argument(op + ": " + what + " is on " + t.device().str() + " but the input is on " +
                                x.device().str());
}

// t broadcast to `shape` (a view); throws unless t broadcasts to exactly that shape.
Tensor broadcast_to(const Tensor& t, const Shape& shape, const std::string& op, const char* what) {
  Shape b;
  try {
    b = broadcast_shapes(t.shape, shape);
  } catch (const std::invalid_argument&) {
    b.clear();
  }
  if (b != shape)
    throw std::invalid_argument(op + ": " + what + " " + shape_str(t.shape) + " does not broadcast to " +
                                shape_str(shape));
  return t.expand(shape);
}

}  // namespace

Tensor norm_modulate(NormKind kind, const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& shift,
                     const Tensor& scale, float eps) {
  const std::string op = kind == NormKind::Rms ? "norm_modulate (rms)" : "norm_modulate (layer)";
  if (kind != NormKind::Layer && kind != NormKind::Rms) throw std::invalid_argument("norm_modulate: unknown norm kind");
  require_float(x, op, "input");
  if (x.dim() < 1) throw std::invalid_argument(op + ": input " + x.describe() + " needs at least one dim");
  if (!(eps >= 0.0f)) throw std::invalid_argument(op + ": eps must be >= 0");
  const int64_t D = x.shape.back();
  auto vec = [&](const Tensor& p, const char* what) {
    if (!p.defined()) return p;
    require_float(p, op, what);
    require_device(x, p, op, what);
    if (p.dim() != 1 || p.shape[0] != D)
      throw std::invalid_argument(op + ": " + what + " " + shape_str(p.shape) + " must be [" + std::to_string(D) +
                                  "] for input " + shape_str(x.shape));
    return contiguous(p);
  };
  if (kind == NormKind::Rms && bias.defined()) throw std::invalid_argument(op + ": RMS norm takes no bias");
  const Tensor w = vec(weight, "weight"), b = vec(bias, "bias");
  auto mod = [&](const Tensor& m, const char* what) {
    if (!m.defined()) return m;
    require_float(m, op, what);
    require_device(x, m, op, what);
    return broadcast_to(m, x.shape, op, what);
  };
  const Tensor sh = mod(shift, "shift"), sc = mod(scale, "scale");
  Tensor out = Tensor::empty(x.shape, x.dtype, x.device());
  if (out.numel() == 0) return out;
  backend_for(x.device()).norm_modulate(kind, contiguous(x), w, b, sh, sc, out, eps);
  return out;
}

Tensor gated_add(const Tensor& x, const Tensor& y, const Tensor& gate) {
  const std::string op = "gated_add";
  require_float(x, op, "x");
  require_float(y, op, "y");
  require_float(gate, op, "gate");
  require_device(x, y, op, "y");
  require_device(x, gate, op, "gate");
  const Tensor ye = broadcast_to(y, x.shape, op, "y"), ge = broadcast_to(gate, x.shape, op, "gate");
  Tensor out = Tensor::empty(x.shape, promote(x.dtype, y.dtype), x.device());
  if (out.numel() == 0) return out;
  backend_for(x.device()).gated_add(x, ye, ge, out);
  return out;
}

}  // namespace nd::ops
