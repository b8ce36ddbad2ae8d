// Shared parameters of the CUDA attention kernels (attention.cu: tensor-core flash attention for
// bf16/fp16 with head dim 64/128; attention_generic.cu: any float dtype and head dim <= 1024).
#pragma once
#include <cstdint>

#include "../core/dtype.h"
#include "runtime.h"

namespace nd::cuda {

struct AttnParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  float* lse = nullptr;  // may be null
  DType qkv_t = DType::BF16, o_t = DType::BF16;
  // strides in elements for (batch, head, position); the head dim is contiguous
  int64_t q_sb = 0, q_sh = 0, q_sl = 0;
  int64_t k_sb = 0, k_sh = 0, k_sl = 0;
  int64_t v_sb = 0, v_sh = 0, v_sl = 0;
  int64_t o_sb = 0, o_sh = 0, o_sl = 0, o_sd = 1;
  int64_t lse_sb = 0, lse_sh = 0, lse_sl = 0;
  int B = 0, H = 0, Hk = 0, Lq = 0, Lk = 0, D = 0, Dv = 0;
  float scale = 1.0f;
  bool causal = false;
  const int32_t* kv_lens = nullptr;  // [B] or null
  const void* bias = nullptr;        // [B, H, Lq, Lk] view (expanded) or null
  DType bias_t = DType::F32;
  int64_t bias_sb = 0, bias_sh = 0, bias_sq = 0, bias_sk = 0;
};

// Whether the tensor-core kernel handles these parameters (dtype, head dims, alignment).
bool flash_attention_supported(const AttnParams& p);
void flash_attention(DeviceContext& ctx, const AttnParams& p);
// Any float dtype, D and Dv <= 1024; one warp per query row.
void generic_attention(DeviceContext& ctx, const AttnParams& p);

}  // namespace nd::cuda
