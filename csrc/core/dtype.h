// Element types, their sizes and names, and scalar conversions between them.
#pragma once
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

namespace nd {

enum class DType : int32_t { F32 = 0, F16 = 1, BF16 = 2, I32 = 3, I64 = 4, F8E4M3 = 5, U8 = 6 };

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::I32: return 4;
    case DType::I64: return 8;
    case DType::F8E4M3: return 1;
    case DType::U8: return 1;
  }
  throw std::invalid_argument("unknown dtype");
}

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
    case DType::I32: return "int32";
    case DType::I64: return "int64";
    case DType::F8E4M3: return "float8_e4m3";
    case DType::U8: return "uint8";
  }
  return "?";
}

inline bool dtype_is_float(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F8E4M3;
}

inline DType dtype_from_int(int v) {
  if (v < 0 || v > 6) throw std::invalid_argument("unknown dtype code " + std::to_string(v));
  return static_cast<DType>(v);
}

// ---- scalar conversions (kernels use vectorised versions where it matters) ----
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

inline float f16_to_f32(uint16_t h) {
  _Float16 v;
  std::memcpy(&v, &h, 2);
  return static_cast<float>(v);
}

inline uint16_t f32_to_f16(float f) {
  _Float16 v = static_cast<_Float16>(f);
  uint16_t h;
  std::memcpy(&h, &v, 2);
  return h;
}

// OCP fp8 e4m3 (fn variant: no infinities, 0x7f/0xff are NaN, max 448).
inline float f8e4m3_to_f32(uint8_t b) {
  const uint32_t sign = (b >> 7) & 1u, exp = (b >> 3) & 0xfu, man = b & 0x7u;
  float v;
  if (exp == 0xf && man == 0x7) {
    v = __builtin_nanf("");
  } else if (exp == 0) {
    v = static_cast<float>(man) * (1.0f / 512.0f);  // 2^-6 * man/8
  } else {
    uint32_t u = ((exp + 120u) << 23) | (man << 20);
    std::memcpy(&v, &u, 4);
  }
  return sign ? -v : v;
}

inline uint8_t f32_to_f8e4m3(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint8_t sign = static_cast<uint8_t>((u >> 31) << 7);
  float a = f < 0 ? -f : f;
  if (a != a) return sign | 0x7f;
  if (a >= 448.0f) return sign | 0x7e;  // saturate
  // brute-force nearest of the 127 positive codes (storage conversion, not a hot path)
  uint8_t best = 0;
  float bestErr = a;
  for (uint8_t c = 1; c < 0x7f; ++c) {
    float err = f8e4m3_to_f32(c) - a;
    if (err < 0) err = -err;
    if (err < bestErr || (err == bestErr && (c & 1) == 0)) { bestErr = err; best = c; }
  }
  return sign | best;
}

// Reads element i of a buffer of type t as float (for generic, non-hot paths).
inline float load_as_f32(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::I32: return static_cast<float>(static_cast<const int32_t*>(p)[i]);
    case DType::I64: return static_cast<float>(static_cast<const int64_t*>(p)[i]);
    case DType::F8E4M3: return f8e4m3_to_f32(static_cast<const uint8_t*>(p)[i]);
    case DType::U8: return static_cast<float>(static_cast<const uint8_t*>(p)[i]);
  }
  return 0;
}

inline void store_from_f32(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::F32: static_cast<float*>(p)[i] = v; break;
    case DType::F16: static_cast<uint16_t*>(p)[i] = f32_to_f16(v); break;
    case DType::BF16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(v); break;
    case DType::I32: static_cast<int32_t*>(p)[i] = static_cast<int32_t>(v); break;
    case DType::I64: static_cast<int64_t*>(p)[i] = static_cast<int64_t>(v); break;
    case DType::F8E4M3: static_cast<uint8_t*>(p)[i] = f32_to_f8e4m3(v); break;
    case DType::U8:  // truncates toward zero like every float -> integer cast, saturating (NaN -> 0)
      static_cast<uint8_t*>(p)[i] = !(v > 0) ? 0 : (v >= 255 ? 255 : static_cast<uint8_t>(v));
      break;
  }
}

}  // namespace nd
