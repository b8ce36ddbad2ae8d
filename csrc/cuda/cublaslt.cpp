// cuBLASLt bindings (dlopen) and the matmul helper used by gemm and conv.
#include "cublaslt.h"

#include <dlfcn.h>
#include <library_types.h>

#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "../core/cuda_loader.h"

namespace nd::cuda {

namespace {

// ---- the cuBLASLt ABI subset used here (values from cublasLt.h / cublas_api.h) ----
using LtStatus = int;
using LtHandle = void*;
using LtMatmulDesc = void*;
using LtLayout = void*;
using LtPreference = void*;
struct LtAlgo {
  uint64_t data[8];
};
struct LtHeuristicResult {
  LtAlgo algo;
  size_t workspace_size;
  LtStatus state;
  float waves_count;
  int reserved[4];
};

constexpr int kComputeF32 = 68;  // CUBLAS_COMPUTE_32F (no TF32: float32 GEMMs stay exact to 1e-6)
constexpr int kOpN = 0, kOpT = 1;
// cublasLtMatmulDescAttributes_t
constexpr int kDescTransA = 3, kDescTransB = 4, kDescEpilogue = 7, kDescBiasPointer = 8;
// cublasLtMatrixLayoutAttribute_t
constexpr int kLayoutBatchCount = 5, kLayoutBatchOffset = 6;
// cublasLtMatmulPreferenceAttributes_t
constexpr int kPrefMaxWorkspace = 1, kPrefAlignA = 5, kPrefAlignB = 6, kPrefAlignC = 7, kPrefAlignD = 8;
// cublasLtEpilogue_t
constexpr uint32_t kEpiDefault = 1, kEpiRelu = 2, kEpiBias = 4, kEpiGelu = 32;

struct LtApi {
  std::string path;
  LtStatus (*create)(LtHandle*) = nullptr;
  LtStatus (*desc_create)(LtMatmulDesc*, int compute, int scale) = nullptr;
  LtStatus (*desc_destroy)(LtMatmulDesc) = nullptr;
  LtStatus (*desc_set)(LtMatmulDesc, int attr, const void* buf, size_t size) = nullptr;
  LtStatus (*layout_create)(LtLayout*, int type, uint64_t rows, uint64_t cols, int64_t ld) = nullptr;
  LtStatus (*layout_destroy)(LtLayout) = nullptr;
  LtStatus (*layout_set)(LtLayout, int attr, const void* buf, size_t size) = nullptr;
  LtStatus (*pref_create)(LtPreference*) = nullptr;
  LtStatus (*pref_destroy)(LtPreference) = nullptr;
  LtStatus (*pref_set)(LtPreference, int attr, const void* buf, size_t size) = nullptr;
  LtStatus (*heuristic)(LtHandle, LtMatmulDesc, LtLayout, LtLayout, LtLayout, LtLayout, LtPreference, int requested,
                        LtHeuristicResult* results, int* returned) = nullptr;
  LtStatus (*matmul)(LtHandle, LtMatmulDesc, const void* alpha, const void* A, LtLayout Adesc, const void* B,
                     LtLayout Bdesc, const void* beta, const void* C, LtLayout Cdesc, void* D, LtLayout Ddesc,
                     const LtAlgo* algo, void* workspace, size_t workspace_size, cudaStream_t stream) = nullptr;
  const char* (*status_string)(LtStatus) = nullptr;
};

template <class F>
void bind(void* h, const char* name, F& fn, const std::string& path) {
  fn = reinterpret_cast<F>(dlsym(h, name));
  if (!fn) throw std::runtime_error(path + " lacks " + name);
}

const LtApi& api() {
  static LtApi a;
  static std::string error;
  static std::once_flag once;
  std::call_once(once, [] {
    try {
      a.path = find_cublaslt();
      if (a.path.empty())
        throw std::runtime_error(
            "cuBLASLt was not found (looked for libcublasLt.so.13/.12 on the loader path, in the CUDA toolkit and in "
            "Python's nvidia wheels); install the CUDA toolkit's libcublas, `pip install nvidia-cublas`, or set "
            "ND_CUBLASLT_PATH");
      void* h = dlopen(a.path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!h) throw std::runtime_error("loading " + a.path + " failed: " + dlerror());
      bind(h, "cublasLtCreate", a.create, a.path);
      bind(h, "cublasLtMatmulDescCreate", a.desc_create, a.path);
      bind(h, "cublasLtMatmulDescDestroy", a.desc_destroy, a.path);
      bind(h, "cublasLtMatmulDescSetAttribute", a.desc_set, a.path);
      bind(h, "cublasLtMatrixLayoutCreate", a.layout_create, a.path);
      bind(h, "cublasLtMatrixLayoutDestroy", a.layout_destroy, a.path);
      bind(h, "cublasLtMatrixLayoutSetAttribute", a.layout_set, a.path);
      bind(h, "cublasLtMatmulPreferenceCreate", a.pref_create, a.path);
      bind(h, "cublasLtMatmulPreferenceDestroy", a.pref_destroy, a.path);
      bind(h, "cublasLtMatmulPreferenceSetAttribute", a.pref_set, a.path);
      bind(h, "cublasLtMatmulAlgoGetHeuristic", a.heuristic, a.path);
      bind(h, "cublasLtMatmul", a.matmul, a.path);
      a.status_string = reinterpret_cast<const char* (*)(LtStatus)>(dlsym(h, "cublasLtGetStatusString"));
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  if (!error.empty()) throw std::runtime_error(error);
  return a;
}

void lt_check(LtStatus s, const char* what) {
  if (s == 0) return;
  const char* str = api().status_string ? api().status_string(s) : nullptr;
  throw std::runtime_error(std::string("cuBLASLt ") + what + " failed: " +
                           (str ? str : ("status " + std::to_string(s)).c_str()));
}

int lt_type(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::F16: return CUDA_R_16F;
    case DType::BF16: return CUDA_R_16BF;
    default: throw std::invalid_argument(std::string("cuBLASLt matmul does not take ") + dtype_name(t));
  }
}

}  // namespace

// Per-device cuBLASLt state: handle, workspace, heuristic results by problem.
struct LtState {
  LtHandle handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_size = size_t(32) << 20;
  std::unordered_map<std::string, LtAlgo> algos;
};

const char* lt_library_path() { return api().path.c_str(); }

bool lt_can_read(const MatOperand& m) {
  const bool row_major = (m.cols == 1 || m.col_stride == 1) && (m.rows == 1 || m.row_stride >= m.cols);
  const bool col_major = (m.rows == 1 || m.row_stride == 1) && (m.cols == 1 || m.col_stride >= m.rows);
  return (row_major || col_major) && m.batch_stride >= 0;
}

namespace {

// cuBLASLt layout of an operand: column-major (rows, cols, ld) plus whether it must be transposed.
struct Layout {
  uint64_t rows, cols;
  int64_t ld;
  int op;
};

// The column-major matrix M^T for a row-major-semantics operand M (used for b -> A' and a -> B').
Layout transposed_view(const MatOperand& m) {
  const bool row_major = (m.cols == 1 || m.col_stride == 1) && (m.rows == 1 || m.row_stride >= m.cols);
  if (row_major)  // memory is column-major (cols x rows) = M^T directly
    return Layout{static_cast<uint64_t>(m.cols), static_cast<uint64_t>(m.rows), m.rows == 1 ? m.cols : m.row_stride,
                  kOpN};
  // column-major M (rows x cols, ld = col_stride): transpose inside cuBLASLt
  return Layout{static_cast<uint64_t>(m.rows), static_cast<uint64_t>(m.cols), m.cols == 1 ? m.rows : m.col_stride,
                kOpT};
}

int alignment_of(const void* p, int64_t batch_stride_bytes, int64_t batch) {
  int al = pointer_alignment(p);
  if (batch > 1 && batch_stride_bytes != 0)
    al = std::min(al, pointer_alignment(reinterpret_cast<const void*>(static_cast<uintptr_t>(batch_stride_bytes))));
  return al;
}

struct LayoutHolder {
  LtLayout h = nullptr;
  ~LayoutHolder() {
    if (h) api().layout_destroy(h);
  }
};

}  // namespace

void lt_matmul(DeviceContext& ctx, const MatOperand& a, const MatOperand& b, const MatmulOut& d, int64_t batch,
               const void* bias, Activation act, float alpha) {
  const LtApi& L = api();
  if (a.dtype != b.dtype) throw std::invalid_argument("lt_matmul: operands of different dtypes");
  if (!lt_can_read(a) || !lt_can_read(b)) throw std::invalid_argument("lt_matmul: operand layout cuBLASLt cannot read");
  const int64_t m = a.rows, k = a.cols, n = b.cols;
  if (b.rows != k) throw std::invalid_argument("lt_matmul: inner dimensions differ");
  if (d.dtype != a.dtype && d.dtype != DType::F32) throw std::invalid_argument("lt_matmul: unsupported output dtype");

  std::lock_guard<std::mutex> lock(ctx.lt_mu);
  if (!ctx.lt) {
    auto* st = new LtState();
    lt_check(L.create(&st->handle), "cublasLtCreate");
    st->workspace = ctx.allocator.allocate(st->workspace_size);
    ctx.lt = st;
  }
  LtState& st = *ctx.lt;

  // Row-major D [m, n] is column-major D^T [n, m]; D^T = b^T a^T, so A' = b^T and B' = a^T.
  const Layout la = transposed_view(b), lb = transposed_view(a);
  const int ta = lt_type(a.dtype), td = lt_type(d.dtype);
  uint32_t epi = act == Activation::Relu ? kEpiRelu : (act == Activation::GeluTanh ? kEpiGelu : kEpiDefault);
  if (act != Activation::None && act != Activation::Relu && act != Activation::GeluTanh)
    throw std::invalid_argument("lt_matmul: activation without a cuBLASLt epilogue");
  if (bias) epi = (epi == kEpiDefault ? 0u : epi) | kEpiBias;

  LtMatmulDesc desc = nullptr;
  lt_check(L.desc_create(&desc, kComputeF32, CUDA_R_32F), "cublasLtMatmulDescCreate");
  struct DescGuard {
    LtMatmulDesc d;
    ~DescGuard() { api().desc_destroy(d); }
  } desc_guard{desc};
  const int32_t opa = la.op, opb = lb.op;
  lt_check(L.desc_set(desc, kDescTransA, &opa, sizeof(opa)), "set TRANSA");
  lt_check(L.desc_set(desc, kDescTransB, &opb, sizeof(opb)), "set TRANSB");
  lt_check(L.desc_set(desc, kDescEpilogue, &epi, sizeof(epi)), "set EPILOGUE");
  if (bias) lt_check(L.desc_set(desc, kDescBiasPointer, &bias, sizeof(bias)), "set BIAS_POINTER");

  LayoutHolder A, B, D;
  lt_check(L.layout_create(&A.h, ta, la.rows, la.cols, la.ld), "layout A");
  lt_check(L.layout_create(&B.h, ta, lb.rows, lb.cols, lb.ld), "layout B");
  lt_check(L.layout_create(&D.h, td, static_cast<uint64_t>(n), static_cast<uint64_t>(m), d.row_stride), "layout D");
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    const int64_t sa = b.batch_stride, sb = a.batch_stride, sd = d.batch_stride;
    for (LtLayout h : {A.h, B.h, D.h}) lt_check(L.layout_set(h, kLayoutBatchCount, &count, sizeof(count)), "batch count");
    lt_check(L.layout_set(A.h, kLayoutBatchOffset, &sa, sizeof(sa)), "batch stride A");
    lt_check(L.layout_set(B.h, kLayoutBatchOffset, &sb, sizeof(sb)), "batch stride B");
    lt_check(L.layout_set(D.h, kLayoutBatchOffset, &sd, sizeof(sd)), "batch stride D");
  }

  const int64_t esz = dtype_size(a.dtype), dsz = dtype_size(d.dtype);
  const uint32_t align_a = alignment_of(b.ptr, b.batch_stride * esz, batch);
  const uint32_t align_b = alignment_of(a.ptr, a.batch_stride * esz, batch);
  const uint32_t align_d = alignment_of(d.ptr, d.batch_stride * dsz, batch);
  const int bias_align = bias ? pointer_alignment(bias) : 256;

  std::string key;
  key.reserve(160);
  for (int64_t v : {int64_t(ta), int64_t(td), int64_t(la.rows), int64_t(la.cols), la.ld, int64_t(la.op),
                    int64_t(lb.rows), int64_t(lb.cols), lb.ld, int64_t(lb.op), n, m, d.row_stride, batch,
                    b.batch_stride, a.batch_stride, d.batch_stride, int64_t(epi), int64_t(align_a),
                    int64_t(align_b), int64_t(align_d), int64_t(bias_align)}) {
    key += std::to_string(v);
    key += ',';
  }
  auto it = st.algos.find(key);
  if (it == st.algos.end()) {
    LtPreference pref = nullptr;
    lt_check(L.pref_create(&pref), "cublasLtMatmulPreferenceCreate");
    struct PrefGuard {
      LtPreference p;
      ~PrefGuard() { api().pref_destroy(p); }
    } pref_guard{pref};
    const uint64_t ws = st.workspace_size;
    lt_check(L.pref_set(pref, kPrefMaxWorkspace, &ws, sizeof(ws)), "set MAX_WORKSPACE_BYTES");
    lt_check(L.pref_set(pref, kPrefAlignA, &align_a, sizeof(align_a)), "set MIN_ALIGNMENT_A");
    lt_check(L.pref_set(pref, kPrefAlignB, &align_b, sizeof(align_b)), "set MIN_ALIGNMENT_B");
    lt_check(L.pref_set(pref, kPrefAlignC, &align_d, sizeof(align_d)), "set MIN_ALIGNMENT_C");
    lt_check(L.pref_set(pref, kPrefAlignD, &align_d, sizeof(align_d)), "set MIN_ALIGNMENT_D");
    LtHeuristicResult result;
    std::memset(&result, 0, sizeof(result));
    int returned = 0;
    lt_check(L.heuristic(st.handle, desc, A.h, B.h, D.h, D.h, pref, 1, &result, &returned),
             "cublasLtMatmulAlgoGetHeuristic");
    if (returned == 0 || result.state != 0)
      throw std::runtime_error("cuBLASLt has no algorithm for a " + std::string(dtype_name(a.dtype)) + " matmul [" +
                               std::to_string(m) + ", " + std::to_string(k) + "] @ [" + std::to_string(k) + ", " +
                               std::to_string(n) + "] (batch " + std::to_string(batch) + ")");
    it = st.algos.emplace(key, result.algo).first;
  }
  const float beta = 0.0f;
  lt_check(L.matmul(st.handle, desc, &alpha, b.ptr, A.h, a.ptr, B.h, &beta, d.ptr, D.h, d.ptr, D.h, &it->second,
                    st.workspace, st.workspace_size, ctx.compute),
           "cublasLtMatmul");
}

}  // namespace nd::cuda
