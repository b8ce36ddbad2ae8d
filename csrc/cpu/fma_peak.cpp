// Measures the machine's single-precision FMA throughput with register-resident loops (the
// ceiling the GEMM benchmark compares against): independent accumulator chains, enough to
// cover FMA latency on every pipe, in the widest vector ISA the CPU has.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gemm.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define ND_X86 1
#endif

namespace nd::cpu {

namespace {

constexpr int kChains = 12;

#ifdef ND_X86
// Returns flops done; `sink` keeps the results alive.
__attribute__((target("avx512f"))) double fma_loop_avx512(int64_t iters, float* sink) {
  __m512 acc[kChains];
  const __m512 mul = _mm512_set1_ps(0.999999f), add = _mm512_set1_ps(1e-7f);
#pragma GCC unroll 12
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(static_cast<float>(i));
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], mul, add);
  }
  __m512 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm512_add_ps(s, acc[i]);
  alignas(64) float v[16];
  _mm512_store_ps(v, s);
  float total = 0;
  for (float x : v) total += x;
  *sink = total;
  return static_cast<double>(iters) * kChains * 16 * 2;
}

__attribute__((target("avx2,fma"))) double fma_loop_avx2(int64_t iters, float* sink) {
  __m256 acc[kChains];
  const __m256 mul = _mm256_set1_ps(0.999999f), add = _mm256_set1_ps(1e-7f);
#pragma GCC unroll 12
  for (int i = 0; i < kChains; ++i) acc[i] = _mm256_set1_ps(static_cast<float>(i));
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < kChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], mul, add);
  }
  __m256 s = acc[0];
  for (int i = 1; i < kChains; ++i) s = _mm256_add_ps(s, acc[i]);
  alignas(32) float v[8];
  _mm256_store_ps(v, s);
  *sink = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
  return static_cast<double>(iters) * kChains * 8 * 2;
}
#endif

double fma_loop_generic(int64_t iters, float* sink) {
  float acc[kChains][8];
  for (int i = 0; i < kChains; ++i)
    for (int j = 0; j < 8; ++j) acc[i][j] = static_cast<float>(i + j);
  for (int64_t it = 0; it < iters; ++it)
    for (int i = 0; i < kChains; ++i)
      for (int j = 0; j < 8; ++j) acc[i][j] = acc[i][j] * 0.999999f + 1e-7f;
  float s = 0;
  for (int i = 0; i < kChains; ++i)
    for (int j = 0; j < 8; ++j) s += acc[i][j];
  *sink = s;
  return static_cast<double>(iters) * kChains * 8 * 2;
}

double fma_loop(int64_t iters, float* sink) {
#ifdef ND_X86
  if (__builtin_cpu_supports("avx512f")) return fma_loop_avx512(iters, sink);
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return fma_loop_avx2(iters, sink);
#endif
  return fma_loop_generic(iters, sink);
}

}  // namespace

double measure_fma_peak_gflops(int threads, double seconds) {
  threads = std::max(1, threads);
  float sink = 0;
  // calibrate: iterations per thread for the requested duration on one thread
  int64_t iters = 1 << 16;
  for (;;) {
    auto t0 = std::chrono::steady_clock::now();
    fma_loop(iters, &sink);
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (dt > 0.02) {
      iters = static_cast<int64_t>(static_cast<double>(iters) * seconds / dt) + 1;
      break;
    }
    iters *= 4;
  }
  std::vector<std::thread> pool;
  std::vector<float> sinks(static_cast<size_t>(threads));
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<double> flops{0};
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      ready++;
      while (!go.load()) std::this_thread::yield();
      double f = fma_loop(iters, &sinks[static_cast<size_t>(t)]);
      double cur = flops.load();
      while (!flops.compare_exchange_weak(cur, cur + f)) {
      }
    });
  }
  while (ready.load() < threads) std::this_thread::yield();
  auto t0 = std::chrono::steady_clock::now();
  go = true;
  for (auto& th : pool) th.join();
  double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return flops.load() / dt / 1e9;
}

}  // namespace nd::cpu
