// Measures the machine's single-precision FMA throughput with register-resident loops (the
// ceiling the GEMM benchmark compares against): independent accumulator chains, enough to
// cover FMA latency on every pipe, in the widest vector ISA the CPU has. Reports the rate in
// wall time and per CPU-second of the measuring threads (a core's rate, whatever the load).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <ctime>
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

double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

}  // namespace

FmaPeak measure_fma_peak(int threads, double seconds) {
  threads = std::max(1, threads);
  float sink = 0;
  // calibrate: iterations per thread for the requested duration on one thread
  int64_t iters = 1 << 16;
  for (;;) {
    const double t0 = thread_cpu_seconds();
    fma_loop(iters, &sink);
    const double dt = thread_cpu_seconds() - t0;
    if (dt > 0.02) {
      iters = static_cast<int64_t>(static_cast<double>(iters) * seconds / dt) + 1;
      break;
    }
    iters *= 4;
  }
  std::vector<std::thread> pool;
  std::vector<float> sinks(static_cast<size_t>(threads));
  std::vector<double> cpu(static_cast<size_t>(threads));
  std::vector<double> flops(static_cast<size_t>(threads));
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      ready++;
      while (!go.load()) std::this_thread::yield();
      const double c0 = thread_cpu_seconds();
      flops[static_cast<size_t>(t)] = fma_loop(iters, &sinks[static_cast<size_t>(t)]);
      cpu[static_cast<size_t>(t)] = thread_cpu_seconds() - c0;
    });
  }
  while (ready.load() < threads) std::this_thread::yield();
  const auto t0 = std::chrono::steady_clock::now();
  go = true;
  for (auto& th : pool) th.join();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double total_flops = 0, total_cpu = 0;
  for (int t = 0; t < threads; ++t) {
    total_flops += flops[static_cast<size_t>(t)];
    total_cpu += cpu[static_cast<size_t>(t)];
  }
  return {total_flops / wall / 1e9, total_flops / total_cpu / 1e9};
}

}  // namespace nd::cpu
