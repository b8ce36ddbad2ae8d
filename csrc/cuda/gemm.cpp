// Batched GEMM through cuBLASLt: operands are read in place when cuBLASLt can address them
// (either unit stride; batch stride 0 broadcasts), bias and ReLU/GELU-tanh run as cuBLASLt
// epilogues, GELU-erf and SiLU as one extra elementwise pass.
#include <stdexcept>

#include "cublaslt.h"
#include "cuda_backend.h"

namespace nd {

using cuda::MatOperand;

static MatOperand operand_of(const Tensor& t, int64_t batch) {
  MatOperand m;
  m.ptr = t.data();
  m.dtype = t.dtype;
  m.rows = t.shape[1];
  m.cols = t.shape[2];
  m.row_stride = t.strides[1];
  m.col_stride = t.strides[2];
  m.batch_stride = (t.shape[0] == 1 || batch == 1) ? 0 : t.strides[0];
  return m;
}

// `t` in dtype `dt` and in a layout cuBLASLt reads (a contiguous copy when needed).
static Tensor readable(const Tensor& t, DType dt, int64_t batch, CudaBackend& be) {
  if (t.dtype == dt && cuda::lt_can_read(operand_of(t, batch))) return t;
  Tensor c = Tensor::empty(t.shape, dt, t.device());
  be.copy(t, c);
  return c;
}

void CudaBackend::gemm(const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& out, const GemmArgs& args) {
  if (a.dim() != 3 || b.dim() != 3 || out.dim() != 3 || !out.is_contiguous())
    throw std::invalid_argument("gemm expects a [Bt,M,K], b [Bt,K,N] and a contiguous out [Bt,M,N]");
  for (const Tensor* t : {&a, &b}) cuda::require_float_dtype(*t, "gemm");
  cuda::require_float_dtype(out, "gemm");
  const int64_t batch = out.shape[0], m = out.shape[1], n = out.shape[2], k = a.shape[2];
  if (batch == 0 || m == 0 || n == 0) return;
  cuda::DeviceContext& ctx = cuda::ctx_for(out);

  if (k == 0) {  // empty product: out = act(bias) or act(0)
    if (bias.defined()) copy(bias.expand(out.shape), out);
    else fill(out, 0.0);
    cuda::activation_inplace(out, args.act);
    return;
  }

  // float32 when the operand dtypes differ (no precision is dropped), else their common dtype
  const DType ct = a.dtype == b.dtype ? a.dtype : DType::F32;
  Tensor A = readable(a, ct, batch, *this), B = readable(b, ct, batch, *this);
  MatOperand oa = operand_of(A, batch), ob = operand_of(B, batch);
  int64_t rows = m, count = batch;
  // x[Bt, M, K] @ w[K, N] with a broadcast weight and uniformly strided rows: one [Bt*M, K] GEMM
  if (batch > 1 && ob.batch_stride == 0 && oa.col_stride == 1 && oa.batch_stride == m * oa.row_stride) {
    rows = batch * m;
    count = 1;
    oa.rows = rows;
    oa.batch_stride = 0;
  }

  // cuBLASLt writes ct or float32; other output dtypes get a temporary
  const bool direct = out.dtype == ct || out.dtype == DType::F32;
  Tensor D = direct ? out : Tensor::empty(out.shape, ct, out.device());
  cuda::MatmulOut od;
  od.ptr = D.data();
  od.dtype = D.dtype;
  od.row_stride = n;
  od.batch_stride = count > 1 ? m * n : 0;

  Tensor bias_v;
  if (bias.defined()) {
    if (bias.numel() != n) throw std::invalid_argument("gemm bias must have " + std::to_string(n) + " elements");
    bias_v = bias;
    if (bias.dtype != D.dtype || !bias.is_contiguous()) {
      bias_v = Tensor::empty({n}, D.dtype, out.device());
      copy(bias.reshape_view({n}), bias_v);
    }
  }
  const bool epilogue_act = args.act == Activation::None || args.act == Activation::Relu ||
                            args.act == Activation::GeluTanh;
  cuda::lt_matmul(ctx, oa, ob, od, count, bias_v.defined() ? bias_v.data() : nullptr,
                  epilogue_act ? args.act : Activation::None, args.alpha);
  if (!epilogue_act) cuda::activation_inplace(D, args.act);
  if (!direct) copy(D, out);
}

}  // namespace nd
