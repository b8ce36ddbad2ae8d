#include "tensor.h"

#include <algorithm>
#include <sstream>
#include <stdexcept>

#include "backend.h"

namespace nd {

std::string Device::str() const {
  return type == DeviceType::CPU ? std::string("cpu") : "cuda:" + std::to_string(index);
}

MemoryStats& memory_stats() {
  static MemoryStats stats;
  return stats;
}

static void bump_peak(std::atomic<int64_t>& peak, int64_t now) {
  int64_t p = peak.load();
  while (now > p && !peak.compare_exchange_weak(p, now)) {
  }
}

Storage::~Storage() {
  auto& st = memory_stats();
  st.storages--;
  if (kind == Kind::Owned) {
    if (device.type == DeviceType::CPU)
      st.host_bytes -= static_cast<int64_t>(nbytes);
    else
      st.device_bytes -= static_cast<int64_t>(nbytes);
  } else if (kind == Kind::Mapped) {
    st.mapped_bytes -= static_cast<int64_t>(nbytes);
  }
  if (release) release(*this);
}

std::shared_ptr<Storage> allocate_storage(size_t nbytes, Device device) {
  Backend& be = backend_for(device);
  auto s = std::make_shared<Storage>();
  s->nbytes = nbytes;
  s->device = device;
  s->kind = Storage::Kind::Owned;
  s->data = be.allocate(nbytes < 1 ? 1 : nbytes, device);
  Backend* bp = &be;
  s->release = [bp](Storage& st) { bp->deallocate(st.data, st.nbytes, st.device); };
  auto& stats = memory_stats();
  stats.storages++;
  if (device.type == DeviceType::CPU) {
    int64_t now = stats.host_bytes += static_cast<int64_t>(nbytes);
    bump_peak(stats.host_peak_bytes, now);
  } else {
    int64_t now = stats.device_bytes += static_cast<int64_t>(nbytes);
    bump_peak(stats.device_peak_bytes, now);
  }
  return s;
}

std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

Shape contiguous_strides(const Shape& shape) {
  Shape st(shape.size());
  int64_t acc = 1;
  for (int64_t i = static_cast<int64_t>(shape.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= shape[i];
  }
  return st;
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

Shape broadcast_shapes(const Shape& a, const Shape& b) {
  size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    if (da != db && da != 1 && db != 1)
      throw std::invalid_argument("shapes " + shape_str(a) + " and " + shape_str(b) + " cannot be broadcast together");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  for (auto d : shape)
    if (d < 0) throw std::invalid_argument("negative dimension in shape " + shape_str(shape));
  Tensor t;
  t.dtype = dtype;
  t.shape = shape;
  t.strides = contiguous_strides(shape);
  t.storage = allocate_storage(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype), device);
  return t;
}

Tensor Tensor::from_storage(std::shared_ptr<Storage> s, int64_t byte_offset, DType dtype, const Shape& shape,
                            const Shape& strides) {
  Tensor t;
  t.dtype = dtype;
  t.shape = shape;
  t.strides = strides.empty() ? contiguous_strides(shape) : strides;
  if (t.strides.size() != shape.size()) throw std::invalid_argument("strides and shape differ in length");
  for (auto d : shape)
    if (d < 0) throw std::invalid_argument("negative dimension in shape " + shape_str(shape));
  if (byte_offset < 0) throw std::invalid_argument("negative storage offset");
  if (byte_offset % static_cast<int64_t>(dtype_size(dtype)) != 0)
    throw std::invalid_argument("storage offset " + std::to_string(byte_offset) + " is not aligned to " +
                                dtype_name(dtype));
  // extent check: lowest and highest addressed element must lie inside the storage
  int64_t lo = 0, hi = 0;
  bool empty = false;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0) empty = true;
    int64_t span = (shape[i] - 1) * t.strides[i];
    if (span < 0) lo += span; else hi += span;
  }
  if (!empty) {
    int64_t isz = static_cast<int64_t>(dtype_size(dtype));
    int64_t first = byte_offset + lo * isz, last = byte_offset + (hi + 1) * isz;
    if (first < 0 || last > static_cast<int64_t>(s->nbytes))
      throw std::out_of_range("tensor " + std::string(dtype_name(dtype)) + shape_str(shape) + " at byte offset " +
                              std::to_string(byte_offset) + " does not fit in a storage of " +
                              std::to_string(s->nbytes) + " bytes");
  }
  t.storage = std::move(s);
  t.offset = byte_offset;
  return t;
}

int64_t Tensor::numel() const { return shape_numel(shape); }

int64_t Tensor::norm_dim(int64_t d) const {
  int64_t n = dim();
  int64_t r = d < 0 ? d + n : d;
  if (r < 0 || r >= n)
    throw std::out_of_range("dimension " + std::to_string(d) + " is out of range for a tensor of shape " +
                            shape_str(shape));
  return r;
}

bool Tensor::is_contiguous() const {
  int64_t acc = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides[i] != acc) return false;
    acc *= shape[i];
  }
  return true;
}

std::string Tensor::describe() const { return std::string(dtype_name(dtype)) + shape_str(shape); }

// Computes view strides for new_shape if possible (the algorithm of torch's computeStride).
static bool view_strides(const Shape& old_shape, const Shape& old_strides, const Shape& new_shape, Shape& out) {
  out.assign(new_shape.size(), 0);
  if (shape_numel(old_shape) == 0) {
    out = contiguous_strides(new_shape);
    return true;
  }
  int64_t view_d = static_cast<int64_t>(new_shape.size()) - 1;
  int64_t chunk_base_stride = old_strides.empty() ? 1 : old_strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t tensor_d = static_cast<int64_t>(old_shape.size()) - 1; tensor_d >= 0; tensor_d--) {
    tensor_numel *= old_shape[tensor_d];
    if (tensor_d == 0 || (old_shape[tensor_d - 1] != 1 && old_strides[tensor_d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d] == 1)) {
        out[view_d] = view_numel * chunk_base_stride;
        view_numel *= new_shape[view_d];
        view_d--;
      }
      if (view_numel != tensor_numel) return false;
      if (tensor_d > 0) {
        chunk_base_stride = old_strides[tensor_d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}

static Shape infer_shape(const Shape& req, int64_t numel, const Shape& from) {
  Shape s = req;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      if (infer >= 0) throw std::invalid_argument("only one dimension can be -1 in reshape to " + shape_str(req));
      infer = static_cast<int64_t>(i);
    } else if (s[i] < 0) {
      throw std::invalid_argument("invalid dimension in reshape to " + shape_str(req));
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || numel % known != 0)
      throw std::invalid_argument("cannot reshape " + shape_str(from) + " to " + shape_str(req));
    s[infer] = numel / known;
  }
  if (shape_numel(s) != numel)
    throw std::invalid_argument("cannot reshape " + shape_str(from) + " (" + std::to_string(numel) +
                                " elements) to " + shape_str(req));
  return s;
}

bool Tensor::can_view_as(const Shape& new_shape) const {
  Shape s = infer_shape(new_shape, numel(), shape), st;
  return view_strides(shape, strides, s, st);
}

Tensor Tensor::reshape_view(const Shape& new_shape) const {
  Shape s = infer_shape(new_shape, numel(), shape), st;
  if (!view_strides(shape, strides, s, st))
    throw std::invalid_argument("cannot view " + describe() + " as " + shape_str(s) + " without a copy");
  Tensor t = *this;
  t.shape = s;
  t.strides = st;
  return t;
}

Tensor Tensor::permute(const std::vector<int64_t>& order) const {
  if (static_cast<int64_t>(order.size()) != dim())
    throw std::invalid_argument("permute order has " + std::to_string(order.size()) + " entries for a tensor of shape " +
                                shape_str(shape));
  std::vector<bool> seen(order.size(), false);
  Tensor t = *this;
  for (size_t i = 0; i < order.size(); ++i) {
    int64_t d = norm_dim(order[i]);
    if (seen[d]) throw std::invalid_argument("permute order repeats dimension " + std::to_string(d));
    seen[d] = true;
    t.shape[i] = shape[d];
    t.strides[i] = strides[d];
  }
  return t;
}

Tensor Tensor::transpose(int64_t a, int64_t b) const {
  std::vector<int64_t> order(dim());
  for (int64_t i = 0; i < dim(); ++i) order[i] = i;
  std::swap(order[norm_dim(a)], order[norm_dim(b)]);
  return permute(order);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end, int64_t step) const {
  d = norm_dim(d);
  if (step <= 0) throw std::invalid_argument("slice step must be positive");
  int64_t n = shape[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  Tensor t = *this;
  t.offset += start * strides[d] * static_cast<int64_t>(itemsize());
  t.shape[d] = (end - start + step - 1) / step;
  t.strides[d] = strides[d] * step;
  return t;
}

Tensor Tensor::expand(const Shape& new_shape) const {
  if (new_shape.size() < shape.size())
    throw std::invalid_argument("cannot expand " + shape_str(shape) + " to fewer dimensions " + shape_str(new_shape));
  size_t lead = new_shape.size() - shape.size();
  Tensor t = *this;
  t.shape = new_shape;
  t.strides.assign(new_shape.size(), 0);
  for (size_t i = 0; i < new_shape.size(); ++i) {
    if (i < lead) {
      if (new_shape[i] < 0) throw std::invalid_argument("invalid expand shape " + shape_str(new_shape));
      continue;
    }
    int64_t od = shape[i - lead];
    int64_t nd_ = new_shape[i] == -1 ? od : new_shape[i];
    t.shape[i] = nd_;
    if (od == nd_) {
      t.strides[i] = strides[i - lead];
    } else if (od == 1) {
      t.strides[i] = 0;
    } else {
      throw std::invalid_argument("cannot expand " + shape_str(shape) + " to " + shape_str(new_shape));
    }
  }
  return t;
}

Tensor Tensor::unsqueeze(int64_t d) const {
  int64_t n = dim();
  if (d < 0) d += n + 1;
  if (d < 0 || d > n) throw std::out_of_range("unsqueeze dimension out of range for " + shape_str(shape));
  Tensor t = *this;
  int64_t st = d < n ? strides[d] * shape[d] : 1;
  t.shape.insert(t.shape.begin() + d, 1);
  t.strides.insert(t.strides.begin() + d, st);
  return t;
}

Tensor Tensor::squeeze(int64_t d) const {
  d = norm_dim(d);
  if (shape[d] != 1) throw std::invalid_argument("cannot squeeze dimension " + std::to_string(d) + " of " + shape_str(shape));
  Tensor t = *this;
  t.shape.erase(t.shape.begin() + d);
  t.strides.erase(t.strides.begin() + d);
  return t;
}

}  // namespace nd
