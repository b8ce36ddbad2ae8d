// CPU memory: host allocations and strided copies with dtype conversion.
//
// Blocks of 1 MiB and more (activations) are mapped here and kept for reuse when freed: malloc
// maps such blocks afresh every time, so each op writing a large new tensor paid a page fault per
// 4 KiB and the kernel zeroing every page, several times the op's own time (a 100 MB copy into a
// new tensor 60-70 ms against 6-11 ms into an existing one). Sizes are rounded up to classes at
// most 1/8 apart, so the blocks a forward pass frees serve the next one. The blocks held unused
// are bounded (a quarter of physical memory, or ND_CPU_BLOCK_CACHE_MB; 0 maps and unmaps every
// time), the least recently freed going first; a failing map releases them all and retries.
// Memory statistics count tensors, not these cached blocks. Smaller blocks come from malloc.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_backend.h"
#include "loops.h"

namespace nd {

namespace {

constexpr size_t kBlockMin = size_t{1} << 20;

// n rounded up to a multiple of 1/8 of its leading power of two (and of 64 KiB).
size_t block_class(size_t n) {
  const size_t top = size_t{1} << (63 - __builtin_clzll(n));
  const size_t granule = std::max<size_t>(top / 8, size_t{64} << 10);
  return (n + granule - 1) / granule * granule;
}

class BlockCache {
 public:
  BlockCache() {
    if (const char* env = std::getenv("ND_CPU_BLOCK_CACHE_MB")) {
      cap_ = static_cast<size_t>(std::strtoull(env, nullptr, 10)) << 20;
    } else {
      const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
      cap_ = pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) / 4 : size_t{1} << 30;
    }
  }

  void* allocate(size_t size) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t i = free_.size(); i-- > 0;)  // the most recently freed block of this size
        if (free_[i].size == size) {
          void* p = free_[i].p;
          free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(i));
          held_ -= size;
          return p;
        }
    }
    void* p = map(size);
    if (!p) {
      release_all();
      p = map(size);
    }
    if (!p) throw std::runtime_error("out of host memory allocating " + std::to_string(size) + " bytes");
    return p;
  }

  void release(void* p, size_t size) {
    std::vector<Block> evicted;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (size > cap_) {
        evicted.push_back({p, size});
      } else {
        free_.push_back({p, size});
        held_ += size;
        size_t drop = 0;
        while (held_ > cap_) held_ -= free_[drop++].size;  // least recently freed first
        evicted.assign(free_.begin(), free_.begin() + static_cast<std::ptrdiff_t>(drop));
        free_.erase(free_.begin(), free_.begin() + static_cast<std::ptrdiff_t>(drop));
      }
    }
    for (const Block& b : evicted) munmap(b.p, b.size);
  }

 private:
  struct Block {
    void* p;
    size_t size;
  };

  static void* map(size_t size) {
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    madvise(p, size, MADV_HUGEPAGE);  // 2 MiB pages where the kernel allows: fewer first-touch faults
    return p;
  }

  void release_all() {
    std::vector<Block> all;
    {
      std::lock_guard<std::mutex> lock(mu_);
      all.swap(free_);
      held_ = 0;
    }
    for (const Block& b : all) munmap(b.p, b.size);
  }

  std::mutex mu_;
  std::vector<Block> free_;  // oldest first
  size_t held_ = 0;
  size_t cap_ = 0;
};

BlockCache& block_cache() {
  static BlockCache* cache = new BlockCache();  // never destroyed: tensors may be freed at exit
  return *cache;
}

}  // namespace

void* CpuBackend::allocate(size_t nbytes, Device) {
  if (nbytes >= kBlockMin) return block_cache().allocate(block_class(nbytes));
  size_t rounded = (nbytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw std::runtime_error("out of host memory allocating " + std::to_string(nbytes) + " bytes");
  return p;
}

void CpuBackend::deallocate(void* p, size_t nbytes, Device) {
  if (nbytes >= kBlockMin)
    block_cache().release(p, block_class(nbytes));
  else
    std::free(p);
}

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
