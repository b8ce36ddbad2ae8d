// Front-end ops for memory, layout, creation (arange/linspace: ops_range.cpp), elementwise math,
// reductions, concat and pad.
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "ops.h"

namespace nd::ops {

static void require_float(const Tensor& x, const char* op) {
  if (!dtype_is_float(x.dtype) || x.dtype == DType::F8E4M3)
    throw std::invalid_argument(std::string(op) + " needs a float32/float16/bfloat16 tensor, got " + x.describe());
}

static void require_same_device(const Tensor& a, const Tensor& b, const char* op) {
  if (a.device() != b.device())
    throw std::invalid_argument(std::string(op) + ": tensors are on different devices (" + a.device().str() + " and " +
                                b.device().str() + ")");
}

Tensor to_device(const Tensor& x, Device device) {
  if (x.device() == device) return x;
  Tensor src = contiguous(x);
  Tensor out = Tensor::empty(src.shape, src.dtype, device);
  if (src.device().type == DeviceType::CPU) {
    backend_for(device).upload(src.data(), out);
  } else if (device.type == DeviceType::CPU) {
    backend_for(src.device()).download(src, out.data());
  } else {
    Tensor host = to_device(src, Device{});
    return to_device(host, device);
  }
  return out;
}

Tensor contiguous(const Tensor& x) {
  if (x.is_contiguous()) return x;
  Tensor out = Tensor::empty(x.shape, x.dtype, x.device());
  backend_for(x.device()).copy(x, out);
  return out;
}

Tensor cast(const Tensor& x, DType dtype) {
  if (x.dtype == dtype) return x;
  Tensor out = Tensor::empty(x.shape, dtype, x.device());
  backend_for(x.device()).copy(x, out);
  return out;
}

Tensor reshape(const Tensor& x, const Shape& shape) {
  if (x.can_view_as(shape)) return x.reshape_view(shape);
  return contiguous(x).reshape_view(shape);
}

void copy_into(Tensor& dst, const Tensor& src) {
  require_same_device(dst, src, "copy_into");
  Shape b;
  try {
    b = broadcast_shapes(dst.shape, src.shape);
  } catch (const std::invalid_argument&) {
    b.clear();
  }
  if (b != dst.shape)
    throw std::invalid_argument("copy_into: source " + shape_str(src.shape) + " does not broadcast to destination " +
                                shape_str(dst.shape));
  for (size_t i = 0; i < dst.shape.size(); ++i)
    if (dst.strides[i] == 0 && dst.shape[i] > 1)
      throw std::invalid_argument("copy_into: destination " + dst.describe() + " is an expanded (broadcast) view");
  backend_for(dst.device()).copy(src.expand(dst.shape), dst);
}

Tensor full(const Shape& shape, DType dtype, Device device, double value) {
  Tensor out = Tensor::empty(shape, dtype, device);
  backend_for(device).fill(out, value);
  return out;
}

Tensor randn(const Shape& shape, DType dtype, Device device, uint64_t seed, uint64_t offset) {
  if (!dtype_is_float(dtype)) throw std::invalid_argument("randn needs a float dtype");
  Tensor out = Tensor::empty(shape, dtype, device);
  backend_for(device).randn(out, seed, offset);
  return out;
}

DType promote(DType a, DType b) {
  if (a == b) return a;
  bool fa = dtype_is_float(a), fb = dtype_is_float(b);
  if (fa && fb) return DType::F32;  // mixed float widths compute and store in f32
  if (fa) return a == DType::F8E4M3 ? DType::F32 : a;
  if (fb) return b == DType::F8E4M3 ? DType::F32 : b;
  if (a == DType::I64 || b == DType::I64) return DType::I64;
  return DType::I32;
}

static DType float_result(DType t) { return (dtype_is_float(t) && t != DType::F8E4M3) ? t : DType::F32; }

Tensor unary(UnaryOp op, const Tensor& x) {
  DType t = (op == UnaryOp::Neg || op == UnaryOp::Abs || op == UnaryOp::Square) && !dtype_is_float(x.dtype)
                ? x.dtype
                : float_result(x.dtype);
  Tensor out = Tensor::empty(x.shape, t, x.device());
  backend_for(x.device()).unary(op, x, out);
  return out;
}

Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  require_same_device(a, b, "binary op");
  Shape s = broadcast_shapes(a.shape, b.shape);
  DType t = promote(a.dtype, b.dtype);
  if (op == BinaryOp::Div || op == BinaryOp::Pow) t = float_result(t);
  Tensor out = Tensor::empty(s, t, a.device());
  backend_for(a.device()).binary(op, a.expand(s), b.expand(s), out);
  return out;
}

// The dtype of x combined with scalars: an integer tensor stays integer only while every scalar is
// an integer; a fractional one makes the result float32 (torch: int_tensor * 0.5 is float).
static DType scalar_result(DType t, double a, double b) {
  if (dtype_is_float(t)) return float_result(t);
  return std::trunc(a) == a && std::trunc(b) == b ? t : DType::F32;
}

Tensor affine(const Tensor& x, double mul, double add) {
  Tensor out = Tensor::empty(x.shape, scalar_result(x.dtype, mul, add), x.device());
  backend_for(x.device()).affine(x, out, mul, add, 1.0, 0.0);
  return out;
}

Tensor clamp(const Tensor& x, double lo, double hi) {
  if (!(lo <= hi)) throw std::invalid_argument("clamp needs min <= max");
  Tensor out = Tensor::empty(x.shape, scalar_result(x.dtype, lo, hi), x.device());
  backend_for(x.device()).affine(x, out, 1.0, 0.0, lo, hi);
  return out;
}

Tensor pow_scalar(const Tensor& x, double exponent) {
  Tensor out = Tensor::empty(x.shape, float_result(x.dtype), x.device());
  backend_for(x.device()).pow_scalar(x, out, exponent);
  return out;
}

Tensor reduce(ReduceOp op, const Tensor& x, int64_t dim, bool keepdim) {
  int64_t d = x.norm_dim(dim);
  if (x.shape[d] == 0 && (op == ReduceOp::Max || op == ReduceOp::Min))
    throw std::invalid_argument("max/min over an empty dimension of " + x.describe());
  Shape s = x.shape;
  s[d] = 1;
  DType t = (op == ReduceOp::Mean) ? float_result(x.dtype) : x.dtype;
  if (t == DType::F8E4M3) t = DType::F32;
  Tensor out = Tensor::empty(s, t, x.device());
  backend_for(x.device()).reduce(op, x, d, out);
  return keepdim ? out : out.squeeze(d);
}

Tensor softmax(const Tensor& x, int64_t dim) {
  require_float(x, "softmax");
  int64_t d = x.norm_dim(dim);
  if (d == x.dim() - 1) {
    Tensor out = Tensor::empty(x.shape, x.dtype, x.device());
    backend_for(x.device()).softmax(contiguous(x), out);
    return out;
  }
  Tensor moved = contiguous(x.transpose(d, -1));
  Tensor out = Tensor::empty(moved.shape, x.dtype, x.device());
  backend_for(x.device()).softmax(moved, out);
  return contiguous(out.transpose(d, -1));
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  if (xs.empty()) throw std::invalid_argument("concat needs at least one tensor");
  const Tensor& first = xs[0];
  int64_t d = first.norm_dim(dim);
  Shape s = first.shape;
  DType t = first.dtype;
  int64_t total = 0;
  for (const auto& x : xs) {
    require_same_device(first, x, "concat");
    if (x.dim() != first.dim())
      throw std::invalid_argument("concat: tensors " + shape_str(first.shape) + " and " + shape_str(x.shape) +
                                  " have different numbers of dimensions");
    for (int64_t i = 0; i < first.dim(); ++i)
      if (i != d && x.shape[i] != s[i])
        throw std::invalid_argument("concat along dim " + std::to_string(d) + ": shapes " + shape_str(first.shape) +
                                    " and " + shape_str(x.shape) + " differ in dim " + std::to_string(i));
    total += x.shape[d];
    t = promote(t, x.dtype);
  }
  s[d] = total;
  Tensor out = Tensor::empty(s, t, first.device());
  int64_t at = 0;
  for (const auto& x : xs) {
    Tensor part = out.slice(d, at, at + x.shape[d]);
    if (x.numel() > 0) backend_for(out.device()).copy(x, part);
    at += x.shape[d];
  }
  return out;
}

Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, double value) {
  if (pads.size() % 2 != 0 || static_cast<int64_t>(pads.size() / 2) > x.dim())
    throw std::invalid_argument("pad needs an even number of values, at most 2 per dimension of " + x.describe());
  Shape s = x.shape;
  Tensor src = x;
  std::vector<int64_t> lo(x.dim(), 0);
  for (size_t i = 0; i < pads.size() / 2; ++i) {
    int64_t d = x.dim() - 1 - static_cast<int64_t>(i);
    int64_t pl = pads[2 * i], ph = pads[2 * i + 1];
    if (pl < 0) { src = src.slice(d, -pl, src.shape[d]); pl = 0; }
    if (ph < 0) { src = src.slice(d, 0, src.shape[d] + ph); ph = 0; }
    s[d] = src.shape[d] + pl + ph;
    lo[d] = pl;
  }
  Tensor out = full(s, x.dtype, x.device(), value);
  Tensor inner = out;
  for (int64_t d = 0; d < x.dim(); ++d) inner = inner.slice(d, lo[d], lo[d] + src.shape[d]);
  if (src.numel() > 0) backend_for(out.device()).copy(src, inner);
  return out;
}

}  // namespace nd::ops
