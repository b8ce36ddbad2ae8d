// The CPU GEMM engine (gemm.cpp) as a C++ API for other CPU kernels (attention, LoRA merge,
// convolution): a packed, cache-blocked GEMM with a SIMD micro-kernel chosen at run time
// (AVX-512, AVX2+FMA or portable), and its packing routines and micro-kernel for kernels that
// drive the blocking themselves (flash attention).
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "../core/backend.h"
#include "../core/dtype.h"

namespace nd::cpu {

// A read-only strided matrix operand: element (i, j) is at data[i * rs + j * cs] (in elements).
struct MatRef {
  const void* data = nullptr;
  DType dtype = DType::F32;  // float32, bfloat16 or float16
  int64_t rs = 0, cs = 1;
};

struct GemmEpilogue {
  const float* bias = nullptr;  // [N] float32, or null
  Activation act = Activation::None;
  // false: C = act(alpha * A@B + bias); true: C = act(C + alpha * A@B + bias)
  bool accumulate = false;
  float alpha = 1.0f;
};

// C[M, N] float32 with row stride ldc (unit column stride). Multithreaded over the pool;
// runs on the calling thread only when called from inside a pool task.
void gemm(int64_t M, int64_t N, int64_t K, const MatRef& a, const MatRef& b, float* c, int64_t ldc,
          const GemmEpilogue& ep);

// ---- building blocks ----

// Computes an MR x NR tile: c = (load ? c : 0) + sum_k a[k*MR + i] * b[k*NR + j].
using MicroKernelFn = void (*)(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool load);

struct MicroKernel {
  int mr, nr;
  MicroKernelFn fn;
  const char* name;  // "avx512", "avx2" or "generic"
};

// The fastest micro-kernel this CPU supports (chosen once).
const MicroKernel& micro_kernel();
// The same kernel family with the row count that pads m least (AVX-512: 12 rows where m is a
// multiple of 12 but not of 14, as for 96/192/384 output channels; otherwise micro_kernel()).
const MicroKernel& micro_kernel_for_rows(int64_t m);

// Largest tile any micro-kernel computes (mr x nr floats).
constexpr int kMaxTile = 14 * 32;

// One tile of C (rows x cols, at most mr x nr; ldc apart) through the micro-kernel: c = (load ? c
// : 0) + packed A panel x packed B panel over depth kc. A partial tile goes through `edge`
// (kMaxTile floats) so the kernel never touches memory outside C.
inline void run_tile(const MicroKernel& uk, int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                     int64_t rows, int64_t cols, bool load, float* edge) {
  if (rows == uk.mr && cols == uk.nr) {
    uk.fn(kc, a, b, c, ldc, load);
    return;
  }
  if (load)
    for (int64_t r = 0; r < rows; ++r) std::memcpy(edge + r * uk.nr, c + r * ldc, cols * sizeof(float));
  uk.fn(kc, a, b, edge, uk.nr, load);
  for (int64_t r = 0; r < rows; ++r) std::memcpy(c + r * ldc, edge + r * uk.nr, cols * sizeof(float));
}

// Packs rows [0, m) x cols [0, kc) of `a` (scaled by alpha) into ceil(m/MR) panels of kc x MR
// floats (k-major), zero-padding the last panel's missing rows. dst holds round_up(m, MR) * kc.
void pack_a(const MatRef& a, int64_t m, int64_t kc, float alpha, int mr, float* dst);
// Packs rows [0, kc) x cols [0, n) of `b` into ceil(n/NR) panels of kc x NR floats (k-major),
// zero-padding the last panel's missing columns. dst holds round_up(n, NR) * kc.
void pack_b(const MatRef& b, int64_t kc, int64_t n, int nr, float* dst);
// Packs panels [p0, p1) only (for splitting one packing job over threads).
void pack_b_panels(const MatRef& b, int64_t kc, int64_t n, int nr, int64_t p0, int64_t p1, float* dst);

// Applies bias + activation to a row of n values in place.
void apply_epilogue_row(float* c, int64_t n, const float* bias, Activation act);

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// 64-byte aligned float scratch that only grows (one per thread via thread_local).
class ScratchBuffer {
 public:
  float* get(int64_t n) {
    if (n > cap_) {
      void* p = nullptr;
      if (posix_memalign(&p, 64, static_cast<size_t>(n) * sizeof(float)) != 0) throw std::bad_alloc();
      buf_.reset(static_cast<float*>(p));
      cap_ = n;
    }
    return buf_.get();
  }

 private:
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> buf_;
  int64_t cap_ = 0;
};

}  // namespace nd::cpu

namespace nd::cpu {

struct FmaPeak {
  double wall_gflops;  // all threads' FMAs over the wall time
  double core_gflops;  // FMAs per CPU-second of one thread: one core's rate when it runs
};

// Single-precision FMA throughput of `threads` threads running register-resident FMA chains
// for about `seconds` (fma_peak.cpp; the ceiling `npm run bench` reports against).
FmaPeak measure_fma_peak(int threads, double seconds);

}  // namespace nd::cpu
