// normalizeChannels against a float64 reference of F.normalize(x, dim=1) * scale * w + b (+ SiLU).
import t from 'tap';

import * as E from '../../lib/engine/index.js';
import { randomArray, relL2, roundBf16 } from '../helpers/numeric.js';

/** float64 reference over [N, C, S] (S = product of the trailing dims). */
function reference(
  x: Float64Array, shape: number[], w: Float64Array | null, b: Float64Array | null,
  scale: number, eps: number, silu: boolean,
): Float64Array {
  const [n, c] = shape as [number, number];
  const s = shape.slice(2).reduce((a, d) => a * d, 1);
  const out = new Float64Array(x.length);
  for (let i = 0; i < n; ++i) {
    for (let p = 0; p < s; ++p) {
      let ss = 0;
      for (let ch = 0; ch < c; ++ch) ss += (x[(i * c + ch) * s + p] as number) ** 2;
      const inv = scale / Math.max(Math.sqrt(ss), eps);
      for (let ch = 0; ch < c; ++ch) {
        const k = (i * c + ch) * s + p;
        const v = (x[k] as number) * inv * (w ? (w[ch] as number) : 1) + (b ? (b[ch] as number) : 0);
        out[k] = silu ? v / (1 + Math.exp(-v)) : v;
      }
    }
  }
  return out;
}

const cases: Array<{ shape: number[]; weight: boolean; bias: boolean; silu: boolean }> = [
  { shape: [1, 7, 3, 5, 6], weight: true, bias: false, silu: true }, // NCDHW, as in the VAE resnets
  { shape: [2, 12, 2, 9, 31], weight: true, bias: true, silu: false }, // 558 positions: several tiles, partial tail
  { shape: [3, 5, 4, 4], weight: false, bias: false, silu: false }, // NCHW, no affine
  { shape: [4, 16], weight: true, bias: true, silu: true }, // no spatial dims
  { shape: [1, 1, 300], weight: true, bias: false, silu: false }, // a single channel normalises to sign(x)
];

t.test('normalizeChannels matches the float64 reference', async (t) => {
  let seed = 10;
  for (const cs of cases) {
    const numel = cs.shape.reduce((a, d) => a * d, 1);
    const c = cs.shape[1] as number;
    const x = randomArray(numel, ++seed, -2, 2);
    const w = cs.weight ? randomArray(c, ++seed, 0.5, 1.5) : null;
    const b = cs.bias ? randomArray(c, ++seed, -0.5, 0.5) : null;
    const scale = Math.sqrt(c);
    const ref = reference(x, cs.shape, w, b, scale, 1e-12, cs.silu);
    const got = E.scope(() =>
      E.normalizeChannels(
        E.tensor(Float32Array.from(x), cs.shape),
        w && E.tensor(Float32Array.from(w), [c]),
        b && E.tensor(Float32Array.from(b), [c]),
        { scale, activation: cs.silu ? 'silu' : 'none' },
      ).toFloat32(),
    );
    t.ok(relL2(got, ref) < 2e-6, `[${cs.shape}] weight=${cs.weight} bias=${cs.bias} silu=${cs.silu}: rel-L2 ${relL2(got, ref).toExponential(2)}`);
  }
});

t.test('normalizeChannels: zero vectors stay zero (norm clamped at eps), strided input, bf16 input', async (t) => {
  E.scope(() => {
    // channel vectors at positions 0 and 2 are all zero: F.normalize gives 0, not NaN
    const x = E.tensor([0, 1, 0, 0, -2, 0, 0, 2, 0], [1, 3, 3]);
    t.same(E.normalizeChannels(x, null, null, { scale: 2 }).toArray(), Array.from(Float32Array.from([0, 2 / 3, 0, 0, -4 / 3, 0, 0, 4 / 3, 0])));

    // a permuted (non-contiguous) view gives the same result as its contiguous copy
    const base = E.tensor(Float32Array.from(randomArray(2 * 5 * 6, 3)), [2, 6, 5]);
    const view = base.permute(0, 2, 1); // [2, 5, 6], channel dim strided
    const a = E.normalizeChannels(view, null, null, { scale: 1.5 }).toFloat32();
    const b = E.normalizeChannels(view.contiguous(), null, null, { scale: 1.5 }).toFloat32();
    t.same(Array.from(a), Array.from(b));

    // bfloat16 input: computed in float32, stored bf16
    const xs = roundBf16(randomArray(2 * 8 * 10, 4, -3, 3));
    const ref = roundBf16(reference(xs, [2, 8, 10], null, null, Math.sqrt(8), 1e-12, true));
    const got = E.normalizeChannels(E.tensor(Float32Array.from(xs), [2, 8, 10]).to('bfloat16'), null, null, {
      scale: Math.sqrt(8),
      activation: 'silu',
    });
    t.equal(got.dtype, 'bfloat16');
    t.ok(relL2(got.toFloat32(), ref) < 8e-3);
  });
});

t.test('normalizeChannels rejects bad arguments with clear errors', async (t) => {
  E.scope(() => {
    const x = E.zeros([1, 4, 2, 2]);
    t.throws(() => E.normalizeChannels(x, E.ones([3]), null), /weight float32\[3\] must be \[4\]/);
    t.throws(() => E.normalizeChannels(x, E.ones([4, 1, 1]), null), /weight float32\[4, 1, 1\] must be \[4\]/);
    t.throws(() => E.normalizeChannels(x, null, E.ones([5])), /bias float32\[5\] must be \[4\]/);
    t.throws(() => E.normalizeChannels(E.zeros([4]), null, null), /needs \[N, C, \.\.\.\]/);
    t.throws(() => E.normalizeChannels(E.zeros([1, 4], { dtype: 'int32' }), null, null), /float32\/float16\/bfloat16/);
    t.throws(() => E.normalizeChannels(x, null, null, { eps: -1 }), /eps must be >= 0/);
    t.throws(() => E.normalizeChannels(x, null, null, { activation: 'gelu' as 'silu' }), /activation must be/);
  });
});
