// Front-end ops: validate arguments (errors name the shapes involved), allocate outputs on
// the inputs' device and dispatch to that device's Backend kernel. Everything the N-API
// layer and the JS engine call goes through here.
#pragma once
#include <utility>
#include <vector>

#include "backend.h"
#include "tensor.h"

namespace nd::ops {

// ---- memory, layout, dtype ----
Tensor to_device(const Tensor& x, Device device);
Tensor contiguous(const Tensor& x);
Tensor cast(const Tensor& x, DType dtype);
Tensor reshape(const Tensor& x, const Shape& shape);  // a view when possible, else a copy
void copy_into(Tensor& dst, const Tensor& src);        // src broadcast to dst's shape, converting dtype

// ---- creation ----
Tensor full(const Shape& shape, DType dtype, Device device, double value);
// arange and linspace give torch's CPU values bit for bit (ops_range.cpp says how); integer
// dtypes need integer arange arguments and results that fit the dtype.
Tensor arange(double start, double end, double step, DType dtype, Device device);
Tensor linspace(double start, double end, int64_t steps, DType dtype, Device device);
Tensor randn(const Shape& shape, DType dtype, Device device, uint64_t seed, uint64_t offset);

// ---- elementwise ----
DType promote(DType a, DType b);
Tensor unary(UnaryOp op, const Tensor& x);
Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b);
// x * mul + add and clamp: integer tensors give float32 when a scalar is fractional (as torch)
Tensor affine(const Tensor& x, double mul, double add);  // x * mul + add
Tensor clamp(const Tensor& x, double lo, double hi);
Tensor pow_scalar(const Tensor& x, double exponent);

// ---- reductions ----
Tensor reduce(ReduceOp op, const Tensor& x, int64_t dim, bool keepdim);
Tensor softmax(const Tensor& x, int64_t dim);

// ---- joining and padding ----
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
// pads in torch F.pad order: (last_lo, last_hi, second_last_lo, second_last_hi, ...); negative crops
Tensor pad(const Tensor& x, const std::vector<int64_t>& pads, double value);

// ---- linear algebra ----
Tensor matmul(const Tensor& a, const Tensor& b);  // torch.matmul semantics for >= 2-D operands
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias, Activation act = Activation::None);
// Returns (out, lse); lse undefined unless return_lse. q,k,v are [B,H,L,D].
std::pair<Tensor, Tensor> attention(const Tensor& q, const Tensor& k, const Tensor& v, const AttentionArgs& args,
                                    bool return_lse);

// ---- convolution and resampling ----
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvArgs& args);
Tensor conv3d(const Tensor& x, const Tensor& w, const Tensor& bias, const ConvArgs& args);
Tensor upsample_nearest(const Tensor& x, const Shape& out_spatial, bool exact);

// ---- normalisation and position encoding ----
Tensor layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps);
Tensor rms_norm(const Tensor& x, const Tensor& weight, float eps);
Tensor group_norm(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias, float eps);
Tensor rope(const Tensor& x, const Tensor& cos, const Tensor& sin, bool interleaved);
// F.normalize(x, dim=1) * scale * weight + bias, then act (None or Silu), for x [N, C, *] (ops_channel_norm.cpp)
Tensor normalize_channels(const Tensor& x, const Tensor& weight, const Tensor& bias, float scale, float eps,
                          Activation act);

// ---- fused DiT elementwise (ops_fused.cpp) ----
// norm(x) over the last dim (LayerNorm with optional weight/bias, or RMSNorm with optional weight),
// then * (1 + scale) + shift with shift/scale broadcast to x's shape; either may be undefined.
Tensor norm_modulate(NormKind kind, const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& shift,
                     const Tensor& scale, float eps);
// x + y * gate with y and gate broadcast to x's shape (the DiT gated residual).
Tensor gated_add(const Tensor& x, const Tensor& y, const Tensor& gate);

// ---- lookup ----
Tensor embedding(const Tensor& weight, const Tensor& ids);

// ---- LoRA ----
void lora_merge(const Tensor& base, const std::vector<LoraTerm>& terms, Tensor& w);

}  // namespace nd::ops
