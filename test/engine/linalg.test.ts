// matmul, linear (fused bias + activation), attention and LoRA merging against float64
// references written here, on fresh random inputs of odd sizes, strided views and broadcast
// batches; and the errors bad input gets.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import t from 'tap';

import * as E from '../../lib/engine/index.js';
import { randomArray, relL2 } from '../helpers/numeric.js';
import { erf, refMatmul, shapeSize } from '../helpers/linalg-ref.js';

let seed = 1000;
/** A fresh random float tensor of `shape` (uniform in [-1, 1)) and the values it holds, in float64. */
function rand(shape: number[], dtype: E.DType = 'float32', scale = 1): { t: E.Tensor; v: Float64Array } {
  const x = randomArray(shapeSize(shape), ++seed, -scale, scale);
  const tensor = E.tensor(Float32Array.from(x), shape, { dtype });
  return { t: tensor, v: Float64Array.from(tensor.toFloat32()) };
}
/** The logical (row-major) values of a tensor view, in float64. */
function values(x: E.Tensor): Float64Array {
  return Float64Array.from(x.toFloat32());
}

t.test('matmul: 2-D products of odd sizes match float64 (K=1, M=1, N=1, sizes across tile edges)', async (t) => {
  const shapes: Array<[number, number, number]> = [
    [1, 1, 1], [1, 7, 33], [7, 33, 129], [129, 1, 7], [33, 129, 1], [15, 300, 47], [200, 513, 70], [3, 5, 3100],
  ];
  for (const [M, K, N] of shapes) {
    E.scope(() => {
      const a = rand([M, K]), b = rand([K, N]);
      const out = E.matmul(a.t, b.t);
      t.same(out.shape, [M, N]);
      const err = relL2(out.toFloat32(), refMatmul(a.v, [M, K], b.v, [K, N]).out);
      t.ok(err <= 1e-5, `[${M}, ${K}] @ [${K}, ${N}]: rel-L2 ${err.toExponential(2)}`);
    });
  }
});

t.test('matmul: transposed and strided operands (no unit stride) give the same values', async (t) => {
  E.scope(() => {
    const M = 37, K = 65, N = 29;
    const at = rand([K, M]), bt = rand([N, K]);
    const a = at.t.transpose(0, 1), b = bt.t.transpose(0, 1);
    t.notOk(a.isContiguous);
    let err = relL2(E.matmul(a, b).toFloat32(), refMatmul(values(a), [M, K], values(b), [K, N]).out);
    t.ok(err <= 1e-5, `transposed operands: ${err.toExponential(2)}`);
    // every other row and column of bigger matrices
    const big = rand([2 * M, 3 * K]), bigB = rand([2 * K, 2 * N + 1]);
    const as = big.t.slice(0, 0, 2 * M, 2).slice(1, 1, 3 * K, 3);
    const bs = bigB.t.slice(0, 1, 2 * K, 2).slice(1, 0, 2 * N, 2);
    t.same(as.shape, [M, K]);
    t.same(bs.shape, [K, N]);
    err = relL2(E.matmul(as, bs).toFloat32(), refMatmul(values(as), [M, K], values(bs), [K, N]).out);
    t.ok(err <= 1e-5, `step-sliced operands: ${err.toExponential(2)}`);
  });
});

t.test('matmul: batch dimensions broadcast like torch.matmul', async (t) => {
  const cases: Array<[number[], number[]]> = [
    [[2, 3, 5, 7], [7, 4]],
    [[5, 7], [2, 3, 7, 4]],
    [[2, 1, 5, 7], [1, 3, 7, 4]],
    [[4, 5, 7], [4, 7, 6]],
    [[3, 1, 9, 33], [3, 33, 17]],
    [[6, 1, 1], [6, 1, 1]],
  ];
  for (const [as, bs] of cases) {
    E.scope(() => {
      const a = rand(as), b = rand(bs);
      const r = refMatmul(a.v, as, b.v, bs);
      const out = E.matmul(a.t, b.t);
      t.same(out.shape, r.shape, `[${as}] @ [${bs}] shape`);
      const err = relL2(out.toFloat32(), r.out);
      t.ok(err <= 1e-5, `[${as}] @ [${bs}]: rel-L2 ${err.toExponential(2)}`);
    });
  }
  E.scope(() => {
    // batch dims that cannot be merged into one stride (a permuted batch) and an expanded operand
    const a0 = rand([3, 2, 5, 7]), b0 = rand([7, 4]);
    const a = a0.t.permute(1, 0, 2, 3);
    const b = b0.t.expand(2, 3, 7, 4);
    const err = relL2(E.matmul(a, b).toFloat32(), refMatmul(values(a), [2, 3, 5, 7], values(b), [2, 3, 7, 4]).out);
    t.ok(err <= 1e-5, `permuted batch @ expanded operand: ${err.toExponential(2)}`);
  });
});

t.test('matmul: bfloat16 and float16 operands are widened exactly (f32 accumulation)', async (t) => {
  for (const [da, db] of [['float32', 'bfloat16'], ['float32', 'float16'], ['bfloat16', 'float32'], ['bfloat16', 'bfloat16']] as Array<[E.DType, E.DType]>) {
    E.scope(() => {
      const M = 19, K = 70, N = 45;
      const a = rand([M, K], da), b = rand([K, N], db);
      const out = E.matmul(a.t, b.t);
      t.equal(out.dtype, da === db ? da : 'float32');
      const err = relL2(out.toFloat32(), refMatmul(a.v, [M, K], b.v, [K, N]).out);
      // the reference uses the stored (rounded) inputs; only a bf16 result adds its own rounding
      t.ok(err <= (da === db ? 1e-2 : 1e-5), `${da} @ ${db}: rel-L2 ${err.toExponential(2)}`);
    });
  }
});

t.test('matmul: empty and K=0 products', async (t) => {
  E.scope(() => {
    t.same(E.matmul(E.zeros([0, 3]), E.zeros([3, 4])).shape, [0, 4]);
    const z = E.matmul(E.ones([2, 0]), E.ones([0, 3]));
    t.same(z.shape, [2, 3]);
    t.same(z.toArray(), [0, 0, 0, 0, 0, 0]);
  });
});

const activations: Array<[E.Activation, (x: number) => number]> = [
  ['none', (x) => x],
  ['gelu_tanh', (x) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)))],
  ['gelu', (x) => 0.5 * x * (1 + erf(x / Math.SQRT2))],
  ['silu', (x) => x / (1 + Math.exp(-x))],
  ['relu', (x) => Math.max(0, x)],
];

/** Reference linear: x [M, K] (logical values), w [N, K], bias [N] or null. */
function refLinear(x: Float64Array, M: number, K: number, w: Float64Array, N: number, bias: Float64Array | null, act: (v: number) => number) {
  const out = new Float64Array(M * N);
  for (let i = 0; i < M; ++i)
    for (let j = 0; j < N; ++j) {
      let s = bias ? (bias[j] as number) : 0;
      for (let k = 0; k < K; ++k) s += (x[i * K + k] as number) * (w[j * K + k] as number);
      out[i * N + j] = act(s);
    }
  return out;
}

t.test('linear: bias and every fused activation, f32/bf16/f16 weights', async (t) => {
  for (const wd of ['float32', 'bfloat16', 'float16'] as E.DType[]) {
    for (const [name, act] of activations) {
      E.scope(() => {
        const M = 2 * 7, K = 33, N = 129;
        const x = rand([2, 7, K], 'float32', 2), w = rand([N, K], wd), bias = rand([N], wd);
        const out = E.linear(x.t, w.t, bias.t, name);
        t.same(out.shape, [2, 7, N]);
        t.equal(out.dtype, 'float32');
        const err = relL2(out.toFloat32(), refLinear(x.v, M, K, w.v, N, bias.v, act));
        t.ok(err <= 1e-5, `${wd} weight, ${name}: rel-L2 ${err.toExponential(2)}`);
      });
    }
  }
});

t.test('linear: no bias, 1-D and non-contiguous inputs, large K and N, single row', async (t) => {
  const cases: Array<[number[], number, boolean]> = [
    [[5], 3, false],
    [[1, 300], 1, true],
    [[1, 1000], 600, false],
    [[170, 40], 200, true],
    [[3, 1, 1], 7, true],
  ];
  for (const [xs, N, withBias] of cases) {
    E.scope(() => {
      const K = xs[xs.length - 1] as number;
      const M = shapeSize(xs) / K;
      const x = rand(xs), w = rand([N, K]), b = withBias ? rand([N]) : null;
      const out = E.linear(x.t, w.t, b ? b.t : null);
      t.same(out.shape, [...xs.slice(0, -1), N]);
      const err = relL2(out.toFloat32(), refLinear(x.v, M, K, w.v, N, b ? b.v : null, (v) => v));
      t.ok(err <= 1e-5, `x [${xs}], N ${N}: rel-L2 ${err.toExponential(2)}`);
    });
  }
  E.scope(() => {
    // a transposed input (needs a copy to flatten) and a transposed weight view
    const x0 = rand([9, 4, 6]), w0 = rand([6, 11]);
    const x = x0.t.permute(1, 0, 2).transpose(1, 2); // [4, 6, 9], features last but strided
    const w = w0.t.transpose(0, 1); // [11, 6] viewed from [6, 11]
    const out = E.linear(x.transpose(1, 2), w);
    const xv = values(x.transpose(1, 2));
    const err = relL2(out.toFloat32(), refLinear(xv, 36, 6, values(w), 11, null, (v) => v));
    t.ok(err <= 1e-5, `strided input and weight views: ${err.toExponential(2)}`);
  });
  E.scope(() => {
    // K = 0: the output is the (activated) bias
    const out = E.linear(E.zeros([2, 0]), E.zeros([3, 0]), E.tensor([1, -2, 3]), 'relu');
    t.same(out.toArray(), [1, 0, 3, 1, 0, 3]);
  });
});

t.test('matmul/linear: bad input throws clear errors and never crashes', async (t) => {
  E.scope(() => {
    t.throws(() => E.matmul(E.zeros([2, 3]), E.zeros([4, 5])), /matmul: \[2, 3\] @ \[4, 5\]: inner dimensions 3 and 4 differ/);
    t.throws(() => E.matmul(E.zeros([3]), E.zeros([3, 5])), /at least 2 dimensions/);
    t.throws(() => E.matmul(E.zeros([2, 2, 3]), E.zeros([3, 3, 5])), /batch dimensions \[2\] and \[3\] cannot be broadcast/);
    t.throws(() => E.matmul(E.zeros([2, 3], { dtype: 'int32' }), E.zeros([3, 5])), /float32\/bfloat16\/float16/);
    t.throws(() => E.linear(E.zeros([2, 3]), E.zeros([4, 5])), /linear: input \[2, 3\], weight \[4, 5\]: input features 3 differ/);
    t.throws(() => E.linear(E.zeros([2, 5]), E.zeros([4, 5]), E.zeros([5])), /bias \[5\] must be \[4\]/);
    t.throws(() => E.linear(E.zeros([2, 5]), E.zeros([1, 4, 5])), /weight must be 2-D/);
    t.throws(() => E.linear(E.zeros([2, 5], { dtype: 'int64' }), E.zeros([4, 5])), /float32\/bfloat16\/float16/);
  });
});

t.test('loraMerge: base + sum of scaled products, any dtypes, in place', async (t) => {
  const O = 67, I = 45;
  const ref = (base: Float64Array, terms: Array<{ up: Float64Array; down: Float64Array; r: number; s: number }>) => {
    const out = Float64Array.from(base);
    for (const { up, down, r, s } of terms) {
      const p = refMatmul(up, [O, r], down, [r, I]).out;
      for (let i = 0; i < out.length; ++i) out[i] = (out[i] as number) + s * (p[i] as number);
    }
    return out;
  };
  for (const dt of ['float32', 'bfloat16', 'float16'] as E.DType[]) {
    E.scope(() => {
      const base = rand([O, I], dt);
      const t1 = { up: rand([O, 4], dt), down: rand([4, I], dt), s: 0.75 };
      const t2 = { up: rand([O, 7]), down: rand([7, I]), s: -1.5 };
      const deltas = [t1, t2].map((d) => ({ up: d.up.t, down: d.down.t, scale: d.s }));
      const expected = ref(base.v, [t1, t2].map((d) => ({ up: d.up.v, down: d.down.v, r: d.up.t.size(1), s: d.s })));
      const out = E.empty([O, I], { dtype: dt });
      E.loraMerge(base.t, deltas, out);
      const tol = dt === 'float32' ? 1e-5 : 1e-2;
      const err = relL2(out.toFloat32(), expected);
      t.ok(err <= tol, `${dt}: fresh output rel-L2 ${err.toExponential(2)}`);
      if (dt === 'bfloat16') {
        // stored with round-to-nearest-even: nearly every element is the rounded reference
        const rounded = E.tensor(Float32Array.from(expected), [O, I], { dtype: 'bfloat16' }).data() as Uint16Array;
        const got = out.data() as Uint16Array;
        let same = 0;
        for (let i = 0; i < got.length; ++i) if (got[i] === rounded[i]) ++same;
        t.ok(same / got.length > 0.98, `bf16 rounding matches ${(100 * same / got.length).toFixed(1)}%`);
      }
      // in place: out is base itself
      E.loraMerge(base.t, deltas, base.t);
      t.same(Array.from(base.t.toFloat32()), Array.from(out.toFloat32()), `${dt}: in-place result equals the fresh one`);
    });
  }
  E.scope(() => {
    // no deltas: a converting copy; a transposed output view
    const base = rand([5, 3]);
    const out = E.zeros([3, 5]).transpose(0, 1);
    E.loraMerge(base.t, [], out);
    t.same(Array.from(out.toFloat32()), Array.from(base.t.toFloat32()));
  });
});

t.test('loraMerge: bad input throws and leaves the output unchanged', async (t) => {
  E.scope(() => {
    const base = E.zeros([4, 6]);
    const out = E.full([4, 6], 7);
    t.throws(() => E.loraMerge(base, [{ up: E.zeros([4, 2]), down: E.zeros([3, 6]), scale: 1 }], out), /delta 0 \(up \[4, 2\], down \[3, 6\]\)/);
    t.throws(() => E.loraMerge(base, [{ up: E.zeros([5, 2]), down: E.zeros([2, 6]), scale: 1 }], out), /do not give a \[4, 6\] product/);
    t.throws(() => E.loraMerge(base, [], E.zeros([6, 4])), /out must have base's shape/);
    t.throws(() => E.loraMerge(base, [{ up: E.zeros([4, 2]), down: E.zeros([2, 6]), scale: NaN }], out), /scale must be finite/);
    const big = E.zeros([5, 6]);
    t.throws(() => E.loraMerge(big.slice(0, 0, 4), [], big.slice(0, 1, 5)), /partially overlaps base/);
    t.ok(out.toArray().every((v) => v === 7), 'output untouched');
  });
});

t.test('every GEMM micro-kernel (AVX-512, AVX2, portable) gives the same products', async (t) => {
  const script = fileURLToPath(new URL('../helpers/gemm-kernel-check.ts', import.meta.url));
  for (const kernel of ['avx512', 'avx2', 'generic']) {
    const out = execFileSync(process.execPath, ['--import=tsx', script], {
      env: { ...process.env, ND_GEMM_KERNEL: kernel },
      encoding: 'utf8',
    });
    const report = JSON.parse(out) as { kernel: string; maxErr: number; cases: number };
    t.ok(report.cases > 0);
    t.ok(report.maxErr <= 1e-5, `${report.kernel} (asked for ${kernel}): max rel-L2 ${report.maxErr.toExponential(2)}`);
  }
});
