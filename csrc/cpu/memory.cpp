// CPU memory: aligned host allocations and strided copies with dtype conversion.
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>

#include "cpu_backend.h"
#include "loops.h"

namespace nd {

void* CpuBackend::allocate(size_t nbytes, Device) {
  size_t rounded = (nbytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw std::runtime_error("out of host memory allocating " + std::to_string(nbytes) + " bytes");
  return p;
}

void CpuBackend::deallocate(void* p, size_t, Device) { std::free(p); }

void CpuBackend::upload(const void* host, Tensor& dst) { std::memcpy(dst.data(), host, dst.nbytes()); }

void CpuBackend::download(const Tensor& src, void* host) { std::memcpy(host, src.data(), src.nbytes()); }

void CpuBackend::copy(const Tensor& src, Tensor& dst) {
  if (src.shape != dst.shape)
    throw std::invalid_argument("copy: shapes " + shape_str(src.shape) + " and " + shape_str(dst.shape) + " differ");
  const DType st = src.dtype, dt = dst.dtype;
  const void* sb = src.data();
  void* db = dst.data();
  if (st == dt && src.is_contiguous() && dst.is_contiguous()) {
    const size_t n = src.nbytes();
    parallel_for(0, static_cast<int64_t>(n), 1 << 20, [&](int64_t lo, int64_t hi) {
      std::memcpy(static_cast<char*>(db) + lo, static_cast<const char*>(sb) + lo, hi - lo);
    });
    return;
  }
  const size_t isz = dtype_size(st);
  cpu::for_each_row<2>(dst.shape, {dst.strides, src.strides}, [&](const std::array<int64_t, 2>& off, int64_t n,
                                                                   const std::array<int64_t, 2>& inc) {
    if (st == dt) {
      const char* s = static_cast<const char*>(sb) + off[1] * isz;
      char* d = static_cast<char*>(db) + off[0] * isz;
      if (inc[0] == 1 && inc[1] == 1) {
        std::memcpy(d, s, n * isz);
      } else {
        for (int64_t i = 0; i < n; ++i) std::memcpy(d + i * inc[0] * isz, s + i * inc[1] * isz, isz);
      }
      return;
    }
    if (cpu::is_int(st) && cpu::is_int(dt)) {
      for (int64_t i = 0; i < n; ++i) cpu::store_int(db, dt, off[0] + i * inc[0], cpu::load_int(sb, st, off[1] + i * inc[1]));
      return;
    }
    if (cpu::is_int(dt)) {  // float -> int truncates toward zero like torch
      for (int64_t i = 0; i < n; ++i) {
        float v = load_as_f32(sb, st, off[1] + i * inc[1]);
        cpu::store_int(db, dt, off[0] + i * inc[0], static_cast<int64_t>(v));
      }
      return;
    }
    if (st == DType::I64) {  // keep int64 -> float exact as far as float allows
      for (int64_t i = 0; i < n; ++i)
        store_from_f32(db, dt, off[0] + i * inc[0], static_cast<float>(static_cast<const int64_t*>(sb)[off[1] + i * inc[1]]));
      return;
    }
    float buf[cpu::kRowChunk];
    const float* row = cpu::load_row(sb, st, off[1], inc[1], n, buf);
    cpu::store_row(db, dt, off[0], inc[0], n, row);
  });
}

}  // namespace nd
