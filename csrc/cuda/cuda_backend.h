// The CUDA backend: kernels are spread over csrc/cuda/*.cu by op family, like the CPU backend.
// Every kernel runs on the device's compute stream; only download() and synchronize() wait.
#pragma once
#include "../core/backend.h"

namespace nd {

class CudaBackend final : public Backend {
 public:
  const char* name() const override { return "cuda"; }
  // memory.cpp
  void* allocate(size_t nbytes, Device device) override;
  void deallocate(void* p, size_t nbytes, Device device) override;
  void upload(const void* host, Tensor& dst) override;
  void download(const Tensor& src, void* host) override;
  void synchronize(Device device) override;
  // elementwise.cu
  void copy(const Tensor& src, Tensor& dst) override;
  void fill(Tensor& out, double value) override;
  void unary(UnaryOp op, const Tensor& x, Tensor& out) override;
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override;
  void affine(const Tensor& x, Tensor& out, double mul, double add, double lo, double hi) override;
  void pow_scalar(const Tensor& x, Tensor& out, double exponent) override;
  void gated_add(const Tensor& x, const Tensor& y, const Tensor& gate, Tensor& out) override;
  // random.cu
  void randn(Tensor& out, uint64_t seed, uint64_t offset) override;
  // reduce.cu
  void reduce(ReduceOp op, const Tensor& x, int64_t dim, Tensor& out) override;
  void softmax(const Tensor& x, Tensor& out) override;
  // gemm.cpp (cuBLASLt)
  void gemm(const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& out, const GemmArgs& args) override;
  // attention.cu (flash attention, tensor cores) and attention_generic.cu (any head dim / dtype)
  void attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse,
                 const AttentionArgs& args) override;
  // conv.cu (im2col + cuBLASLt)
  void conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out, const ConvArgs& args) override;
  void conv3d(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out, const ConvArgs& args) override;
  // resample.cu
  void upsample_nearest(const Tensor& x, Tensor& out, int spatial_dims, bool exact) override;
  // norm.cu
  void layer_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out, float eps) override;
  void rms_norm(const Tensor& x, const Tensor& weight, Tensor& out, float eps) override;
  void group_norm(const Tensor& x, int64_t groups, const Tensor& weight, const Tensor& bias, Tensor& out,
                  float eps) override;
  void norm_modulate(NormKind kind, const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& shift,
                     const Tensor& scale, Tensor& out, float eps) override;
  // channel_norm.cu
  void normalize_channels(const Tensor& x, const Tensor& weight, const Tensor& bias, Tensor& out, float scale, float eps,
                          Activation act) override;
  // rope.cu
  void rope(const Tensor& x, const Tensor& cos, const Tensor& sin, Tensor& out, bool interleaved) override;
  // embedding.cu
  void embedding(const Tensor& weight, const Tensor& ids, Tensor& out) override;
  // lora.cu
  void lora_merge(const Tensor& base, const std::vector<LoraTerm>& terms, Tensor& w) override;
};

namespace cuda {
// Applies an activation in place (GEMM epilogues cuBLASLt lacks); elementwise.cu.
void activation_inplace(Tensor& t, Activation act);
}  // namespace cuda

}  // namespace nd
