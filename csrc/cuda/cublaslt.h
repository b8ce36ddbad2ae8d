// Matrix products through cuBLASLt, opened with dlopen at run time (nd::find_cublaslt()). The
// few entry points used are declared in cublaslt.cpp; no cuBLAS headers are needed to build.
#pragma once
#include <cstdint>

#include "../core/backend.h"
#include "runtime.h"

namespace nd::cuda {

// A row-major-semantics matrix [rows, cols] in device memory: element (r, c) of batch item b
// lives at ptr + b * batch_stride + r * row_stride + c * col_stride (in elements).
struct MatOperand {
  const void* ptr = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
  int64_t row_stride = 0, col_stride = 0;
  int64_t batch_stride = 0;
};

// Whether cuBLASLt can read the operand in place (a unit stride along one dim and a leading
// dimension that does not overlap rows/columns).
bool lt_can_read(const MatOperand& m);

struct MatmulOut {
  void* ptr = nullptr;
  DType dtype = DType::F32;
  int64_t row_stride = 0;    // >= n
  int64_t batch_stride = 0;
};

// d[b] = act(alpha * a[b] @ b[b] + bias) for b < batch; a [m, k], b [k, n], d [m, n].
// a and b share one dtype (f32, f16 or bf16; fp32 accumulation); d has that dtype or f32;
// bias (may be null) is a contiguous [n] vector of d's dtype; act is None, Relu or GeluTanh
// (the epilogues cuBLASLt offers). Runs on the compute stream of ctx.
void lt_matmul(DeviceContext& ctx, const MatOperand& a, const MatOperand& b, const MatmulOut& d, int64_t batch,
               const void* bias, Activation act, float alpha);

// The path of the cuBLASLt library in use (loads it on first call; throws when it is missing).
const char* lt_library_path();

}  // namespace nd::cuda
