// matmul, linear (fused bias + activation), attention and LoRA merging against float64
// references written here, on fresh random inputs of odd sizes, strided views and broadcast
// batches; and the errors bad input gets.
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import t, { type Test } from 'tap';

import * as E from '../../lib/engine/index.js';
import { randomArray, relL2 } from '../helpers/numeric.js';
import { erf, refAttention, refMatmul, shapeSize } from '../helpers/linalg-ref.js';

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
    [461, 20, 45], [2011, 9, 50],
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

t.test('linear: bias and every fused activation, f32/bf16/f16 weights, few and many rows', async (t) => {
  for (const wd of ['float32', 'bfloat16', 'float16'] as E.DType[]) {
    for (const [name, act] of activations) {
      // 1-4 rows take the unpacked dot-product path, 14 rows the packed GEMM
      for (const rows of [1, 2, 3, 4, 14]) {
        E.scope(() => {
          const K = 37, N = 129;
          const x = rand([rows, 1, K], 'float32', 2), w = rand([N, K], wd), bias = rand([N], wd);
          const out = E.linear(x.t, w.t, bias.t, name);
          t.same(out.shape, [rows, 1, N]);
          t.equal(out.dtype, 'float32');
          const err = relL2(out.toFloat32(), refLinear(x.v, rows, K, w.v, N, bias.v, act));
          t.ok(err <= 1e-5, `${wd} weight, ${name}, ${rows} rows: rel-L2 ${err.toExponential(2)}`);
        });
      }
    }
  }
});

t.test('linear and matmul: few rows against a wide weight (A packed whole, B packed per task)', async (t) => {
  // N >= 4 * threads * NR and a small packed A take the few-rows path; K = 1100 spans three
  // K slices (the last partial), N = 300 ends in a partial panel, 37 rows in a partial MR tile
  const K = 1100, N = 300;
  for (const wd of ['float32', 'bfloat16', 'float16'] as E.DType[]) {
    for (const rows of [5, 37]) {
      E.scope(() => {
        const x = rand([rows, K], 'float32', 2), w = rand([N, K], wd), bias = rand([N], wd);
        const out = E.linear(x.t, w.t, bias.t, 'gelu_tanh');
        const err = relL2(out.toFloat32(), refLinear(x.v, rows, K, w.v, N, bias.v, activations[1]![1]));
        t.ok(err <= 1e-5, `${wd} weight, ${rows} rows, bias + gelu_tanh: rel-L2 ${err.toExponential(2)}`);
      });
    }
  }
  E.scope(() => {
    // B with unit column stride (as matmul gives it) and a strided A (every other column)
    const M = 23;
    const big = rand([M, 2 * K]), b = rand([K, N]);
    const a = big.t.slice(1, 0, 2 * K, 2);
    const err = relL2(E.matmul(a, b.t).toFloat32(), refMatmul(values(a), [M, K], b.v, [K, N]).out);
    t.ok(err <= 1e-5, `strided A @ row-major B: rel-L2 ${err.toExponential(2)}`);
  });
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
    // several row and column tiles, merged in place into a bf16 weight
    const [O2, I2] = [130, 1100];
    const base = rand([O2, I2], 'bfloat16');
    const up = rand([O2, 8]), down = rand([8, I2]);
    const expected = refMatmul(up.v, [O2, 8], down.v, [8, I2]).out.map((p, i) => (base.v[i] as number) + 0.5 * p);
    E.loraMerge(base.t, [{ up: up.t, down: down.t, scale: 0.5 }], base.t);
    const err = relL2(base.t.toFloat32(), expected);
    t.ok(err <= 1e-2, `[${O2}, ${I2}] in place: rel-L2 ${err.toExponential(2)}`);
  });
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

t.test('every GEMM micro-kernel (AVX-512, AVX2, portable) gives the same products and attention', async (t) => {
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

interface AttnCase {
  name: string;
  dims: [number, number, number, number, number, number, number]; // B, H, Hk, Lq, Lk, D, Dv
  causal?: boolean;
  kvLens?: number[];
  biasShape?: number[];
  dtype?: E.DType;
  /** q, k, v made as [B, L, H, D] projections and permuted (last dim contiguous, others strided) */
  permuted?: boolean;
}

function checkAttention(t: Test, c: AttnCase) {
  E.scope(() => {
    const [B, H, Hk, Lq, Lk, D, Dv] = c.dims;
    const dtype = c.dtype ?? 'float32';
    const make = (b: number, h: number, l: number, d: number) => {
      if (!c.permuted) return rand([b, h, l, d], dtype, 2);
      const x = rand([b, l, h, d], dtype, 2);
      const view = x.t.permute(0, 2, 1, 3);
      return { t: view, v: values(view) };
    };
    const q = make(B, H, Lq, D), k = make(B, Hk, Lk, D), v = make(B, Hk, Lk, Dv);
    const scale = 1 / Math.sqrt(D);
    let bias: { t: E.Tensor; v: Float64Array } | null = null;
    let biasAt: ((b: number, h: number, i: number, j: number) => number) | undefined;
    if (c.biasShape) {
      const bs = c.biasShape;
      const b0 = rand(bs, 'float32', 3);
      bias = b0;
      const full = [B, H, Lq, Lk].slice(4 - bs.length);
      const st = bs.map((_, i) => bs.slice(i + 1).reduce((x, y) => x * y, 1));
      biasAt = (b, h, i, j) => {
        const idx = [b, h, i, j].slice(4 - bs.length);
        let o = 0;
        for (let d = 0; d < bs.length; ++d) if ((bs[d] as number) > 1 || full[d] === 1) o += (idx[d] as number) * (st[d] as number);
        return b0.v[o] as number;
      };
    }
    const kvLens = c.kvLens ? E.tensor(Int32Array.from(c.kvLens), [B]) : null;
    const { out, lse } = E.attentionWithLse(q.t, k.t, v.t, { causal: c.causal, kvLens, bias: bias ? bias.t : null });
    const ref = refAttention(q.v, k.v, v.v, c.dims, { scale, causal: c.causal, kvLens: c.kvLens, bias: biasAt });
    t.same(out.shape, [B, H, Lq, Dv], `${c.name}: shape`);
    t.equal(out.dtype, dtype);
    t.ok(out.transpose(1, 2).isContiguous, `${c.name}: stored as [B, Lq, H, Dv]`);
    const tol = dtype === 'float32' ? 1e-5 : 1e-2;
    const err = relL2(out.toFloat32(), ref.out);
    t.ok(err <= tol, `${c.name}: out rel-L2 ${err.toExponential(2)}`);
    const got = lse.toFloat32();
    const finiteRef: number[] = [], finiteGot: number[] = [];
    let maskedOk = true;
    for (let i = 0; i < got.length; ++i) {
      if (ref.lse[i] === -Infinity) maskedOk &&= got[i] === -Infinity;
      else {
        finiteRef.push(ref.lse[i] as number);
        finiteGot.push(got[i] as number);
      }
    }
    t.ok(maskedOk, `${c.name}: fully masked rows have lse = -inf`);
    if (finiteRef.length) {
      const lerr = relL2(finiteGot, finiteRef);
      t.ok(lerr <= tol, `${c.name}: lse rel-L2 ${lerr.toExponential(2)}`);
    }
    // attention() (without lse) gives the same output
    t.same(Array.from(E.attention(q.t, k.t, v.t, { causal: c.causal, kvLens, bias: bias ? bias.t : null }).toFloat32()), Array.from(out.toFloat32()), `${c.name}: attention() = attentionWithLse().out`);
  });
}

t.test('attention: head dims 64/128/other, Lq != Lk, GQA, strided projections, 1-token sequences', async (t) => {
  const cases: AttnCase[] = [
    { name: 'single token', dims: [1, 1, 1, 1, 1, 64, 64] },
    { name: 'D=64 Lq<Lk', dims: [2, 3, 3, 33, 129, 64, 64] },
    { name: 'D=128 GQA 6/2, long keys', dims: [1, 6, 2, 70, 300, 128, 128], permuted: true },
    { name: 'D=40 Dv=24', dims: [2, 2, 1, 17, 5, 40, 24] },
    { name: 'one query, many keys', dims: [1, 2, 2, 1, 513, 16, 16] },
    { name: 'many queries, one key', dims: [1, 1, 1, 65, 1, 8, 3] },
    { name: 'D=1', dims: [1, 2, 2, 9, 11, 1, 1] },
  ];
  for (const c of cases) checkAttention(t, c);
});

t.test('attention: causal (Lq = Lk, Lq < Lk, Lq > Lk), kv_lens incl. 0 and Lk, additive bias', async (t) => {
  const cases: AttnCase[] = [
    { name: 'causal square', dims: [1, 2, 2, 77, 77, 32, 32], causal: true },
    { name: 'causal Lq<Lk (bottom-right aligned)', dims: [1, 2, 1, 20, 300, 32, 16], causal: true },
    { name: 'causal Lq>Lk (first rows see nothing)', dims: [1, 1, 1, 40, 25, 16, 16], causal: true },
    { name: 'kv_lens 0, Lk, partial', dims: [3, 2, 2, 19, 270, 64, 64], kvLens: [0, 270, 131] },
    { name: 'kv_lens with causal', dims: [2, 2, 2, 60, 60, 16, 16], kvLens: [45, 1], causal: true },
    { name: 'bias [H, Lq, Lk]', dims: [2, 3, 3, 21, 50, 24, 24], biasShape: [3, 21, 50] },
    { name: 'bias [B, 1, 1, Lk] with kv_lens', dims: [2, 2, 1, 13, 280, 32, 32], biasShape: [2, 1, 1, 280], kvLens: [280, 100] },
    { name: 'bias [Lk]', dims: [1, 2, 2, 5, 7, 8, 8], biasShape: [7] },
  ];
  for (const c of cases) checkAttention(t, c);
});

t.test('attention: bfloat16 and float16 inputs', async (t) => {
  checkAttention(t, { name: 'bf16', dims: [1, 4, 2, 45, 300, 64, 64], dtype: 'bfloat16', causal: true });
  checkAttention(t, { name: 'f16', dims: [1, 2, 2, 30, 40, 128, 128], dtype: 'float16', permuted: true });
});

t.test('attention: a transposed head dim is made contiguous first; empty inputs', async (t) => {
  E.scope(() => {
    const q = rand([1, 2, 6, 9]), k = rand([1, 2, 9, 5]), v = rand([1, 2, 5, 7]);
    const kt = k.t.transpose(2, 3); // [1, 2, 5, 9] with a strided last dim
    const out = E.attention(q.t, kt, v.t);
    const ref = refAttention(q.v, values(kt), v.v, [1, 2, 2, 6, 5, 9, 7], { scale: 1 / 3 });
    const err = relL2(out.toFloat32(), ref.out);
    t.ok(err <= 1e-5, `strided head dim: ${err.toExponential(2)}`);
    const { out: o0, lse: l0 } = E.attentionWithLse(E.zeros([1, 2, 4, 8]), E.zeros([1, 2, 0, 8]), E.zeros([1, 2, 0, 8]));
    t.same(o0.toArray(), new Array(64).fill(0), 'no keys: zeros');
    t.ok(l0.toArray().every((x) => x === -Infinity), 'no keys: lse = -inf');
    t.same(E.attention(E.zeros([1, 2, 0, 8]), E.zeros([1, 2, 3, 8]), E.zeros([1, 2, 3, 8])).shape, [1, 2, 0, 8]);
  });
});

t.test('attention: bad input throws clear errors and never crashes', async (t) => {
  E.scope(() => {
    const q = E.zeros([2, 4, 5, 8]), k = E.zeros([2, 2, 6, 8]), v = E.zeros([2, 2, 6, 8]);
    t.throws(() => E.attention(E.zeros([4, 5, 8]), k, v), /must be 4-D/);
    t.throws(() => E.attention(q, E.zeros([2, 3, 6, 8]), E.zeros([2, 3, 6, 8])), /query heads 4 are not a multiple of key heads 3/);
    t.throws(() => E.attention(q, E.zeros([2, 2, 6, 7]), v), /q and k head dims differ/);
    t.throws(() => E.attention(q, k, E.zeros([2, 2, 5, 8])), /k and v differ/);
    t.throws(() => E.attention(q, E.zeros([1, 2, 6, 8]), E.zeros([1, 2, 6, 8])), /batch sizes differ/);
    t.throws(() => E.attention(E.zeros([2, 4, 5, 8], { dtype: 'int32' }), k, v), /float32\/bfloat16\/float16/);
    t.throws(() => E.attention(q, k, v, { kvLens: E.tensor([1, 2]) }), /kv_lens must be int32 \[2\]/);
    t.throws(() => E.attention(q, k, v, { kvLens: E.tensor(Int32Array.from([1, 7]), [2]) }), /kv_lens\[1\] = 7 is outside 0\.\.6/);
    t.throws(() => E.attention(q, k, v, { kvLens: E.tensor(Int32Array.from([-1, 0]), [2]) }), /kv_lens\[0\] = -1/);
    t.throws(() => E.attention(q, k, v, { bias: E.zeros([3, 5, 6]) }), /bias \[3, 5, 6\] does not broadcast to \[2, 4, 5, 6\]/);
    t.throws(() => E.attention(q, k, v, { scale: Infinity }), /scale must be finite/);
  });
});
