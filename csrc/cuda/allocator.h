// Caching device allocator: freed blocks go to per-size-class free lists and are handed out again
// without cudaMalloc/cudaFree (both synchronise the device). All kernels of a device run on one
// stream, so a block freed by one op and reused by the next is ordered by the stream itself.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace nd::cuda {

class CachingAllocator {
 public:
  // Rounds sizes up to a class: 512-byte steps up to 1 MiB, then 8 classes per power of two
  // (at most 12.5% slack for large tensors).
  static size_t size_class(size_t nbytes);

  void* allocate(size_t nbytes);  // throws std::runtime_error when the device is out of memory
  void release(void* p);          // the block returns to its free list
  // Returns every cached (free) block to the driver; called when cudaMalloc fails.
  void release_cached();

  size_t reserved_bytes() const { return reserved_; }  // obtained from cudaMalloc
  size_t cached_bytes() const { return cached_; }      // of which free in the cache

 private:
  std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;  // size class -> free blocks
  std::unordered_map<void*, size_t> live_;     // block -> size class
  size_t reserved_ = 0;
  size_t cached_ = 0;
};

}  // namespace nd::cuda
