#include "backend.h"

#include <stdexcept>

#include "cuda_loader.h"

namespace nd {

static Backend* g_cuda = nullptr;

void set_cuda_backend(Backend* be) { g_cuda = be; }
Backend* cuda_backend() { return g_cuda; }

Backend& backend_for(Device device) {
  if (device.type == DeviceType::CPU) return cpu_backend();
  if (!g_cuda) require_cuda_backend();  // loads the CUDA library on first use, or throws the reason
  return *g_cuda;
}

void Backend::unsupported(const char* op) const {
  throw std::runtime_error(std::string("op '") + op + "' is not implemented on the " + name() + " backend");
}

void Backend::copy(const Tensor&, Tensor&) { unsupported("copy"); }
void Backend::upload(const void*, Tensor&) { unsupported("upload"); }
void Backend::download(const Tensor&, void*) { unsupported("download"); }
void Backend::synchronize(Device) {}
void Backend::fill(Tensor&, double) { unsupported("fill"); }
void Backend::randn(Tensor&, uint64_t, uint64_t) { unsupported("randn"); }
void Backend::unary(UnaryOp, const Tensor&, Tensor&) { unsupported("unary"); }
void Backend::binary(BinaryOp, const Tensor&, const Tensor&, Tensor&) { unsupported("binary"); }
void Backend::affine(const Tensor&, Tensor&, double, double, double, double) { unsupported("affine"); }
void Backend::pow_scalar(const Tensor&, Tensor&, double) { unsupported("pow_scalar"); }
void Backend::reduce(ReduceOp, const Tensor&, int64_t, Tensor&) { unsupported("reduce"); }
void Backend::softmax(const Tensor&, Tensor&) { unsupported("softmax"); }
void Backend::gemm(const Tensor&, const Tensor&, const Tensor&, Tensor&, const GemmArgs&) { unsupported("gemm"); }
void Backend::attention(const Tensor&, const Tensor&, const Tensor&, Tensor&, Tensor&, const AttentionArgs&) {
  unsupported("attention");
}
void Backend::conv2d(const Tensor&, const Tensor&, const Tensor&, Tensor&, const ConvArgs&) { unsupported("conv2d"); }
void Backend::conv3d(const Tensor&, const Tensor&, const Tensor&, Tensor&, const ConvArgs&) { unsupported("conv3d"); }
void Backend::upsample_nearest(const Tensor&, Tensor&, int, bool) { unsupported("upsample_nearest"); }
void Backend::layer_norm(const Tensor&, const Tensor&, const Tensor&, Tensor&, float) { unsupported("layer_norm"); }
void Backend::rms_norm(const Tensor&, const Tensor&, Tensor&, float) { unsupported("rms_norm"); }
void Backend::group_norm(const Tensor&, int64_t, const Tensor&, const Tensor&, Tensor&, float) {
  unsupported("group_norm");
}
void Backend::normalize_channels(const Tensor&, const Tensor&, const Tensor&, Tensor&, float, float, Activation) {
  unsupported("normalize_channels");
}
void Backend::rope(const Tensor&, const Tensor&, const Tensor&, Tensor&, bool) { unsupported("rope"); }
void Backend::norm_modulate(NormKind, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, Tensor&,
                            float) {
  unsupported("norm_modulate");
}
void Backend::gated_add(const Tensor&, const Tensor&, const Tensor&, Tensor&) { unsupported("gated_add"); }
void Backend::embedding(const Tensor&, const Tensor&, Tensor&) { unsupported("embedding"); }
void Backend::lora_merge(const Tensor&, const std::vector<LoraTerm>&, Tensor&) { unsupported("lora_merge"); }

}  // namespace nd
