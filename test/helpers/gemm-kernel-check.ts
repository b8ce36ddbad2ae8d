// Child-process check run by linalg.test.ts with ND_GEMM_KERNEL set: products of odd sizes
// through whichever micro-kernel the variable selects; prints a JSON report on stdout.
import * as E from '../../lib/engine/index.js';
import { native } from '../../lib/engine/native.js';
import { refAttention, refMatmul } from './linalg-ref.js';
import { randomArray, relL2 } from './numeric.js';

const kernelName = (native as unknown as { gemmKernelName(): string }).gemmKernelName();
let maxErr = 0;
let cases = 0;
const shapes: Array<[number, number, number]> = [[1, 1, 1], [7, 33, 129], [29, 300, 50], [6, 16, 16], [15, 257, 33]];
for (const [M, K, N] of shapes) {
  E.scope(() => {
    const a = randomArray(M * K, M + K), w = randomArray(N * K, N + K), bias = randomArray(N, N);
    const at = E.tensor(Float32Array.from(a), [M, K]);
    const wt = E.tensor(Float32Array.from(w), [N, K]);
    const out = E.linear(at, wt, E.tensor(Float32Array.from(bias), [N]), 'relu');
    const wT = new Float64Array(K * N);
    for (let n = 0; n < N; ++n) for (let k = 0; k < K; ++k) wT[k * N + n] = w[n * K + k] as number;
    const ref = refMatmul(Float64Array.from(Float32Array.from(a)), [M, K], Float64Array.from(Float32Array.from(wT)), [K, N]).out;
    for (let i = 0; i < M; ++i) for (let j = 0; j < N; ++j) ref[i * N + j] = Math.max(0, (ref[i * N + j] as number) + Math.fround(bias[j] as number));
    maxErr = Math.max(maxErr, relL2(out.toFloat32(), ref));
    // transposed A operand (column stride != 1)
    const prod = E.matmul(wt, at.transpose(0, 1));
    const ref2 = refMatmul(Float64Array.from(Float32Array.from(w)), [N, K], Float64Array.from(E.tensor(Float32Array.from(a), [M, K]).transpose(0, 1).toFloat32()), [K, M]).out;
    maxErr = Math.max(maxErr, relL2(prod.toFloat32(), ref2));
    cases += 2;
  });
}
// attention drives the same micro-kernel: GQA, causal, kv_lens, a partial last key tile
E.scope(() => {
  const dims = [2, 4, 2, 37, 300, 40, 24];
  const [B, H, Hk, Lq, Lk, D, Dv] = dims as [number, number, number, number, number, number, number];
  const q = Float64Array.from(Float32Array.from(randomArray(B * H * Lq * D, 1, -2, 2)));
  const k = Float64Array.from(Float32Array.from(randomArray(B * Hk * Lk * D, 2, -2, 2)));
  const v = Float64Array.from(Float32Array.from(randomArray(B * Hk * Lk * Dv, 3)));
  const kvLens = [300, 150];
  const out = E.attention(
    E.tensor(Float32Array.from(q), [B, H, Lq, D]), E.tensor(Float32Array.from(k), [B, Hk, Lk, D]),
    E.tensor(Float32Array.from(v), [B, Hk, Lk, Dv]),
    { causal: true, kvLens: E.tensor(Int32Array.from(kvLens), [B]) },
  );
  const ref = refAttention(q, k, v, dims, { scale: 1 / Math.sqrt(D), causal: true, kvLens });
  maxErr = Math.max(maxErr, relL2(out.toFloat32(), ref.out));
  cases += 1;
});
process.stdout.write(JSON.stringify({ kernel: kernelName, maxErr, cases }));
