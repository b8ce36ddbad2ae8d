// Flash attention forward on tensor cores (mma.sync m16n8k16, sm_80+), FlashAttention-2 style:
// a block of 4 warps owns 64 query rows (16 per warp) whose Q fragments stay in registers; K/V
// tiles of 64 keys stream through double-buffered, XOR-swizzled shared memory with cp.async;
// scores and the running max/sum stay in registers (online softmax in the exp2 domain); P is
// rounded to the input dtype and fed back as the A operand of the P @ V product.
// Also the Backend::attention entry, which validates and picks this or the generic kernel.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <stdexcept>

#include "attention.h"
#include "cuda_backend.h"
#include "kernels.cuh"

namespace nd {

namespace cuda {

namespace flash {

constexpr int kBlockM = 64;  // query rows per block
constexpr int kBlockN = 64;  // keys per tile
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy; src_bytes = 0 writes zeros without reading.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// d += a @ b for one m16n8k16 tile (fp32 accumulate).
template <class T>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <class T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Element offset of (row, 16-byte chunk) in a [rows, D] tile whose chunks are XOR-swizzled by
// row so that the 8 rows read by one ldmatrix phase hit 8 different bank groups.
template <int D>
__device__ __forceinline__ int swz(int row, int chunk) {
  return row * D + ((chunk ^ (row & 7)) << 3);
}

// Copies rows [row0, row0 + ROWS) of a [len, D] matrix (row stride ld) into a swizzled tile;
// rows at or past `len` are zero-filled.
template <class T, int D, int ROWS>
__device__ __forceinline__ void load_tile(T* tile, const T* base, int64_t ld, int row0, int len) {
  constexpr int kChunksPerRow = D / 8;
  constexpr int kChunks = ROWS * kChunksPerRow;
  static_assert(kChunks % kThreads == 0, "tile chunks must divide evenly over the threads");
#pragma unroll
  for (int it = 0; it < kChunks / kThreads; ++it) {
    const int c = it * kThreads + threadIdx.x;
    const int r = c / kChunksPerRow, ch = c % kChunksPerRow;
    const int gr = row0 + r;
    const bool in = gr < len;
    const T* src = base + (in ? static_cast<int64_t>(gr) * ld : 0) + ch * 8;
    cp_async16(smem_u32(tile + swz<D>(r, ch)), src, in ? 16 : 0);
  }
}

template <class T, int D>
__global__ void __launch_bounds__(kThreads) flash_fwd_kernel(const AttnParams p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sQ = reinterpret_cast<T*>(smem_raw);
  T* sK = sQ + kBlockM * D;      // two tiles
  T* sV = sK + 2 * kBlockN * D;  // two tiles

  const int m_block = gridDim.x - 1 - blockIdx.x;  // heaviest (causal) blocks first
  const int h = blockIdx.y, b = blockIdx.z;
  const int hk = h / (p.H / p.Hk);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int q0 = m_block * kBlockM;

  int kv_len = p.Lk;
  if (p.kv_lens) kv_len = max(0, min(p.Lk, p.kv_lens[b]));
  const int causal_shift = p.Lk - p.Lq;  // query i sees keys j <= i + causal_shift
  int n_end = kv_len;
  if (p.causal) n_end = max(0, min(n_end, min(q0 + kBlockM, p.Lq) - 1 + causal_shift + 1));
  const int n_blocks = (n_end + kBlockN - 1) / kBlockN;

  const T* qb = static_cast<const T*>(p.q) + b * p.q_sb + h * p.q_sh;
  const T* kb = static_cast<const T*>(p.k) + b * p.k_sb + hk * p.k_sh;
  const T* vb = static_cast<const T*>(p.v) + b * p.v_sb + hk * p.v_sh;

  // prologue: Q, then key/value tiles 0 and 1 (one commit group each, empty groups keep the count)
  load_tile<T, D, kBlockM>(sQ, qb, p.q_sl, q0, p.Lq);
  cp_async_commit();
#pragma unroll
  for (int s = 0; s < 2; ++s) {
    if (s < n_blocks) {
      load_tile<T, D, kBlockN>(sK + s * kBlockN * D, kb, p.k_sl, s * kBlockN, p.Lk);
      load_tile<T, D, kBlockN>(sV + s * kBlockN * D, vb, p.v_sl, s * kBlockN, p.Lk);
    }
    cp_async_commit();
  }
  cp_async_wait<2>();
  __syncthreads();

  // Q fragments of this warp's 16 rows: A operands for every 16-wide slice of the head dim
  constexpr int kSteps = D / 16;
  uint32_t qf[kSteps][4];
  {
    const int mi = lane >> 3, ri = lane & 7;
    const int row = warp * 16 + ri + (mi & 1) * 8;
#pragma unroll
    for (int kk = 0; kk < kSteps; ++kk) ldmatrix_x4(qf[kk], smem_u32(sQ + swz<D>(row, kk * 2 + (mi >> 1))));
  }

  constexpr int kNt = kBlockN / 8;  // score tiles of 8 keys
  constexpr int kDt = D / 8;        // output tiles of 8 dims
  float acc_o[kDt][4];
#pragma unroll
  for (int i = 0; i < kDt; ++i) acc_o[i][0] = acc_o[i][1] = acc_o[i][2] = acc_o[i][3] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY};  // running max of the log2-domain scores, rows g and g+8
  float l_run[2] = {0.0f, 0.0f};            // this thread's share of the running sum
  const float scale2 = p.scale * kLog2e;
  const int row_lo = q0 + warp * 16 + g;  // query rows of acc[.][0..1] and acc[.][2..3]
  const int rows[2] = {row_lo, row_lo + 8};

  for (int j = 0; j < n_blocks; ++j) {
    cp_async_wait<1>();
    __syncthreads();
    const T* tK = sK + (j & 1) * kBlockN * D;
    const T* tV = sV + (j & 1) * kBlockN * D;

    // S = Q K^T for 16 rows x 64 keys
    float s[kNt][4];
#pragma unroll
    for (int i = 0; i < kNt; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
    {
      const int mi = lane >> 3, ri = lane & 7;
#pragma unroll
      for (int kk = 0; kk < kSteps; ++kk) {
#pragma unroll
        for (int nt2 = 0; nt2 < kNt / 2; ++nt2) {
          uint32_t kf[4];
          const int key = nt2 * 16 + ri + (mi >> 1) * 8;
          ldmatrix_x4(kf, smem_u32(tK + swz<D>(key, kk * 2 + (mi & 1))));
          mma16816<T>(s[2 * nt2], qf[kk], kf[0], kf[1]);
          mma16816<T>(s[2 * nt2 + 1], qf[kk], kf[2], kf[3]);
        }
      }
    }

    // scale to the exp2 domain, add the bias, mask padded / future keys
    const int key0 = j * kBlockN;
    const bool need_mask = key0 + kBlockN > kv_len || (p.causal && key0 + kBlockN - 1 > q0 + causal_shift);
#pragma unroll
    for (int nt = 0; nt < kNt; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = rows[e >> 1];
        const int key = key0 + nt * 8 + 2 * t4 + (e & 1);
        float v = s[nt][e] * scale2;
        if (p.bias && row < p.Lq && key < p.Lk)
          v += kLog2e * load_float(p.bias, p.bias_t,
                                   b * p.bias_sb + h * p.bias_sh + row * p.bias_sq + key * p.bias_sk);
        if (need_mask && (key >= kv_len || (p.causal && key > row + causal_shift))) v = -INFINITY;
        s[nt][e] = v;
      }
    }

    // online softmax per row: new max, rescale the running sum and output, exponentiate
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m_run[r], mx);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // rows with no visible key yet stay at 0
      alpha[r] = fast_exp2(m_run[r] - m_use);
      m_run[r] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < kNt; ++nt) {
        s[nt][2 * r] = fast_exp2(s[nt][2 * r] - m_use);
        s[nt][2 * r + 1] = fast_exp2(s[nt][2 * r + 1] - m_use);
        sum += s[nt][2 * r] + s[nt][2 * r + 1];
      }
      l_run[r] = l_run[r] * alpha[r] + sum;
    }
#pragma unroll
    for (int dt = 0; dt < kDt; ++dt) {
      acc_o[dt][0] *= alpha[0];
      acc_o[dt][1] *= alpha[0];
      acc_o[dt][2] *= alpha[1];
      acc_o[dt][3] *= alpha[1];
    }

    // O += P V: the score accumulators of two adjacent key tiles form one A fragment
    {
      const int mi = lane >> 3, ri = lane & 7;
#pragma unroll
      for (int kk = 0; kk < kBlockN / 16; ++kk) {
        uint32_t pf[4];
        pf[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
        pf[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
        pf[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        pf[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
        const int key = kk * 16 + ri + (mi & 1) * 8;
#pragma unroll
        for (int dt2 = 0; dt2 < kDt / 2; ++dt2) {
          uint32_t vf[4];
          ldmatrix_x4_trans(vf, smem_u32(tV + swz<D>(key, dt2 * 2 + (mi >> 1))));
          mma16816<T>(acc_o[2 * dt2], pf, vf[0], vf[1]);
          mma16816<T>(acc_o[2 * dt2 + 1], pf, vf[2], vf[3]);
        }
      }
    }

    __syncthreads();  // every warp is done with tile buffer j & 1
    if (j + 2 < n_blocks) {
      load_tile<T, D, kBlockN>(sK + (j & 1) * kBlockN * D, kb, p.k_sl, (j + 2) * kBlockN, p.Lk);
      load_tile<T, D, kBlockN>(sV + (j & 1) * kBlockN * D, vb, p.v_sl, (j + 2) * kBlockN, p.Lk);
    }
    cp_async_commit();
  }
  cp_async_wait<0>();

  // epilogue: full row sums across the quad, normalise, store O and the log-sum-exp
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    const int row = rows[r];
    if (row < p.Lq) {
      T* ob = static_cast<T*>(p.o) + b * p.o_sb + h * p.o_sh + static_cast<int64_t>(row) * p.o_sl;
#pragma unroll
      for (int dt = 0; dt < kDt; ++dt) {
        const int col = dt * 8 + 2 * t4;
        Elem<T>::store(ob, col * p.o_sd, acc_o[dt][2 * r] * inv);
        Elem<T>::store(ob, (col + 1) * p.o_sd, acc_o[dt][2 * r + 1] * inv);
      }
      if (p.lse && t4 == 0)
        p.lse[b * p.lse_sb + h * p.lse_sh + row * p.lse_sl] = l > 0.0f ? m_run[r] * kLn2 + logf(l) : -INFINITY;
    }
  }
}

template <class T, int D>
void launch(DeviceContext& ctx, const AttnParams& p) {
  const size_t smem = static_cast<size_t>(kBlockM + 4 * kBlockN) * D * sizeof(T);
  if (smem > ctx.smem_optin)
    throw std::runtime_error("flash attention needs " + std::to_string(smem) + " bytes of shared memory per block");
  auto kernel = flash_fwd_kernel<T, D>;
  ND_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  dim3 grid((p.Lq + kBlockM - 1) / kBlockM, p.H, p.B);
  kernel<<<grid, kThreads, smem, ctx.compute>>>(p);
  ND_CUDA_CHECK_LAUNCH("flash_fwd_kernel");
}

}  // namespace flash

static bool aligned16(const void* ptr, int64_t sb, int64_t sh, int64_t sl) {
  return reinterpret_cast<uintptr_t>(ptr) % 16 == 0 && sb % 8 == 0 && sh % 8 == 0 && sl % 8 == 0;
}

bool flash_attention_supported(const AttnParams& p) {
  if (p.qkv_t != DType::BF16 && p.qkv_t != DType::F16) return false;
  if (p.o_t != p.qkv_t) return false;
  if (p.D != p.Dv || (p.D != 64 && p.D != 128)) return false;
  if (p.H > 65535 || p.B > 65535) return false;
  return aligned16(p.q, p.q_sb, p.q_sh, p.q_sl) && aligned16(p.k, p.k_sb, p.k_sh, p.k_sl) &&
         aligned16(p.v, p.v_sb, p.v_sh, p.v_sl);
}

void flash_attention(DeviceContext& ctx, const AttnParams& p) {
  if (p.qkv_t == DType::BF16) {
    if (p.D == 64) flash::launch<__nv_bfloat16, 64>(ctx, p);
    else flash::launch<__nv_bfloat16, 128>(ctx, p);
  } else {
    if (p.D == 64) flash::launch<__half, 64>(ctx, p);
    else flash::launch<__half, 128>(ctx, p);
  }
}

}  // namespace cuda

void CudaBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse,
                            const AttentionArgs& args) {
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4 || out.dim() != 4)
    throw std::invalid_argument("attention expects 4-D q, k, v and out");
  for (const Tensor* t : {&q, &k, &v, static_cast<const Tensor*>(&out)}) cuda::require_float_dtype(*t, "attention");
  if (k.dtype != q.dtype || v.dtype != q.dtype)
    throw std::invalid_argument("attention on CUDA needs q, k and v of one dtype, got " + q.describe() + ", " +
                                k.describe() + ", " + v.describe());
  for (const Tensor* t : {&q, &k, &v})
    if (t->strides[3] != 1 && t->shape[3] > 1)
      throw std::invalid_argument("attention needs a contiguous last dim, got strides " + shape_str(t->strides));
  cuda::AttnParams p;
  p.B = static_cast<int>(q.shape[0]);
  p.H = static_cast<int>(q.shape[1]);
  p.Hk = static_cast<int>(k.shape[1]);
  p.Lq = static_cast<int>(q.shape[2]);
  p.Lk = static_cast<int>(k.shape[2]);
  p.D = static_cast<int>(q.shape[3]);
  p.Dv = static_cast<int>(v.shape[3]);
  if (p.B == 0 || p.H == 0 || p.Lq == 0) return;  // Dv == 0 still writes lse (generic kernel)
  if (p.Hk == 0 || p.H % p.Hk != 0) throw std::invalid_argument("attention: query heads must be a multiple of kv heads");
  cuda::DeviceContext& ctx = cuda::ctx_for(out);
  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  p.o = out.data();
  p.qkv_t = q.dtype;
  p.o_t = out.dtype;
  p.q_sb = q.strides[0], p.q_sh = q.strides[1], p.q_sl = q.strides[2];
  p.k_sb = k.strides[0], p.k_sh = k.strides[1], p.k_sl = k.strides[2];
  p.v_sb = v.strides[0], p.v_sh = v.strides[1], p.v_sl = v.strides[2];
  p.o_sb = out.strides[0], p.o_sh = out.strides[1], p.o_sl = out.strides[2], p.o_sd = out.strides[3];
  if (lse.defined()) {
    if (lse.dtype != DType::F32 || lse.dim() != 3) throw std::invalid_argument("attention lse must be float32 [B,H,Lq]");
    p.lse = lse.ptr<float>();
    p.lse_sb = lse.strides[0], p.lse_sh = lse.strides[1], p.lse_sl = lse.strides[2];
  }
  p.scale = args.scale;
  p.causal = args.causal;
  if (args.kv_lens.defined()) {
    if (args.kv_lens.dtype != DType::I32 || args.kv_lens.numel() != p.B || !args.kv_lens.is_contiguous())
      throw std::invalid_argument("attention kv_lens must be a contiguous int32 [B] tensor");
    p.kv_lens = args.kv_lens.ptr<int32_t>();
  }
  if (args.bias.defined()) {
    cuda::require_float_dtype(args.bias, "attention bias");
    Tensor bias = args.bias.expand({q.shape[0], q.shape[1], q.shape[2], k.shape[2]});
    p.bias = bias.data();
    p.bias_t = bias.dtype;
    p.bias_sb = bias.strides[0], p.bias_sh = bias.strides[1], p.bias_sq = bias.strides[2], p.bias_sk = bias.strides[3];
  }
  if (p.Lk == 0) {  // no keys at all: zero output, lse -inf
    fill(out, 0.0);
    if (lse.defined()) fill(lse, -INFINITY);
    return;
  }
  if (cuda::flash_attention_supported(p)) cuda::flash_attention(ctx, p);
  else cuda::generic_attention(ctx, p);
}

}  // namespace nd
