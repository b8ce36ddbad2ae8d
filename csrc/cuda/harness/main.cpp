// nd_cuda_harness: the CUDA checks and the flash-attention timing without Node, for a GPU machine
// where only the C++ toolchain is at hand. Built with -DND_CUDA_HARNESS=ON next to libnd_cuda.so.
//   nd_cuda_harness                 run the CUDA-vs-CPU checks (exit 1 on a failure)
//   nd_cuda_harness --bench [L H]   also time flash attention bf16 [1, H, L, 128] (default 32768, 24)
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "../../core/cuda_loader.h"
#include "../../core/ops.h"

using namespace nd;

namespace {

const Device kCpu{DeviceType::CPU, 0};
const Device kGpu{DeviceType::CUDA, 0};

uint64_t g_seed = 1;

Tensor rand(const Shape& shape, DType dt) { return ops::cast(ops::randn(shape, DType::F32, kCpu, g_seed++, 0), dt); }

Tensor on(const Tensor& t, Device d) { return ops::to_device(t, d); }

// rel-L2 of got against want (both converted to float32 on the host); NaN if a NaN appears.
double rel_l2(const Tensor& want, const Tensor& got) {
  Tensor w = ops::contiguous(ops::cast(on(want, kCpu), DType::F32));
  Tensor g = ops::contiguous(ops::cast(on(got, kCpu), DType::F32));
  if (w.shape != g.shape) return NAN;
  double num = 0, den = 0;
  const float* a = w.ptr<float>();
  const float* b = g.ptr<float>();
  for (int64_t i = 0; i < w.numel(); ++i) {
    if (std::isnan(b[i]) && !std::isnan(a[i])) return NAN;
    if (std::isinf(a[i]) && a[i] == b[i]) continue;
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(a[i]) * a[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

int g_failed = 0;

// Runs op on CPU inputs and on their GPU copies; `inputs` are CPU tensors passed to op moved.
void check(const char* name, DType dt, const std::vector<Tensor>& inputs,
           const std::function<Tensor(const std::vector<Tensor>&)>& op) {
  const double tol = dt == DType::F32 ? 1e-5 : 1e-2;
  double err = NAN;
  std::string note;
  try {
    Tensor want = op(inputs);
    std::vector<Tensor> gin;
    for (const auto& t : inputs) gin.push_back(t.defined() ? on(t, kGpu) : t);
    Tensor got = op(gin);
    backend_for(kGpu).synchronize(kGpu);
    err = rel_l2(want, got);
  } catch (const std::exception& e) {
    note = e.what();
  }
  const bool ok = note.empty() && err <= tol;
  if (!ok) ++g_failed;
  std::printf("%-48s %-9s rel-L2 %-10.3e tol %-7g %s %s\n", name, dtype_name(dt), err, tol, ok ? "ok" : "FAIL",
              note.c_str());
}

void run_checks() {
  for (DType dt : {DType::F32, DType::BF16}) {
    check("matmul [3,77,130] @ [130,65]", dt, {rand({3, 77, 130}, dt), rand({130, 65}, dt)},
          [](const std::vector<Tensor>& t) { return ops::matmul(t[0], t[1]); });
    check("linear + bias + gelu_tanh", dt, {rand({45, 96}, dt), rand({200, 96}, dt), rand({200}, dt)},
          [](const std::vector<Tensor>& t) { return ops::linear(t[0], t[1], t[2], Activation::GeluTanh); });
    for (int D : {64, 128}) {
      AttentionArgs a;
      a.scale = 1.0f / std::sqrt(float(D));
      a.causal = D == 128;
      check(D == 64 ? "attention [2,4,200,64]" : "attention [2,4,200,128] causal", dt,
            {rand({2, 4, 200, D}, dt), rand({2, 4, 230, D}, dt), rand({2, 4, 230, D}, dt)},
            [a](const std::vector<Tensor>& t) { return ops::attention(t[0], t[1], t[2], a, false).first; });
    }
    ConvArgs c;
    c.pad[2] = c.pad[3] = c.pad[4] = c.pad[5] = 1;
    check("conv2d 3x3 pad 1", dt, {rand({2, 12, 19, 23}, dt), rand({16, 12, 3, 3}, dt), rand({16}, dt)},
          [c](const std::vector<Tensor>& t) { return ops::conv2d(t[0], t[1], t[2], c); });
    check("layer norm D=1536", dt, {rand({3, 17, 1536}, dt), rand({1536}, dt), rand({1536}, dt)},
          [](const std::vector<Tensor>& t) { return ops::layer_norm(t[0], t[1], t[2], 1e-6f); });
    check("group norm 8 groups", dt, {rand({2, 32, 3, 9, 10}, dt)},
          [](const std::vector<Tensor>& t) { return ops::group_norm(t[0], 8, Tensor(), Tensor(), 1e-6f); });
    check("rope interleaved", dt, {rand({2, 33, 5, 64}, dt), rand({33, 32}, DType::F32), rand({33, 32}, DType::F32)},
          [](const std::vector<Tensor>& t) { return ops::rope(t[0], t[1], t[2], true); });
    check("normModulate layer + shift/scale", dt,
          {rand({3, 17, 1536}, dt), rand({3, 1, 1536}, dt), rand({3, 17, 1536}, dt)},
          [](const std::vector<Tensor>& t) {
            return ops::norm_modulate(NormKind::Layer, t[0], Tensor(), Tensor(), t[1], t[2], 1e-6f);
          });
    check("loraMerge 2 adapters", dt, {rand({300, 257}, dt), rand({300, 8}, dt), rand({8, 257}, dt)},
          [](const std::vector<Tensor>& t) {
            Tensor out = Tensor::empty(t[0].shape, t[0].dtype, t[0].device());
            ops::lora_merge(t[0], {LoraTerm{t[1], t[2], 0.5f}, LoraTerm{t[1], t[2], -0.25f}}, out);
            return out;
          });
  }
  // Philox noise must be identical
  Tensor a = ops::randn({3, 1001}, DType::F32, kCpu, 42, 7), b = on(ops::randn({3, 1001}, DType::F32, kGpu, 42, 7), kCpu);
  const bool same = std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
  if (!same) ++g_failed;
  std::printf("%-48s %-9s %s\n", "randn bits", "float32", same ? "ok (identical)" : "FAIL (bits differ)");
}

void bench_attention(int64_t L, int64_t H) {
  const int64_t D = 128;
  Tensor q = ops::randn({1, H, L, D}, DType::BF16, kGpu, 1, 0), k = ops::randn({1, H, L, D}, DType::BF16, kGpu, 2, 0),
         v = ops::randn({1, H, L, D}, DType::BF16, kGpu, 3, 0);
  AttentionArgs a;
  a.scale = 1.0f / std::sqrt(float(D));
  Backend& be = backend_for(kGpu);
  ops::attention(q, k, v, a, false);  // warm-up
  be.synchronize(kGpu);
  const int iters = 5;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; ++i) ops::attention(q, k, v, a, false);
  be.synchronize(kGpu);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / iters;
  const double tflops = 4.0 * H * double(L) * L * D / ms / 1e9;
  std::printf("flash attention bf16 [1, %lld, %lld, %lld]: %.2f ms, %.1f TFLOP/s\n", (long long)H, (long long)L,
              (long long)D, ms, tflops);
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* v = std::getenv("ND_CUDA_POISON"); !v) setenv("ND_CUDA_POISON", "1", 1);
  CudaInfo info = cuda_info();
  if (!info.available) {
    std::printf("CUDA tests skipped: no device (%s)\n", info.reason.c_str());
    std::printf("library %s: %s\n", info.library.path.c_str(),
                info.library.loaded ? ("loads, " + info.library.build).c_str() : info.library.error.c_str());
    return 0;
  }
  std::printf("device: %s (sm_%d), %s, cuBLASLt %s\n", info.devices[0].name.c_str(), info.devices[0].sm,
              info.library.build.c_str(), info.cublaslt.empty() ? "not found" : info.cublaslt.c_str());
  run_checks();
  if (argc > 1 && std::strcmp(argv[1], "--bench") == 0) {
    const int64_t L = argc > 2 ? std::atoll(argv[2]) : 32768, H = argc > 3 ? std::atoll(argv[3]) : 24;
    bench_attention(L, H);
  }
  std::printf("%s\n", g_failed ? "FAILED" : "all checks passed");
  return g_failed ? 1 : 0;
}
