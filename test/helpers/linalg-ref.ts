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
