// Fused DiT ops (normModulate, gatedAdd) on the CPU against float64 references.
import t from 'tap';

import * as E from '../../lib/engine/index.js';
import { randomArray, relL2 } from '../helpers/numeric.js';

function f32(x: Float64Array): Float64Array {
  return Float64Array.from(Float32Array.from(x));
}

function tensorOf(x: Float64Array, shape: number[], dtype: E.DType = 'float32'): E.Tensor {
  return E.tensor(Float32Array.from(x), shape, { dtype });
}

/** Index of element (row r, col j) of a table of shape `tshape` broadcast to [rows..., D]. */
function bcastIndex(xshape: number[], tshape: number[], flat: number): number {
  const n = xshape.length;
  const pad = [...Array(n - tshape.length).fill(1), ...tshape];
  let rem = flat;
  let idx = 0;
  let mul = 1;
  for (let d = n - 1; d >= 0; --d) {
    const i = rem % (xshape[d] as number);
    rem = Math.floor(rem / (xshape[d] as number));
    if ((pad[d] as number) !== 1) idx += i * mul;
    mul *= pad[d] as number;
  }
  return idx;
}

interface RefOpts {
  rms: boolean;
  w?: Float64Array;
  b?: Float64Array;
  shift?: { v: Float64Array; shape: number[] };
  scale?: { v: Float64Array; shape: number[] };
  eps: number;
}

function refNormModulate(x: Float64Array, shape: number[], o: RefOpts): Float64Array {
  const D = shape[shape.length - 1] as number;
  const rows = x.length / D;
  const out = new Float64Array(x.length);
  for (let r = 0; r < rows; ++r) {
    let mean = 0;
    if (!o.rms) {
      for (let j = 0; j < D; ++j) mean += x[r * D + j] as number;
      mean /= D;
    }
    let ss = 0;
    for (let j = 0; j < D; ++j) ss += ((x[r * D + j] as number) - mean) ** 2;
    const rstd = 1 / Math.sqrt(ss / D + o.eps);
    for (let j = 0; j < D; ++j) {
      const k = r * D + j;
      let v = ((x[k] as number) - mean) * rstd * (o.w ? (o.w[j] as number) : 1) + (o.b ? (o.b[j] as number) : 0);
      if (o.scale) v *= 1 + (o.scale.v[bcastIndex(shape, o.scale.shape, k)] as number);
      if (o.shift) v += o.shift.v[bcastIndex(shape, o.shift.shape, k)] as number;
      out[k] = v;
    }
  }
  return out;
}

t.test('normModulate (layer and rms, per-sample and per-token modulation) matches float64', async (t) => {
  const shape = [2, 5, 48];
  const n = 2 * 5 * 48;
  const x = f32(randomArray(n, 1, -3, 3).map((v, i) => v + (i % 48) * 0.05));
  const w = f32(randomArray(48, 2, 0.5, 1.5));
  const b = f32(randomArray(48, 3, -0.5, 0.5));
  const perSample = { v: f32(randomArray(2 * 48, 4, -0.5, 0.5)), shape: [2, 1, 48] };
  const perToken = { v: f32(randomArray(n, 5, -0.5, 0.5)), shape: [2, 5, 48] };
  const cases: Array<[string, RefOpts]> = [
    ['layer, no affine, per-sample shift+scale', { rms: false, shift: perSample, scale: perToken, eps: 1e-6 }],
    ['layer with weight+bias, per-token', { rms: false, w, b, shift: perToken, scale: perSample, eps: 1e-5 }],
    ['rms with weight, scale only', { rms: true, w, scale: perSample, eps: 1e-6 }],
    ['rms, no weight, no modulation', { rms: true, eps: 1e-6 }],
  ];
  for (const [name, o] of cases) {
    const got = E.normModulate(tensorOf(x, shape), {
      norm: o.rms ? 'rms' : 'layer',
      weight: o.w ? tensorOf(o.w, [48]) : null,
      bias: o.b ? tensorOf(o.b, [48]) : null,
      shift: o.shift ? tensorOf(o.shift.v, o.shift.shape) : null,
      scale: o.scale ? tensorOf(o.scale.v, o.scale.shape) : null,
      eps: o.eps,
    });
    t.same(got.shape, shape);
    const err = relL2(got.toFloat32(), refNormModulate(x, shape, o));
    t.ok(err <= 1e-5, `${name}: rel-L2 ${err}`);
  }
  // bf16 input and bf16 modulation tables: output in bf16 within bf16 rounding
  const xb = E.tensor(Float32Array.from(x), shape).to('bfloat16');
  const got = E.normModulate(xb, { shift: tensorOf(perSample.v, [2, 1, 48], 'bfloat16'), eps: 1e-6 });
  t.equal(got.dtype, 'bfloat16');
  const ref = refNormModulate(Float64Array.from(xb.toFloat32()), shape, {
    rms: false,
    shift: { v: Float64Array.from(tensorOf(perSample.v, [2, 1, 48], 'bfloat16').toFloat32()), shape: [2, 1, 48] },
    eps: 1e-6,
  });
  t.ok(relL2(got.toFloat32(), ref) <= 1e-2, 'bf16');
});

t.test('normModulate rejects bad arguments', async (t) => {
  const x = E.zeros([2, 3, 8]);
  t.throws(() => E.normModulate(x, { shift: E.zeros([2, 4, 8]), eps: 1e-6 }), /shift \[2, 4, 8\] does not broadcast to \[2, 3, 8\]/);
  t.throws(() => E.normModulate(x, { weight: E.zeros([7]), eps: 1e-6 }), /weight \[7\] must be \[8\]/);
  t.throws(() => E.normModulate(x, { norm: 'rms', bias: E.zeros([8]), eps: 1e-6 }), /RMS norm takes no bias/);
  t.throws(() => E.normModulate(E.zeros([2, 8], { dtype: 'int32' }), { eps: 1e-6 }), /input must be float32/);
  t.throws(() => E.normModulate(x, { eps: -1 }), /eps must be >= 0/);
});

t.test('gatedAdd broadcasts y and gate to x and promotes like add', async (t) => {
  const shape = [3, 7, 33];
  const n = 3 * 7 * 33;
  const x = f32(randomArray(n, 11));
  const y = f32(randomArray(n, 12));
  const g = f32(randomArray(3 * 33, 13));
  const got = E.gatedAdd(tensorOf(x, shape), tensorOf(y, shape), tensorOf(g, [3, 1, 33]));
  const want = x.map((v, k) => v + (y[k] as number) * (g[bcastIndex(shape, [3, 1, 33], k)] as number));
  t.ok(relL2(got.toFloat32(), want) <= 1e-6, `rel-L2 ${relL2(got.toFloat32(), want)}`);
  // y as a transposed view, gate a per-feature vector, bf16 y promotes to float32
  const yt = tensorOf(y, [3, 33, 7]).transpose(1, 2);
  const ytv = new Float64Array(n);
  for (let a = 0; a < 3; ++a)
    for (let l = 0; l < 7; ++l) for (let d = 0; d < 33; ++d) ytv[(a * 7 + l) * 33 + d] = y[(a * 33 + d) * 7 + l] as number;
  const g2 = f32(randomArray(33, 14));
  const got2 = E.gatedAdd(tensorOf(x, shape), yt.to('bfloat16'), tensorOf(g2, [33]));
  t.equal(got2.dtype, 'float32');
  const ybf = Float64Array.from(E.tensor(Float32Array.from(ytv), shape).to('bfloat16').toFloat32());
  const want2 = x.map((v, k) => v + (ybf[k] as number) * (g2[k % 33] as number));
  t.ok(relL2(got2.toFloat32(), want2) <= 1e-6, 'strided bf16 y');
  t.throws(() => E.gatedAdd(E.zeros([2, 3]), E.zeros([2, 4]), E.zeros([3])), /y \[2, 4\] does not broadcast to \[2, 3\]/);
  t.throws(() => E.gatedAdd(E.zeros([2, 3]), E.zeros([2, 3]), E.zeros([2, 3], { dtype: 'int64' })), /gate must be float32/);
});
