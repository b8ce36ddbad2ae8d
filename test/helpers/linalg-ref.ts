// Naive float64 references for the linear-algebra ops (matmul with batch broadcasting,
// attention with masks and bias) shared by the linalg tests.

export function shapeSize(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** torch.matmul in float64 for >= 2-D operands given as row-major values. */
export function refMatmul(a: Float64Array, as: readonly number[], b: Float64Array, bs: readonly number[]) {
  const M = as[as.length - 2] as number, K = as[as.length - 1] as number, N = bs[bs.length - 1] as number;
  const ba = as.slice(0, -2), bb = bs.slice(0, -2);
  const n = Math.max(ba.length, bb.length);
  const pa = [...Array<number>(n - ba.length).fill(1), ...ba];
  const pb = [...Array<number>(n - bb.length).fill(1), ...bb];
  const batch = pa.map((d, i) => Math.max(d, pb[i] as number));
  const total = shapeSize(batch);
  const out = new Float64Array(total * M * N);
  const idx = new Array<number>(n).fill(0);
  for (let bi = 0; bi < total; ++bi) {
    let oa = 0, ob = 0, sa = 1, sb = 1;
    for (let d = n - 1; d >= 0; --d) {
      if ((pa[d] as number) > 1) oa += (idx[d] as number) * sa;
      if ((pb[d] as number) > 1) ob += (idx[d] as number) * sb;
      sa *= pa[d] as number;
      sb *= pb[d] as number;
    }
    const A = oa * M * K, B = ob * K * N, O = bi * M * N;
    for (let i = 0; i < M; ++i)
      for (let k = 0; k < K; ++k) {
        const x = a[A + i * K + k] as number;
        for (let j = 0; j < N; ++j) out[O + i * N + j] = (out[O + i * N + j] as number) + x * (b[B + k * N + j] as number);
      }
    for (let d = n - 1; d >= 0; --d) {
      idx[d] = (idx[d] as number) + 1;
      if ((idx[d] as number) < (batch[d] as number)) break;
      idx[d] = 0;
    }
  }
  return { out, shape: [...batch, M, N] };
}

/** erf to ~1e-15 (series below 3, continued fraction above). */
export function erf(x: number): number {
  const s = Math.sign(x);
  const a = Math.abs(x);
  if (a < 3) {
    let sum = a;
    let term = a;
    for (let n = 1; n < 60; ++n) {
      term *= (-a * a) / n;
      sum += term / (2 * n + 1);
    }
    return (s * 2 * sum) / Math.sqrt(Math.PI);
  }
  let cf = 0;
  for (let n = 60; n >= 1; --n) cf = n / 2 / (a + cf);
  return s * (1 - Math.exp(-a * a) / Math.sqrt(Math.PI) / (a + cf));
}

export interface RefAttentionOptions {
  scale: number;
  causal?: boolean;
  kvLens?: number[];
  /** additive bias for (b, h, i, j) */
  bias?: (b: number, h: number, i: number, j: number) => number;
}

/**
 * Scaled-dot-product attention in float64 over row-major q [B,H,Lq,D], k [B,Hk,Lk,D], v [B,Hk,Lk,Dv]
 * (query head h uses kv head floor(h / (H / Hk))). Causal: query i sees keys j <= i + Lk - Lq.
 * Rows that see no key give zeros and lse = -Infinity.
 */
export function refAttention(
  q: Float64Array, k: Float64Array, v: Float64Array,
  [B, H, Hk, Lq, Lk, D, Dv]: number[],
  opts: RefAttentionOptions,
) {
  const out = new Float64Array(B * H * Lq * Dv);
  const lse = new Float64Array(B * H * Lq);
  const group = H / Hk;
  const logits = new Float64Array(Lk);
  for (let b = 0; b < B; ++b)
    for (let h = 0; h < H; ++h) {
      const hk = Math.floor(h / group);
      const len = opts.kvLens ? (opts.kvLens[b] as number) : Lk;
      for (let i = 0; i < Lq; ++i) {
        const qo = ((b * H + h) * Lq + i) * D;
        let mx = -Infinity;
        for (let j = 0; j < Lk; ++j) {
          const visible = j < len && (!opts.causal || j <= i + Lk - Lq);
          if (!visible) {
            logits[j] = -Infinity;
            continue;
          }
          const ko = ((b * Hk + hk) * Lk + j) * D;
          let s = 0;
          for (let d = 0; d < D; ++d) s += (q[qo + d] as number) * (k[ko + d] as number);
          s = s * opts.scale + (opts.bias ? opts.bias(b, h, i, j) : 0);
          logits[j] = s;
          if (s > mx) mx = s;
        }
        const oo = ((b * H + h) * Lq + i) * Dv;
        if (mx === -Infinity) {
          lse[(b * H + h) * Lq + i] = -Infinity;
          continue;
        }
        let sum = 0;
        for (let j = 0; j < Lk; ++j) {
          const p = Math.exp((logits[j] as number) - mx);
          if (p === 0) continue;
          sum += p;
          const vo = ((b * Hk + hk) * Lk + j) * Dv;
          for (let d = 0; d < Dv; ++d) out[oo + d] = (out[oo + d] as number) + p * (v[vo + d] as number);
        }
        for (let d = 0; d < Dv; ++d) out[oo + d] = (out[oo + d] as number) / sum;
        lse[(b * H + h) * Lq + i] = mx + Math.log(sum);
      }
    }
  return { out, lse };
}
