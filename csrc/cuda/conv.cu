// 2-D/3-D convolution as im2col + cuBLASLt GEMM: for each batch item and group, output positions
// are processed in chunks whose column matrix fits a bounded workspace (video VAEs would need
// gigabytes otherwise); 1x1 stride-1 convolutions read the input in place. The channel bias is
// added in one pass at the end (cuBLASLt's bias epilogue runs along the other GEMM dimension).
#include <algorithm>
#include <stdexcept>

#include "cublaslt.h"
#include "cuda_backend.h"
#include "kernels.cuh"

namespace nd {

namespace cuda {

// 3-D geometry; 2-D convolutions use depth 1, kernel depth 1, stride/dilation 1, no depth padding.
struct ConvGeom {
  int64_t C, D, H, W;     // input channels (of one group) and sizes
  int64_t kd, kh, kw;
  int64_t sd, sh, sw;
  int64_t pd, ph, pw;     // front/top/left padding
  int64_t dd, dh, dw;
  int64_t Do, Ho, Wo;
};

// col[r, p] for r = (c, z, y, x) of the kernel window and output positions p0 + p, p < P.
__global__ void im2col_kernel(const void* x, DType xt, int64_t x_off, ConvGeom g, int64_t p0, int64_t P, void* col,
                              DType ct) {
  const int64_t K = g.C * g.kd * g.kh * g.kw;
  const int64_t total = K * P;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / P, p = p0 + i % P;
    const int64_t kx = r % g.kw, ky = (r / g.kw) % g.kh, kz = (r / (g.kw * g.kh)) % g.kd, c = r / (g.kw * g.kh * g.kd);
    const int64_t ox = p % g.Wo, oy = (p / g.Wo) % g.Ho, oz = p / (g.Wo * g.Ho);
    const int64_t iz = oz * g.sd - g.pd + kz * g.dd, iy = oy * g.sh - g.ph + ky * g.dh, ix = ox * g.sw - g.pw + kx * g.dw;
    float v = 0.0f;
    if (iz >= 0 && iz < g.D && iy >= 0 && iy < g.H && ix >= 0 && ix < g.W)
      v = load_float(x, xt, x_off + ((c * g.D + iz) * g.H + iy) * g.W + ix);
    store_float(col, ct, i, v);
  }
}

// out[n, o, p] += bias[o] over a contiguous [N, O, P] tensor.
__global__ void channel_bias_kernel(void* out, DType ot, int64_t total, int64_t O, int64_t P, const void* bias,
                                    DType bt) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = (i / P) % O;
    store_float(out, ot, i, load_float(out, ot, i) + load_float(bias, bt, o));
  }
}

constexpr int kThreads = 256;
constexpr int64_t kColBudgetBytes = int64_t(256) << 20;

void conv_nd(CudaBackend& be, const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out, const ConvArgs& args,
             int spatial) {
  for (const Tensor* t : {&x, &w}) require_float_dtype(*t, "conv");
  require_float_dtype(out, "conv");
  if (!x.is_contiguous() || !out.is_contiguous()) throw std::invalid_argument("conv needs contiguous input and output");
  const int64_t N = x.shape[0], Cin = x.shape[1], O = out.shape[1], groups = args.groups;
  if (groups < 1 || Cin % groups != 0 || O % groups != 0)
    throw std::invalid_argument("conv: channels are not divisible by groups");
  ConvGeom g;
  g.C = Cin / groups;
  if (spatial == 3) {
    g.D = x.shape[2], g.H = x.shape[3], g.W = x.shape[4];
    g.kd = w.shape[2], g.kh = w.shape[3], g.kw = w.shape[4];
    g.sd = args.stride[0], g.sh = args.stride[1], g.sw = args.stride[2];
    g.pd = args.pad[0], g.ph = args.pad[2], g.pw = args.pad[4];
    g.dd = args.dilation[0], g.dh = args.dilation[1], g.dw = args.dilation[2];
    g.Do = out.shape[2], g.Ho = out.shape[3], g.Wo = out.shape[4];
  } else {
    g.D = 1, g.H = x.shape[2], g.W = x.shape[3];
    g.kd = 1, g.kh = w.shape[2], g.kw = w.shape[3];
    // ConvArgs keeps the trailing spatial dims: 2-D values at stride/dilation [1], [2] and pad [2..5]
    g.sd = 1, g.sh = args.stride[1], g.sw = args.stride[2];
    g.pd = 0, g.ph = args.pad[2], g.pw = args.pad[4];
    g.dd = 1, g.dh = args.dilation[1], g.dw = args.dilation[2];
    g.Do = 1, g.Ho = out.shape[2], g.Wo = out.shape[3];
  }
  const int64_t P = g.Do * g.Ho * g.Wo, Og = O / groups;
  const int64_t K = g.C * g.kd * g.kh * g.kw;
  if (N == 0 || O == 0 || P == 0) return;
  DeviceContext& ctx = ctx_for(out);
  if (K == 0) {
    if (bias.defined()) {
      Tensor b3 = bias.reshape_view({1, O, 1});
      Tensor o3 = out.reshape_view({N, O, P});
      be.copy(b3.expand(o3.shape), o3);
    } else {
      be.fill(out, 0.0);
    }
    return;
  }

  // compute dtype: the common dtype of input and weight, float32 when they differ
  const DType ct = x.dtype == w.dtype ? x.dtype : DType::F32;
  Tensor wc = w;
  if (w.dtype != ct || !w.is_contiguous()) {
    wc = Tensor::empty(w.shape, ct, w.device());
    be.copy(w, wc);
  }
  const bool direct = out.dtype == ct || out.dtype == DType::F32;
  Tensor res = direct ? out : Tensor::empty(out.shape, ct, out.device());
  const int64_t esz = dtype_size(ct), dsz = dtype_size(res.dtype);

  const bool pointwise = K == g.C && g.sd == 1 && g.sh == 1 && g.sw == 1 && g.pd == 0 && g.ph == 0 && g.pw == 0 &&
                         g.Do == g.D && g.Ho == g.H && g.Wo == g.W;
  Tensor xc = x;
  if (pointwise && x.dtype != ct) {
    xc = Tensor::empty(x.shape, ct, x.device());
    be.copy(x, xc);
  }
  int64_t chunk = std::max<int64_t>(1, kColBudgetBytes / (K * esz));
  if (chunk < P) chunk = std::max<int64_t>(chunk / 64 * 64, 64);  // keep GEMM tiles full
  chunk = std::min(chunk, P);
  Tensor col;
  if (!pointwise) col = Tensor::empty({K * chunk}, ct, out.device());

  const int64_t in_per_item = Cin * g.D * g.H * g.W;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t gi = 0; gi < groups; ++gi) {
      MatOperand a;  // weights of the group [Og, K]
      a.ptr = static_cast<const char*>(wc.data()) + gi * Og * K * esz;
      a.dtype = ct;
      a.rows = Og, a.cols = K, a.row_stride = K, a.col_stride = 1;
      const int64_t x_off = n * in_per_item + gi * g.C * g.D * g.H * g.W;  // elements
      for (int64_t p0 = 0; p0 < P; p0 += chunk) {
        const int64_t pc = std::min(chunk, P - p0);
        MatOperand b;  // columns [K, pc]
        b.dtype = ct;
        b.rows = K, b.cols = pc, b.col_stride = 1;
        if (pointwise) {
          b.ptr = static_cast<const char*>(xc.data()) + (x_off + p0) * esz;
          b.row_stride = P;
        } else {
          im2col_kernel<<<grid_for(K * pc, kThreads), kThreads, 0, ctx.compute>>>(x.data(), x.dtype, x_off, g, p0, pc,
                                                                                   col.data(), ct);
          ND_CUDA_CHECK_LAUNCH("im2col_kernel");
          b.ptr = col.data();
          b.row_stride = pc;
        }
        MatmulOut d;
        d.ptr = static_cast<char*>(res.data()) + ((n * O + gi * Og) * P + p0) * dsz;
        d.dtype = res.dtype;
        d.row_stride = P;
        lt_matmul(ctx, a, b, d, 1, nullptr, Activation::None, 1.0f);
      }
    }
  }
  if (bias.defined()) {
    if (bias.numel() != O) throw std::invalid_argument("conv bias must have " + std::to_string(O) + " elements");
    Tensor bc = bias;
    if (!bias.is_contiguous()) {
      bc = Tensor::empty(bias.shape, bias.dtype, bias.device());
      be.copy(bias, bc);
    }
    const int64_t total = N * O * P;
    channel_bias_kernel<<<grid_for(total, kThreads), kThreads, 0, ctx.compute>>>(res.data(), res.dtype, total, O, P,
                                                                                  bc.data(), bc.dtype);
    ND_CUDA_CHECK_LAUNCH("channel_bias_kernel");
  }
  if (!direct) be.copy(res, out);
}

}  // namespace cuda

void CudaBackend::conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out, const ConvArgs& args) {
  if (x.dim() != 4 || w.dim() != 4 || out.dim() != 4) throw std::invalid_argument("conv2d expects 4-D x, w and out");
  cuda::conv_nd(*this, x, w, bias, out, args, 2);
}

void CudaBackend::conv3d(const Tensor& x, const Tensor& w, const Tensor& bias, Tensor& out, const ConvArgs& args) {
  if (x.dim() != 5 || w.dim() != 5 || out.dim() != 5) throw std::invalid_argument("conv3d expects 5-D x, w and out");
  cuda::conv_nd(*this, x, w, bias, out, args, 3);
}

}  // namespace nd
