// Tensor: a typed, strided view over ref-counted storage (owned memory, a memory-mapped
// file region, or device memory). Views (reshape/permute/slice/expand) share storage.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dtype.h"

namespace nd {

enum class DeviceType : int32_t { CPU = 0, CUDA = 1 };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const;
};

using Shape = std::vector<int64_t>;

// Process-wide memory accounting (what the memory tests and peak_memory_mb read).
struct MemoryStats {
  std::atomic<int64_t> storages{0};
  std::atomic<int64_t> host_bytes{0};        // owned host allocations (not mmap)
  std::atomic<int64_t> host_peak_bytes{0};
  std::atomic<int64_t> mapped_bytes{0};      // memory-mapped file regions
  std::atomic<int64_t> device_bytes{0};      // device allocations in use
  std::atomic<int64_t> device_peak_bytes{0};
};
MemoryStats& memory_stats();

struct Storage {
  void* data = nullptr;
  size_t nbytes = 0;
  Device device;
  enum class Kind { Owned, Mapped, Borrowed } kind = Kind::Owned;
  std::function<void(Storage&)> release;  // frees `data`; called once from the destructor
  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  ~Storage();
};

// Allocates storage on a device through its backend (host: 64-byte aligned).
std::shared_ptr<Storage> allocate_storage(size_t nbytes, Device device);

class Tensor {
 public:
  std::shared_ptr<Storage> storage;
  int64_t offset = 0;  // in bytes from storage->data
  DType dtype = DType::F32;
  Shape shape;
  Shape strides;  // in elements

  Tensor() = default;
  static Tensor empty(const Shape& shape, DType dtype, Device device = {});
  // Wraps existing storage; checks that every addressed element lies inside it.
  static Tensor from_storage(std::shared_ptr<Storage> s, int64_t byte_offset, DType dtype, const Shape& shape,
                             const Shape& strides = {});

  bool defined() const { return storage != nullptr; }
  int64_t dim() const { return static_cast<int64_t>(shape.size()); }
  int64_t numel() const;
  int64_t size(int64_t d) const { return shape.at(norm_dim(d)); }
  int64_t stride(int64_t d) const { return strides.at(norm_dim(d)); }
  size_t itemsize() const { return dtype_size(dtype); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * itemsize(); }
  Device device() const { return storage ? storage->device : Device{}; }
  bool is_contiguous() const;
  void* data() const { return static_cast<char*>(storage->data) + offset; }
  template <class T>
  T* ptr() const { return reinterpret_cast<T*>(data()); }

  int64_t norm_dim(int64_t d) const;  // negative dims count from the end; throws if out of range

  // ---- views (no copy) ----
  Tensor reshape_view(const Shape& new_shape) const;  // throws if the strides do not allow a view
  bool can_view_as(const Shape& new_shape) const;
  Tensor permute(const std::vector<int64_t>& order) const;
  Tensor transpose(int64_t a, int64_t b) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end, int64_t step = 1) const;
  Tensor expand(const Shape& new_shape) const;  // broadcast size-1 dims with stride 0
  Tensor unsqueeze(int64_t dim) const;
  Tensor squeeze(int64_t dim) const;

  std::string describe() const;  // e.g. "float32[2, 3]"
};

std::string shape_str(const Shape& s);
Shape contiguous_strides(const Shape& shape);
int64_t shape_numel(const Shape& shape);
// Broadcast two shapes (numpy rules); throws naming both shapes if incompatible.
Shape broadcast_shapes(const Shape& a, const Shape& b);

}  // namespace nd
