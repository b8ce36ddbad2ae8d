// Front-end arange and linspace, value for value as torch computes them on the CPU (torch 2.x,
// aten/src/ATen/native/cpu/RangeFactoriesKernel.cpp built for AVX2/AVX-512, where the compiler
// fuses a * b + c into one rounding). The values are computed here on the host and uploaded, so
// every device gives the same bits.
//
// linspace(start, end, steps):
//   float32: s, e = start, end rounded to float; step = (e - s) / (steps - 1) in float; element i
//     is s + step * i for i < steps / 2 and e - step * (steps - 1 - i) after, each one fused
//     multiply-add (one rounding).
//   float16/bfloat16: the same formulas with every operation rounded to the half type (c10::Half
//     and c10::BFloat16 arithmetic).
//   integers: s, e = start, end truncated; step = (e - s) / (steps - 1) in double; the same
//     formulas in double, truncated toward zero.
//   One step gives start (rounded or truncated to the dtype).
// arange(start, end, step): ceil((end - start) / step) elements.
//   float32: element i is start + step * i in double, rounded to float, except in the part that
//     torch fills with 8-wide vectors (the first floor(n / 16) * 16 elements): there each block of
//     8 starts from base = float(start + step * i0) and continues as float(base + k * step), k < 8,
//     in double. (torch splits arrays longer than 32768 over its threads and starts this pattern
//     again in each chunk; the values here are those of one chunk, i.e. torch on one thread.)
//   float16/bfloat16: the same with start and step rounded to float, arithmetic in float, 16-wide
//     blocks (the first floor(n / 32) * 32 elements), each value rounded to the half type.
//   integers: start, end and step must be integers (torch's integer arange truncates its bounds
//     in ways that differ between int32 and int64); element i is start + step * i exactly.
// Integer results must fit the dtype (torch wraps them around; this is an error here). float8
// results are the float32 values rounded to float8.
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "ops.h"

namespace nd::ops {

namespace {

bool is_half(DType t) { return t == DType::F16 || t == DType::BF16; }

bool is_integer(DType t) { return t == DType::I32 || t == DType::I64 || t == DType::U8; }

// Rounds v to the half type t (float16 or bfloat16), as c10::Half / c10::BFloat16 do.
float round_half(float v, DType t) {
  return t == DType::F16 ? f16_to_f32(f32_to_f16(v)) : bf16_to_f32(f32_to_bf16(v));
}

// The values of a range, built on the host in the output dtype.
class HostValues {
 public:
  HostValues(DType t, int64_t n) : t_(t), bytes_(static_cast<size_t>(n) * dtype_size(t)) {}
  void set_float(int64_t i, float v) { store_from_f32(bytes_.data(), t_, i, v); }
  void set_int(int64_t i, int64_t v, const char* op) {
    check_int_range(v, op);
    switch (t_) {
      case DType::I32: reinterpret_cast<int32_t*>(bytes_.data())[i] = static_cast<int32_t>(v); break;
      case DType::I64: reinterpret_cast<int64_t*>(bytes_.data())[i] = v; break;
      default: bytes_[static_cast<size_t>(i)] = static_cast<uint8_t>(v); break;
    }
  }
  void check_int_range(int64_t v, const char* op) const {
    const int64_t lo = t_ == DType::U8 ? 0 : t_ == DType::I32 ? INT32_MIN : INT64_MIN;
    const int64_t hi = t_ == DType::U8 ? 255 : t_ == DType::I32 ? INT32_MAX : INT64_MAX;
    if (v < lo || v > hi)
      throw std::invalid_argument(std::string(op) + ": value " + std::to_string(v) + " does not fit " + dtype_name(t_));
  }
  Tensor upload(const Shape& shape, Device device) const {
    Tensor out = Tensor::empty(shape, t_, device);
    if (!bytes_.empty()) backend_for(device).upload(bytes_.data(), out);
    return out;
  }

 private:
  DType t_;
  std::vector<uint8_t> bytes_;
};

// A double that is an integer representable in int64 (|v| < 2^63).
int64_t integral(double v, const char* op, const char* what) {
  if (!(std::trunc(v) == v) || !(std::fabs(v) < 9.2e18))
    throw std::invalid_argument(std::string(op) + " with an integer dtype needs integer bounds and step, got " + what +
                                " " + std::to_string(v));
  return static_cast<int64_t>(v);
}

}  // namespace

Tensor arange(double start, double end, double step, DType dtype, Device device) {
  if (step == 0 || !std::isfinite(start) || !std::isfinite(end) || !std::isfinite(step))
    throw std::invalid_argument("arange needs finite bounds and a non-zero step");
  if (is_integer(dtype)) {
    const int64_t s = integral(start, "arange", "start"), e = integral(end, "arange", "end");
    const int64_t st = integral(step, "arange", "step");
    const double span = static_cast<double>(e) - static_cast<double>(s);
    const int64_t n = (span > 0) != (st > 0) || span == 0
                          ? 0
                          : static_cast<int64_t>((std::fabs(span) + std::fabs(static_cast<double>(st)) - 1) /
                                                 std::fabs(static_cast<double>(st)));
    if (n > int64_t{10000000000}) throw std::invalid_argument("arange would create too many elements");
    HostValues v(dtype, n);
    for (int64_t i = 0; i < n; ++i) v.set_int(i, s + st * i, "arange");
    return v.upload({n}, device);
  }
  const double count = std::ceil((end - start) / step);
  if (count > 1e10) throw std::invalid_argument("arange would create too many elements");
  const int64_t n = count > 0 ? static_cast<int64_t>(count) : 0;
  HostValues v(dtype, n);
  if (is_half(dtype)) {
    const float s = static_cast<float>(start), st = static_cast<float>(step);
    const int64_t vec_end = n / 32 * 32;
    for (int64_t i0 = 0; i0 < vec_end; i0 += 16) {
      const float base = round_half(std::fma(st, static_cast<float>(i0), s), dtype);
      for (int k = 0; k < 16; ++k) v.set_float(i0 + k, std::fma(static_cast<float>(k), st, base));
    }
    for (int64_t i = vec_end; i < n; ++i) v.set_float(i, std::fma(st, static_cast<float>(i), s));
  } else {
    const int64_t vec_end = n / 16 * 16;
    for (int64_t i0 = 0; i0 < vec_end; i0 += 8) {
      const double base = static_cast<float>(std::fma(step, static_cast<double>(i0), start));
      for (int k = 0; k < 8; ++k) v.set_float(i0 + k, static_cast<float>(std::fma(static_cast<double>(k), step, base)));
    }
    for (int64_t i = vec_end; i < n; ++i) v.set_float(i, static_cast<float>(std::fma(step, static_cast<double>(i), start)));
  }
  return v.upload({n}, device);
}

Tensor linspace(double start, double end, int64_t steps, DType dtype, Device device) {
  if (steps < 0) throw std::invalid_argument("linspace steps must be >= 0");
  if (!std::isfinite(start) || !std::isfinite(end)) throw std::invalid_argument("linspace needs finite bounds");
  if (steps > int64_t{10000000000}) throw std::invalid_argument("linspace would create too many elements");
  HostValues v(dtype, steps);
  // one step: torch fills start (the loops below would give end)
  const int64_t half = steps == 1 ? 1 : steps / 2;
  if (is_integer(dtype)) {
    const double s = std::trunc(start), e = std::trunc(end);
    for (const double b : {s, e})
      if (!(std::fabs(b) < 9.2e18)) throw std::invalid_argument("linspace: bound " + std::to_string(b) + " does not fit " + dtype_name(dtype));
    v.check_int_range(static_cast<int64_t>(s), "linspace");
    v.check_int_range(static_cast<int64_t>(e), "linspace");
    const double step = steps > 1 ? (e - s) / static_cast<double>(steps - 1) : 0.0;
    for (int64_t i = 0; i < steps; ++i) {
      const double x = i < half ? std::fma(step, static_cast<double>(i), s)
                                : std::fma(-step, static_cast<double>(steps - 1 - i), e);
      v.set_int(i, static_cast<int64_t>(x), "linspace");
    }
  } else if (is_half(dtype)) {
    const auto r = [dtype](float x) { return round_half(x, dtype); };
    const float s = r(static_cast<float>(start)), e = r(static_cast<float>(end));
    const float step = steps > 1 ? r(r(e - s) / r(static_cast<float>(steps - 1))) : 0.0f;
    for (int64_t i = 0; i < steps; ++i)
      v.set_float(i, i < half ? r(s + r(step * r(static_cast<float>(i))))
                              : r(e - r(step * r(static_cast<float>(steps - 1 - i)))));
  } else {
    const float s = static_cast<float>(start), e = static_cast<float>(end);
    const float step = steps > 1 ? (e - s) / static_cast<float>(steps - 1) : 0.0f;
    for (int64_t i = 0; i < steps; ++i)
      v.set_float(i, i < half ? std::fma(step, static_cast<float>(i), s)
                              : std::fma(-step, static_cast<float>(steps - 1 - i), e));
  }
  return v.upload({steps}, device);
}

}  // namespace nd::ops
