// The CPU backend: kernels are spread over csrc/cpu/*.cpp by op family.
#pragma once
#include "../core/backend.h"

namespace nd {

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  // memory.cpp
  void* allocate(size_t nbytes, Device device) override;
  void deallocate(void* p, size_t nbytes, Device device) override;
  void copy(const Tensor& src, Tensor& dst) override;
  void upload(const void* host, Tensor& dst) override;
  void download(const Tensor& src, void* host) override;
  // elementwise.cpp
  void fill(Tensor& out, double value) override;
  void unary(UnaryOp op, const Tensor& x, Tensor& out) override;
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override;
  void affine(const Tensor& x, Tensor& out, double mul, double add, double lo, double hi) override;
  void pow_scalar(const Tensor& x, Tensor& out, double exponent) override;
  // random.cpp
  void randn(Tensor& out, uint64_t seed, uint64_t offset) override;
  // reduce.cpp
  void reduce(ReduceOp op, const Tensor& x, int64_t dim, Tensor& out) override;
  void softmax(const Tensor& x, Tensor& out) override;

  // ---- linear algebra: gemm.cpp, attention.cpp, lora.cpp ----
  void gemm(const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& out, const GemmArgs& args) override;
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse,
                 const AttentionArgs& args) override;
  void lora_merge(const Tensor& base, const std::vector<LoraTerm>& terms, Tensor& w) override;

  // (end of linear algebra)

  // ---- nn kernels: conv.cpp, norm.cpp, resample.cpp, rope.cpp, embedding.cpp ----
  void conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out, const ConvArgs& args) override;
  void conv3d(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out, const ConvArgs& args) override;
  void upsample_nearest(const Tensor& x, Tensor& out, int spatial_dims, bool exact) override;
  void layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out, float eps) override;
  void rms_norm(const Tensor& x, const Tensor& weight, Tensor& out, float eps) override;
  void group_norm(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias, Tensor& out,
                  float eps) override;
  void rope(const Tensor& x, const Tensor& cos, const Tensor& sin, Tensor& out, bool interleaved) override;
  void embedding(const Tensor& weight, const Tensor& ids, Tensor& out) override;

  // channel_norm.cpp
  void normalize_channels(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out, float scale, float eps,
                          Activation act) override;
  // (end of nn kernels)

  // ---- fused DiT elementwise: fused.cpp ----
  void norm_modulate(NormKind kind, const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& shift,
                     const Tensor& scale, Tensor& out, float eps) override;
  void gated_add(const Tensor& x, const Tensor& y, const Tensor& gate, Tensor& out) override;
};

}  // namespace nd
