// The op dispatch table: one Backend per device type. Front-end ops (ops.h) validate
// arguments, allocate outputs and then call the kernel of the tensor's device here.
// The CPU backend is always present; the CUDA backend is registered at run time by the
// optional CUDA library (csrc/cuda) when a driver and a device are found.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "tensor.h"

namespace nd {

enum class UnaryOp : int32_t {
  Neg = 0, Abs, Exp, Log, Sqrt, Rsqrt, Sin, Cos, Tanh, Sigmoid, Silu, GeluErf, GeluTanh, Relu, Square, Reciprocal
};
enum class BinaryOp : int32_t { Add = 0, Sub, Mul, Div, Maximum, Minimum, Pow };
enum class ReduceOp : int32_t { Sum = 0, Mean, Max, Min };
enum class NormKind : int32_t { Layer = 0, Rms = 1 };
// Epilogue applied by GEMM after bias (none, or one activation).
enum class Activation : int32_t { None = 0, GeluTanh, GeluErf, Silu, Relu };

struct GemmArgs {
  float alpha = 1.0f;
  Activation act = Activation::None;
};

struct AttentionArgs {
  float scale = 1.0f;
  bool causal = false;   // query i attends keys j <= i (+ Lk - Lq offset)
  Tensor kv_lens;        // optional int32 [B]: keys >= kv_lens[b] are masked
  Tensor bias;           // optional float, broadcastable to [B, H, Lq, Lk], added to the logits
};

struct ConvArgs {
  int64_t stride[3] = {1, 1, 1};     // (d,) h, w
  int64_t pad[6] = {0, 0, 0, 0, 0, 0};  // (front, back,) top, bottom, left, right
  int64_t dilation[3] = {1, 1, 1};
  int64_t groups = 1;
};

struct LoraTerm {
  Tensor up;    // B [out, rank]
  Tensor down;  // A [rank, in]
  float scale;  // strength * alpha / rank
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // ---- memory ----
  virtual void* allocate(size_t nbytes, Device device) = 0;
  virtual void deallocate(void* p, size_t nbytes, Device device) = 0;
  // Copies `src` (any strides, any dtype) into `dst` (same shape, any strides, any dtype),
  // converting element types. Both on this backend's device.
  virtual void copy(const Tensor& src, Tensor& dst);
  // Host <-> device transfers of contiguous bytes.
  virtual void upload(const void* host, Tensor& dst);
  virtual void download(const Tensor& src, void* host);
  virtual void synchronize(Device device);

  // ---- creation ----
  virtual void fill(Tensor& out, double value);
  // Standard normal noise from Philox4x32-10 (counter = element index + offset, key = seed).
  virtual void randn(Tensor& out, uint64_t seed, uint64_t offset);

  // ---- elementwise (inputs already broadcast to out's shape; out contiguous) ----
  virtual void unary(UnaryOp op, const Tensor& x, Tensor& out);
  virtual void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out);
  // out = x * mul + add (scalars); with clamp bounds when lo <= hi.
  virtual void affine(const Tensor& x, Tensor& out, double mul, double add, double lo, double hi);
  virtual void pow_scalar(const Tensor& x, Tensor& out, double exponent);

  // ---- reductions ----
  virtual void reduce(ReduceOp op, const Tensor& x, int64_t dim, Tensor& out);  // out keeps dim with size 1
  virtual void softmax(const Tensor& x, Tensor& out);                            // over the last dim

  // ---- linear algebra ----
  // out[b] = act(alpha * a[b] @ b[b] + bias); a [Bt,M,K], b [Bt,K,N] with any strides (batch
  // stride 0 = broadcast), bias [N] or undefined, out contiguous [Bt,M,N].
  virtual void gemm(const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& out, const GemmArgs& args);
  // q [B,H,Lq,D], k [B,Hk,Lk,D], v [B,Hk,Lk,Dv] (last dim contiguous, H % Hk == 0);
  // out [B,H,Lq,Dv] view; lse [B,H,Lq] float32 or undefined.
  virtual void attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse,
                         const AttentionArgs& args);

  // ---- convolution and resampling (NC[D]HW, contiguous) ----
  virtual void conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out, const ConvArgs& args);
  virtual void conv3d(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out, const ConvArgs& args);
  // Nearest upsampling of the trailing `spatial_dims` dims to out's size (exact = nearest-exact).
  virtual void upsample_nearest(const Tensor& x, Tensor& out, int spatial_dims, bool exact);

  // ---- normalisation (x contiguous) ----
  virtual void layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out, float eps);
  virtual void rms_norm(const Tensor& x, const Tensor& weight, Tensor& out, float eps);
  virtual void group_norm(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias, Tensor& out,
                          float eps);
  // x [N, C, *]: out = act(x / max(||x[n, :, s]||_2, eps) * scale * weight[c] + bias[c]) (F.normalize over
  // dim 1, as the Wan VAE's RMS norm); weight/bias [C] float32 or undefined; act None or Silu.
  virtual void normalize_channels(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out, float scale,
                                  float eps, Activation act);
  // x [B,L,H,D]; cos/sin [L,D/2] or [B,L,D/2] float32; interleaved pairs (2i,2i+1) or halves (i, i+D/2).
  virtual void rope(const Tensor& x, const Tensor& cos, const Tensor& sin, Tensor& out, bool interleaved);

  // ---- fused DiT elementwise (fused.cpp / fused.cu) ----
  // out = norm(x) * weight + bias, then * (1 + scale) + shift, over the last dim D of a contiguous x:
  // LayerNorm (bias allowed) or RMSNorm, then the adaptive modulation. weight/bias [D] contiguous or
  // undefined; shift/scale views expanded to x's shape (e.g. from [B, 1, D]) or undefined.
  virtual void norm_modulate(NormKind kind, const Tensor& x, const Tensor& weight, const Tensor& bias,
                             const Tensor& shift, const Tensor& scale, Tensor& out, float eps);
  // out = x + y * gate (the gated residual); x, y, gate are views of out's shape, out contiguous.
  virtual void gated_add(const Tensor& x, const Tensor& y, const Tensor& gate, Tensor& out);

  // ---- lookup ----
  virtual void embedding(const Tensor& weight, const Tensor& ids, Tensor& out);

  // ---- LoRA: w = base + sum_i scale_i * up_i @ down_i, computed in f32, stored in w's dtype ----
  virtual void lora_merge(const Tensor& base, const std::vector<LoraTerm>& terms, Tensor& w);

 protected:
  [[noreturn]] void unsupported(const char* op) const;
};

Backend& backend_for(Device device);
Backend& cpu_backend();
// Installed by the CUDA library loader; null when no CUDA device is usable.
void set_cuda_backend(Backend* be);
Backend* cuda_backend();

}  // namespace nd
