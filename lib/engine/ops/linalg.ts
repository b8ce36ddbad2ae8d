// Matrix products and attention (csrc/core/ops_linalg.cpp, csrc/cpu/gemm.cpp, csrc/cpu/attention.cpp).
import { native, type NativeTensor } from '../native.js';
import { Tensor } from '../tensor.js';

declare module '../native.js' {
  interface NativeAddon {
    matmul(a: NativeTensor, b: NativeTensor): NativeTensor;
    linear(x: NativeTensor, w: NativeTensor, bias: NativeTensor | null, act: number): NativeTensor;
    attention(
      q: NativeTensor,
      k: NativeTensor,
      v: NativeTensor,
      scale: number,
      causal: boolean,
      kvLens: NativeTensor | null,
      bias: NativeTensor | null,
      returnLse: boolean,
    ): [NativeTensor, NativeTensor | null];
    loraMerge(base: NativeTensor, ups: NativeTensor[], downs: NativeTensor[], scales: number[], out: NativeTensor): void;
  }
}

export type Activation = 'none' | 'gelu_tanh' | 'gelu' | 'silu' | 'relu';
const ACT: Record<Activation, number> = { none: 0, gelu_tanh: 1, gelu: 2, silu: 3, relu: 4 };

/** torch.matmul for operands with >= 2 dims: batch dims broadcast, a [..., M, K] @ b [..., K, N]. */
export function matmul(a: Tensor, b: Tensor): Tensor {
  return new Tensor(native.matmul(a.handle, b.handle));
}

/**
 * torch.nn.functional.linear: x [..., K] @ weight[N, K]^T + bias[N], then an optional fused activation.
 * The weight may be float32, bfloat16 or float16 (widened inside the kernel); accumulation is float32.
 */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null, activation: Activation = 'none'): Tensor {
  return new Tensor(native.linear(x.handle, weight.handle, bias ? bias.handle : null, ACT[activation]));
}

export interface AttentionOptions {
  /** softmax scale; default 1/sqrt(head_dim) */
  scale?: number;
  /** causal mask (query i sees keys j <= i + Lk - Lq) */
  causal?: boolean;
  /** int32 [B]: valid key count per batch item (keys at and after it are masked) */
  kvLens?: Tensor | null;
  /** additive logit bias broadcastable to [B, H, Lq, Lk] (e.g. T5 relative position bias) */
  bias?: Tensor | null;
}

/**
 * Scaled dot-product attention computed flash-style (tiled, online softmax; never materialises
 * Lq x Lk). q [B, H, Lq, D], k [B, Hk, Lk, D], v [B, Hk, Lk, Dv] with H % Hk == 0 (grouped-query
 * attention); any strides with a contiguous last dim, so permuted [B, L, H, D] projections need
 * no copy. Returns [B, H, Lq, Dv] stored as [B, Lq, H, Dv] (so .transpose(1, 2) is contiguous).
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  const scale = opts.scale ?? 1 / Math.sqrt(q.size(-1));
  const [out] = native.attention(
    q.handle, k.handle, v.handle, scale, opts.causal ?? false,
    opts.kvLens ? opts.kvLens.handle : null, opts.bias ? opts.bias.handle : null, false,
  );
  return new Tensor(out);
}

/** attention() that also returns the log-sum-exp of the scaled logits per query, float32 [B, H, Lq]. */
export function attentionWithLse(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): { out: Tensor; lse: Tensor } {
  const scale = opts.scale ?? 1 / Math.sqrt(q.size(-1));
  const [out, lse] = native.attention(
    q.handle, k.handle, v.handle, scale, opts.causal ?? false,
    opts.kvLens ? opts.kvLens.handle : null, opts.bias ? opts.bias.handle : null, true,
  );
  return { out: new Tensor(out), lse: new Tensor(lse as NativeTensor) };
}

export interface LoraDelta {
  /** B (lora_B / lora_up) [out, rank] */
  up: Tensor;
  /** A (lora_A / lora_down) [rank, in] */
  down: Tensor;
  /** strength * alpha / rank */
  scale: number;
}

/**
 * out = base + sum_i scale_i * up_i @ down_i, accumulated in float32 and stored in out's dtype.
 * `out` must have base's shape; it may be a fresh tensor or the live weight being replaced.
 */
export function loraMerge(base: Tensor, deltas: LoraDelta[], out: Tensor): void {
  native.loraMerge(
    base.handle,
    deltas.map((d) => d.up.handle),
    deltas.map((d) => d.down.handle),
    deltas.map((d) => d.scale),
    out.handle,
  );
}
