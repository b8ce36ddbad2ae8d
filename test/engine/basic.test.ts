// Elementwise ops, reductions, softmax, layout ops and randn against float64 references.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import t from 'tap';

import * as E from '../../lib/engine/index.js';
import { randomArray, relL2, roundBf16, stridesOf } from '../helpers/numeric.js';
import { vecmathInputs } from '../helpers/vecmath-inputs.js';

function fromF64(x: Float64Array, shape: number[], dtype: E.DType = 'float32'): E.Tensor {
  return E.tensor(Float32Array.from(x), shape, { dtype });
}

/** Reference broadcasting binary op in float64. */
function refBinary(a: Float64Array, as: number[], b: Float64Array, bs: number[], f: (x: number, y: number) => number) {
  const n = Math.max(as.length, bs.length);
  const pa = [...Array(n - as.length).fill(1), ...as];
  const pb = [...Array(n - bs.length).fill(1), ...bs];
  const os = pa.map((d, i) => Math.max(d, pb[i] as number));
  const sa = stridesOf(pa).map((s, i) => (pa[i] === 1 ? 0 : s));
  const sb = stridesOf(pb).map((s, i) => (pb[i] === 1 ? 0 : s));
  const total = os.reduce((x, y) => x * y, 1);
  const out = new Float64Array(total);
  const idx = new Array(n).fill(0);
  for (let k = 0; k < total; ++k) {
    let ia = 0;
    let ib = 0;
    for (let d = 0; d < n; ++d) {
      ia += idx[d] * (sa[d] as number);
      ib += idx[d] * (sb[d] as number);
    }
    out[k] = f(a[ia] as number, b[ib] as number);
    for (let d = n - 1; d >= 0; --d) {
      if (++idx[d] < (os[d] as number)) break;
      idx[d] = 0;
    }
  }
  return { out, shape: os };
}

const unaryRefs: Array<[string, (x: E.Tensor) => E.Tensor, (x: number) => number, number, number]> = [
  ['neg', E.neg, (x) => -x, -3, 3],
  ['abs', E.abs, Math.abs, -3, 3],
  ['exp', E.exp, Math.exp, -20, 20],
  ['log', E.log, Math.log, 0.01, 50],
  ['sqrt', E.sqrt, Math.sqrt, 0, 50],
  ['rsqrt', E.rsqrt, (x) => 1 / Math.sqrt(x), 0.01, 50],
  ['sin', E.sin, Math.sin, -10, 10],
  ['cos', E.cos, Math.cos, -10, 10],
  ['tanh', E.tanh, Math.tanh, -6, 6],
  ['sigmoid', E.sigmoid, (x) => 1 / (1 + Math.exp(-x)), -20, 20],
  ['silu', E.silu, (x) => x / (1 + Math.exp(-x)), -20, 20],
  ['gelu', E.gelu, (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)), -6, 6],
  ['geluTanh', E.geluTanh, (x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3))), -6, 6],
  ['relu', E.relu, (x) => Math.max(0, x), -3, 3],
  ['square', E.square, (x) => x * x, -3, 3],
  ['reciprocal', E.reciprocal, (x) => 1 / x, 0.1, 10],
];

/** erfc(a) for a >= 0 without the cancellation of 1 - erf(a) (continued fraction from 3 on). */
function erfc(a: number): number {
  if (a < 3) return 1 - erf(a);
  let cf = 0;
  for (let n = 60; n >= 1; --n) cf = n / 2 / (a + cf);
  return Math.exp(-a * a) / Math.sqrt(Math.PI) / (a + cf);
}

function erf(x: number): number {
  // series/continued fraction good to ~1e-15 for the test range
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
  // erfc asymptotic for |x| >= 3
  let cf = 0;
  for (let n = 60; n >= 1; --n) cf = n / 2 / (a + cf);
  return s * (1 - Math.exp(-a * a) / Math.sqrt(Math.PI) / (a + cf));
}

t.test('unary ops match float64 references (f32 and bf16, odd sizes, strided views)', async (t) => {
  for (const [name, op, ref, lo, hi] of unaryRefs) {
    for (const shape of [[7], [3, 129], [2, 5, 1031]]) {
      const n = shape.reduce((a, b) => a * b, 1);
      const x = randomArray(n, n + name.length, lo, hi);
      const xf = Float64Array.from(Float32Array.from(x));
      const got = op(fromF64(x, shape)).toFloat32();
      t.ok(relL2(got, xf.map(ref)) <= 1e-5, `${name} f32 [${shape}] rel-L2 ${relL2(got, xf.map(ref))}`);
      const xb = roundBf16(x);
      const gotb = op(fromF64(x, shape, 'bfloat16'));
      t.equal(gotb.dtype, 'bfloat16');
      t.ok(relL2(gotb.toFloat32(), xb.map(ref)) <= 1e-2, `${name} bf16 [${shape}]`);
    }
    // transposed (non-contiguous) input
    const x = randomArray(6 * 11, 5, lo, hi);
    const xt = fromF64(x, [6, 11]).transpose(0, 1);
    t.notOk(xt.isContiguous);
    const got = op(xt).toFloat32();
    const xf = Float32Array.from(x);
    const want = new Float64Array(66);
    for (let i = 0; i < 11; ++i) for (let j = 0; j < 6; ++j) want[i * 6 + j] = ref(xf[j * 11 + i] as number);
    t.ok(relL2(got, want) <= 1e-5, `${name} on a transposed view`);
  }
});

t.test('every vector-math kernel (AVX-512, AVX2, portable) gives the same bits, a few ulp from float64', async (t) => {
  const script = fileURLToPath(new URL('../helpers/vecmath-kernel-check.ts', import.meta.url));
  const runs = ['avx512', 'avx2', 'generic'].map((kernel) => {
    const out = execFileSync(process.execPath, ['--import=tsx', script], { env: { ...process.env, ND_VEC_KERNEL: kernel }, encoding: 'utf8' });
    const report = JSON.parse(out) as { kernel: string; outputs: Record<string, string> };
    const decoded: Record<string, Float32Array> = {};
    for (const [name, b64] of Object.entries(report.outputs)) {
      const buf = Buffer.from(b64, 'base64');
      decoded[name] = new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
    }
    return { asked: kernel, kernel: report.kernel, outputs: decoded };
  });
  t.ok(runs.some((r) => r.kernel === 'generic'), 'the portable kernel ran');
  const { values, rows, cols, logits, linear } = vecmathInputs();
  const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));
  const refs: Record<string, (x: number) => number> = {
    exp: Math.exp,
    tanh: Math.tanh,
    sigmoid,
    silu: (x) => x * sigmoid(x),
    // x sigmoid(2u) = 0.5 x (1 + tanh u), without the float64 cancellation of 1 + tanh u for x << 0
    geluTanh: (x) => x * sigmoid(2 * Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)),
    gelu: (x) => 0.5 * x * (x < 0 ? erfc(-x / Math.SQRT2) : 1 + erf(x / Math.SQRT2)),
  };
  for (const run of runs) {
    for (const [name, ref] of Object.entries(refs)) {
      const got = run.outputs[name] as Float32Array;
      let bad = 0;
      for (let i = 0; i < values.length; ++i) {
        // float32 overflow/underflow of the true value; exp flushes below -87.3365 (1.2e-38). Far
        // out on the negative side the GELUs are e^-(x^3/10 or x^2/2): the float32 rounding of that
        // exponent bounds their relative accuracy (values there are below 1e-15).
        const x = values[i] as number;
        const want = Math.fround(ref(x));
        const g = got[i] as number;
        const tol = (2e-6 + 1e-8 * Math.abs(x) ** 3) * Math.abs(want) + 1e-30;
        const ok = Number.isNaN(want) ? Number.isNaN(g) : g === want || Math.abs(g - want) <= tol;
        if (!ok && bad++ < 3) t.fail(`${run.kernel} ${name}(${values[i]}) = ${g}, float64 ${want}`);
      }
      t.equal(bad, 0, `${run.kernel}: ${name} of ${values.length} values (special values first) within 2e-6 relative (|x| < 4)`);
    }
    const first = runs[0] as (typeof runs)[number];
    if (run !== first) {
      for (const name of [...Object.keys(refs), 'linearGelu']) {
        t.same(Buffer.from((run.outputs[name] as Float32Array).buffer), Buffer.from((first.outputs[name] as Float32Array).buffer),
          `${name}: ${run.kernel} gives the bits of ${first.kernel}`);
      }
    }
    // softmax: sums added in another order per width, so compared with float64 row by row;
    // masked entries and the fully masked row exactly 0
    const sm = run.outputs.softmax as Float32Array;
    let worst = 0;
    let zeros = true;
    for (let r = 0; r < rows; ++r) {
      const row = Array.from(logits.subarray(r * cols, (r + 1) * cols));
      const m = Math.max(...row);
      const e = row.map((v) => (m === -Infinity ? 0 : Math.exp(v - m)));
      const sum = e.reduce((a, b) => a + b, 0);
      const want = e.map((v) => (sum === 0 ? 0 : v / sum));
      const got = sm.subarray(r * cols, (r + 1) * cols);
      worst = Math.max(worst, relL2(got, want));
      want.forEach((w, j) => (zeros &&= w !== 0 || got[j] === 0));
    }
    t.ok(worst <= 1e-6, `${run.kernel}: softmax rows within rel-L2 ${worst.toExponential(2)}`);
    t.ok(zeros, `${run.kernel}: masked entries and the fully masked row are 0`);
    // the GEMM epilogue runs the same GELU: against float64 products
    const lg = run.outputs.linearGelu as Float32Array;
    const want = new Float64Array(linear.m * linear.n);
    for (let i = 0; i < linear.m; ++i)
      for (let j = 0; j < linear.n; ++j) {
        let acc = linear.bias[j] as number;
        for (let k = 0; k < linear.k; ++k) acc += (linear.x[i * linear.k + k] as number) * (linear.w[j * linear.k + k] as number);
        want[i * linear.n + j] = (refs.gelu as (x: number) => number)(acc);
      }
    t.ok(relL2(lg, want) <= 1e-6, `${run.kernel}: linear + bias + gelu epilogue rel-L2 ${relL2(lg, want).toExponential(2)}`);
  }
});

t.test('binary ops broadcast like numpy and promote dtypes', async (t) => {
  const cases: Array<[number[], number[]]> = [
    [[5], [5]],
    [[3, 1, 7], [4, 1]],
    [[2, 3, 65], [65]],
    [[1], [4, 33]],
    [[6, 1, 1, 9], [1, 5, 3, 1]],
  ];
  const ops: Array<[string, (a: E.Tensor, b: E.Tensor) => E.Tensor, (x: number, y: number) => number]> = [
    ['add', E.add, (x, y) => x + y],
    ['sub', E.sub, (x, y) => x - y],
    ['mul', E.mul, (x, y) => x * y],
    ['div', E.div, (x, y) => x / y],
    ['maximum', E.maximum, Math.max],
    ['minimum', E.minimum, Math.min],
    ['pow', E.pow, (x, y) => x ** y],
  ];
  for (const [as, bs] of cases) {
    const na = as.reduce((a, b) => a * b, 1);
    const nb = bs.reduce((a, b) => a * b, 1);
    for (const [name, op, f] of ops) {
      const a = randomArray(na, na, name === 'pow' ? 0.1 : -2, 2);
      const b = randomArray(nb, nb + 1, name === 'div' ? 0.5 : -2, 2);
      const af = Float64Array.from(Float32Array.from(a));
      const bf = Float64Array.from(Float32Array.from(b));
      const ref = refBinary(af, as, bf, bs, f);
      const got = op(fromF64(a, as), fromF64(b, bs));
      t.same(got.shape, ref.shape, `${name} shape`);
      t.ok(relL2(got.toFloat32(), ref.out) <= 1e-5, `${name} ${JSON.stringify(as)} x ${JSON.stringify(bs)}`);
    }
  }
  const mixed = E.add(E.tensor([1, 2], [2], { dtype: 'bfloat16' }), E.tensor([0.5, 0.25], [2]));
  t.equal(mixed.dtype, 'float32');
  t.same(mixed.toArray(), [1.5, 2.25]);
  t.equal(E.add(E.tensor([1, 2], [2], { dtype: 'bfloat16' }), E.tensor([3, 4], [2], { dtype: 'bfloat16' })).dtype, 'bfloat16');
  const ints = E.add(E.tensor([1, 2, 3], [3], { dtype: 'int64' }), E.tensor([10, 20, 30], [3], { dtype: 'int64' }));
  t.equal(ints.dtype, 'int64');
  t.same(ints.toArray(), [11, 22, 33]);
  t.throws(() => E.add(E.zeros([2, 3]), E.zeros([4])), /shapes \[2, 3\] and \[4\] cannot be broadcast/);
});

t.test('scalar ops, clamp, affine', async (t) => {
  const x = E.tensor([-2, -0.5, 0, 0.5, 2]);
  t.same(E.add(x, 1).toArray(), [-1, 0.5, 1, 1.5, 3]);
  t.same(E.mul(x, -2).toArray(), [4, 1, -0, -1, -4]);
  t.same(E.sub(x, 0.5).toArray(), [-2.5, -1, -0.5, 0, 1.5]);
  t.same(E.div(x, 2).toArray(), [-1, -0.25, 0, 0.25, 1]);
  t.same(E.clamp(x, -1, 1).toArray(), [-1, -0.5, 0, 0.5, 1]);
  t.same(E.affine(x, 2, 1).toArray(), [-3, 0, 1, 2, 5]);
  t.same(E.pow(E.abs(x), 2).toArray(), [4, 0.25, 0, 0.25, 4]);
  t.throws(() => E.clamp(x, 1, -1), /min <= max/);
  // integer tensors stay integer with integer scalars; a fractional one gives float32 (as torch)
  const ints = E.tensor([1, 2, 3], [3], { dtype: 'int32' });
  const check = (got: E.Tensor, dtype: E.DType, values: number[], what: string) => {
    t.equal(got.dtype, dtype, `${what}: ${dtype}`);
    t.same(got.toArray(), values, what);
  };
  check(E.mul(ints, 2), 'int32', [2, 4, 6], 'int * 2');
  check(E.add(ints, -1), 'int32', [0, 1, 2], 'int - 1');
  check(E.mul(ints, 0.5), 'float32', [0.5, 1, 1.5], 'int * 0.5');
  check(E.add(ints, 1.5), 'float32', [2.5, 3.5, 4.5], 'int + 1.5');
  check(E.affine(ints, 2, 0.25), 'float32', [2.25, 4.25, 6.25], 'int * 2 + 0.25');
  check(E.div(ints, 2), 'float32', [0.5, 1, 1.5], 'int / 2 (true division)');
  check(E.div(E.tensor([1, 2, 3], [3], { dtype: 'int64' }), 1), 'float32', [1, 2, 3], 'int64 / 1');
  check(E.clamp(ints, 1, 2), 'int32', [1, 2, 2], 'clamp(int, 1, 2)');
  check(E.clamp(ints, 1.5, 2.5), 'float32', [1.5, 2, 2.5], 'clamp(int, 1.5, 2.5)');
});

t.test('arange and linspace give torch\'s values bit for bit (recorded from torch 2.13 on the CPU)', async (t) => {
  const file = fileURLToPath(new URL('../fixtures/ranges/torch-ranges.json', import.meta.url));
  const data = JSON.parse(readFileSync(file, 'utf8')) as {
    cases: Array<{ op: 'arange' | 'linspace'; args: number[]; dtype: E.DType; n: number; float32_base64?: string; values?: number[] }>;
  };
  t.ok(data.cases.length >= 60);
  for (const c of data.cases) {
    const [a, b, third] = c.args as [number, number, number];
    const got = c.op === 'linspace' ? E.linspace(a, b, third, { dtype: c.dtype }) : E.arange(a, b, third, { dtype: c.dtype });
    const what = `${c.op}(${c.args.join(', ')}) ${c.dtype}`;
    t.equal(got.dtype, c.dtype);
    t.same(got.shape, [c.n], `${what}: ${c.n} elements`);
    if (c.float32_base64 !== undefined) {
      const want = Buffer.from(c.float32_base64, 'base64');
      const mine = Buffer.from(got.toFloat32().buffer);
      if (!mine.equals(want)) {
        const w = new Float32Array(want.buffer.slice(want.byteOffset, want.byteOffset + want.length));
        const g = got.toFloat32();
        const i = g.findIndex((v, k) => v !== w[k]);
        t.fail(`${what}: element ${i} is ${g[i]}, torch ${w[i]}`);
      } else t.pass(`${what}: torch's bits`);
    } else {
      t.same(got.toArray(), c.values, `${what}: torch's values`);
    }
  }
  // integer dtypes: integer arguments, results within the dtype
  t.throws(() => E.arange(0, 5.5, 1, { dtype: 'int64' }), /integer dtype needs integer bounds and step, got end 5\.5/);
  t.throws(() => E.arange(0, 10, 0.5, { dtype: 'int32' }), /got step 0\.5/);
  t.throws(() => E.arange(250, 260, 1, { dtype: 'uint8' }), /value 256 does not fit uint8/);
  t.throws(() => E.linspace(0, 300, 4, { dtype: 'uint8' }), /value 300 does not fit uint8/);
  t.throws(() => E.linspace(0, Infinity, 3), /finite bounds/);
  t.same(E.arange(5, 0).shape, [0], 'an empty range');
  t.same(E.linspace(0, 1, 0).shape, [0]);
});

t.test('reductions and softmax over any dim', async (t) => {
  const shape = [3, 17, 5];
  const x = randomArray(255, 9, -3, 3);
  const xf = Float64Array.from(Float32Array.from(x));
  const tx = fromF64(x, shape);
  for (let dim = 0; dim < 3; ++dim) {
    const os = [...shape];
    os[dim] = 1;
    const n = 255 / (shape[dim] as number);
    const st = stridesOf(shape);
    const refs = { sum: new Float64Array(n), mean: new Float64Array(n), max: new Float64Array(n).fill(-Infinity), min: new Float64Array(n).fill(Infinity) };
    const ost = stridesOf(os);
    for (let i = 0; i < 255; ++i) {
      const idx = shape.map((_, d) => Math.floor(i / (st[d] as number)) % (shape[d] as number));
      idx[dim] = 0;
      const o = idx.reduce((a, v, d) => a + v * (ost[d] as number), 0);
      const v = xf[i] as number;
      refs.sum[o] = (refs.sum[o] as number) + v;
      refs.max[o] = Math.max(refs.max[o] as number, v);
      refs.min[o] = Math.min(refs.min[o] as number, v);
    }
    for (let o = 0; o < n; ++o) refs.mean[o] = (refs.sum[o] as number) / (shape[dim] as number);
    t.ok(relL2(E.sum(tx, dim).toFloat32(), refs.sum) <= 1e-5, `sum dim ${dim}`);
    t.ok(relL2(E.mean(tx, dim, true).toFloat32(), refs.mean) <= 1e-5, `mean dim ${dim}`);
    t.same(E.mean(tx, dim, true).shape, os);
    t.same(E.sum(tx, dim).shape, shape.filter((_, d) => d !== dim));
    t.ok(relL2(E.max(tx, dim).toFloat32(), refs.max) <= 1e-7, `max dim ${dim}`);
    t.ok(relL2(E.min(tx, dim).toFloat32(), refs.min) <= 1e-7, `min dim ${dim}`);
    // softmax
    const sm = E.softmax(tx, dim).toFloat32();
    const ref = new Float64Array(255);
    for (let i = 0; i < 255; ++i) {
      const idx = shape.map((_, d) => Math.floor(i / (st[d] as number)) % (shape[d] as number));
      idx[dim] = 0;
      const o = idx.reduce((a, v, d) => a + v * (ost[d] as number), 0);
      let s = 0;
      for (let k = 0; k < (shape[dim] as number); ++k) {
        const j = i - (Math.floor(i / (st[dim] as number)) % (shape[dim] as number)) * (st[dim] as number) + k * (st[dim] as number);
        s += Math.exp((xf[j] as number) - (refs.max[o] as number));
      }
      ref[i] = Math.exp((xf[i] as number) - (refs.max[o] as number)) / s;
    }
    t.ok(relL2(sm, ref) <= 1e-5, `softmax dim ${dim}`);
  }
  const masked = E.softmax(E.tensor([0, -Infinity, 1, -Infinity])).toArray();
  t.equal(masked[1], 0);
  t.equal(masked[3], 0);
  t.ok(Math.abs((masked[0] as number) + (masked[2] as number) - 1) < 1e-6);
});

t.test('views share storage; contiguous/reshape copy only when needed', async (t) => {
  const x = E.arange(0, 24).reshape(2, 3, 4);
  const p = x.permute(2, 0, 1);
  t.same(p.shape, [4, 2, 3]);
  t.notOk(p.isContiguous);
  t.equal(E.storageInfo(p).offset, 0);
  t.same(p.contiguous().toArray().slice(0, 6), [0, 4, 8, 12, 16, 20]);
  const s = x.slice(2, 1, 3);
  t.same(s.shape, [2, 3, 2]);
  t.same(s.toArray(), [1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22]);
  t.same(x.slice(1, 0, 3, 2).toArray(), [0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 20, 21, 22, 23]);
  t.same(x.select(0, 1).select(0, 2).toArray(), [20, 21, 22, 23]);
  t.same(E.tensor([1, 2, 3], [3, 1]).expand(3, 2).toArray(), [1, 1, 2, 2, 3, 3]);
  t.throws(() => p.view(24), /without a copy/);
  t.same(p.reshape(24).toArray().slice(0, 3), [0, 4, 8]);
  t.same(x.view(6, -1).shape, [6, 4]);
  t.throws(() => x.reshape(5, -1), /cannot reshape/);
  t.same(x.chunk(2, 2).map((c) => c.shape), [[2, 3, 2], [2, 3, 2]]);
  t.same(x.split([1, 2], 1).map((c) => c.shape), [[2, 1, 4], [2, 2, 4]]);
  t.same(x.flatten(1).shape, [2, 12]);
  // copy_ into a strided view writes through to the base
  const z = E.zeros([3, 4]);
  z.slice(1, 1, 3).copy_(E.tensor([7, 8], [1, 2]));
  t.same(z.toArray(), [0, 7, 8, 0, 0, 7, 8, 0, 0, 7, 8, 0]);
  t.throws(() => z.slice(1, 0, 2).copy_(E.zeros([3])), /does not broadcast/);
});

t.test('concat, stack and pad', async (t) => {
  const a = E.arange(0, 6).reshape(2, 3);
  const b = E.arange(6, 12).reshape(2, 3);
  t.same(E.concat([a, b], 0).toArray(), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  t.same(E.concat([a, b], 1).toArray(), [0, 1, 2, 6, 7, 8, 3, 4, 5, 9, 10, 11]);
  t.same(E.concat([a.transpose(0, 1), b.transpose(0, 1)], -1).shape, [3, 4]);
  t.same(E.stack([a, b], 0).shape, [2, 2, 3]);
  t.throws(() => E.concat([a, E.zeros([3, 3])], 1), /differ in dim 0/);
  t.same(E.pad(a, [1, 0, 0, 1], -1).toArray(), [-1, 0, 1, 2, -1, 3, 4, 5, -1, -1, -1, -1]);
  t.same(E.pad(a, [-1, 0]).toArray(), [1, 2, 4, 5]);
});

t.test('casts round like torch (bf16 nearest-even, float->int truncation)', async (t) => {
  const x = E.tensor([1.0, 1.00390625, 1.01171875, -2.5, 3.7]);
  t.same(x.to('bfloat16').toArray(), [1.0, 1.0, 1.015625, -2.5, 3.703125]);
  t.same(x.to('int32').toArray(), [1, 1, 1, -2, 3]);
  t.same(E.tensor([1.5, 2.25], [2]).to('float16').toArray(), [1.5, 2.25]);
  t.same(E.tensor([0, 0.5, 448, 1000, -0.001953125], [5]).to('float8_e4m3').toArray(), [0, 0.5, 448, 448, -0.001953125]);
  // float -> uint8 truncates too, saturating at 0 and 255 (torch wraps out-of-range values around)
  t.same(E.tensor([0.4, 1.6, 254.7, 255.9, -3, 300, NaN]).to('uint8').toArray(), [0, 1, 254, 255, 0, 255, 0]);
  const big = E.tensor([2 ** 40 + 1], [1], { dtype: 'int64' });
  t.equal(big.to('int64').toArray()[0], 2 ** 40 + 1);
});

t.test('randn: deterministic Philox stream, drawable in pieces, standard normal', async (t) => {
  const a = E.randn([1000, 100], { seed: 42 }).toFloat32();
  const b = E.randn([1000, 100], { seed: 42 }).toFloat32();
  t.same(a, b);
  const piece = E.randn([333], { seed: 42, offset: 1001 }).toFloat32();
  t.same(Array.from(piece), Array.from(a.subarray(1001, 1334)));
  const c = E.randn([100], { seed: 43 }).toFloat32();
  t.not(c[0], a[0]);
  let mean = 0;
  let m2 = 0;
  for (const v of a) mean += v;
  mean /= a.length;
  for (const v of a) m2 += (v - mean) ** 2;
  const std = Math.sqrt(m2 / a.length);
  t.ok(Math.abs(mean) < 0.01, `mean ${mean}`);
  t.ok(Math.abs(std - 1) < 0.01, `std ${std}`);
  // tail mass roughly right: P(|z| > 2) = 0.0455
  const tail = a.filter((v) => Math.abs(v) > 2).length / a.length;
  t.ok(Math.abs(tail - 0.0455) < 0.003, `tail ${tail}`);
  t.equal(E.randn([4], { seed: 1, dtype: 'bfloat16' }).dtype, 'bfloat16');
});

t.test('scopes free intermediates; live tensor count and bytes return to baseline', async (t) => {
  const base = E.memoryStats();
  const kept = E.scope(() => {
    const x = E.randn([256, 256], { seed: 1 });
    const y = E.mul(x, 2);
    const z = E.add(y, x);
    const inner = E.scope(() => [E.exp(z), E.neg(z)]);
    return { out: inner[0], n: 3 };
  });
  const mid = E.memoryStats();
  t.equal(mid.liveTensors, base.liveTensors + 1, 'only the returned tensor is alive');
  t.equal(mid.hostBytes, base.hostBytes + 256 * 256 * 4);
  kept.out.dispose();
  const end = E.memoryStats();
  t.equal(end.liveTensors, base.liveTensors);
  t.equal(end.hostBytes, base.hostBytes);
  t.throws(() => kept.out.toArray(), /disposed/);
  // a throwing scope frees everything too
  t.throws(() =>
    E.scope(() => {
      E.zeros([1000]);
      throw new Error('boom');
    }),
  );
  t.equal(E.memoryStats().hostBytes, base.hostBytes);
  // views keep the storage alive until the last view is disposed
  const v = E.scope(() => E.zeros([10, 10]).slice(0, 2, 4));
  t.equal(E.memoryStats().hostBytes, base.hostBytes + 400);
  v.dispose();
  t.equal(E.memoryStats().hostBytes, base.hostBytes);
});

t.test('bad input gives errors, never crashes', async (t) => {
  t.throws(() => E.tensor([1, 2, 3], [2, 2]), /do not fill/);
  t.throws(() => E.zeros([-1, 2]), /integers >= 0/);
  t.throws(() => E.zeros([1.5]), /integers >= 0/);
  t.throws(() => E.zeros([1e8, 1e8]), /too large/);
  t.throws(() => E.arange(0, 1, 0), /non-zero step/);
  t.throws(() => E.arange(0, 10).reshape(3, 3), /cannot reshape/);
  t.throws(() => E.arange(0, 10).permute(1, 0), /permute order/);
  t.throws(() => E.arange(0, 10).slice(3, 0, 1), /out of range/);
  t.throws(() => E.arange(0, 10).squeeze(0), /cannot squeeze/);
  t.throws(() => E.zeros([2]).toDevice('cuda:x' as E.Device), /invalid device/);
  t.throws(() => E.sum(E.zeros([2, 2]), 5), /out of range/);
  t.throws(() => E.max(E.zeros([0, 2]), 0), /empty dimension/);
  t.throws(() => E.softmax(E.zeros([2], { dtype: 'int32' })), /float32\/float16\/bfloat16/);
  t.throws(() => E.randn([2], { seed: -1 }), /seed and offset/);
  t.throws(() => E.fromBytes(new Uint8Array(3), [1], 'float32'), /needs 4/);
  t.throws(() => E.viewBytes(E.zeros([4], { dtype: 'uint8' }), 2, 'float32', [1]), /outside a buffer/);
});
