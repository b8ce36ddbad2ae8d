// `npm run test:gpu`: every CUDA op against its CPU twin on fresh random inputs. Tolerances are
// rel-L2 <= 1e-2 for bf16/f16 and <= 1e-5 for f32 (randn and layout ops must match bit for bit).
// New device allocations are poisoned with NaN (ND_CUDA_POISON=1) so unwritten outputs fail, and
// kernels launch synchronously (CUDA_LAUNCH_BLOCKING=1) so a fault is reported by the case that
// caused it. Prints a table; exits non-zero on any failure. Without a device it says why and
// exits 0. ND_TEST_SEED=<n> replays a run; ND_TEST_FILTER=<regex> selects cases by name;
// ND_TEST_TARGET=cpu runs every case on the CPU twice (checks the cases themselves, no GPU needed).
import { randomInt } from 'node:crypto';

import * as E from '../../lib/engine/index.js';
import type { DType, Tensor } from '../../lib/engine/index.js';
import { runNcclChecks } from './nccl.js';

type Dev = 'cpu' | 'cuda';

// read by the CUDA library when it initialises, which happens at the first cudaInfo() below
process.env.ND_CUDA_POISON ??= '1';
process.env.CUDA_LAUNCH_BLOCKING ??= '1';

const target: Dev = process.env.ND_TEST_TARGET === 'cpu' ? 'cpu' : 'cuda';
if (target === 'cuda') {
  const info = E.cudaInfo();
  if (!info.available) {
    console.log(`CUDA tests skipped: no device (${info.reason})`);
    process.exit(0);
  }
  const dev0 = info.devices[0];
  console.log(`device: ${dev0?.name} (sm_${dev0?.sm}, ${((dev0?.memory ?? 0) / 2 ** 30).toFixed(1)} GiB), driver CUDA ${info.driverVersion}`);
  console.log(`library: ${info.library.path} (${info.library.build}); cuBLASLt: ${info.cublasLt ?? 'not found'}`);
} else {
  console.log('ND_TEST_TARGET=cpu: comparing the CPU with itself (checks the cases, not CUDA)');
}

const seed = process.env.ND_TEST_SEED ? Number(process.env.ND_TEST_SEED) : randomInt(1, 2 ** 31 - 1);
console.log(`seed: ${seed} (ND_TEST_SEED=${seed} replays this run)`);
const filter = process.env.ND_TEST_FILTER ? new RegExp(process.env.ND_TEST_FILTER) : null;

// ---- inputs ----
let state = seed >>> 0;
function uniform(): number {
  state = (state + 0x6d2b79f5) >>> 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

/** A fresh random CPU tensor, uniform in [lo, hi), stored in dtype. */
function rand(shape: number[], dtype: DType = 'float32', lo = -1, hi = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  for (let i = 0; i < n; ++i) v[i] = lo + (hi - lo) * uniform();
  const f = E.tensor(v, shape);
  return dtype === 'float32' ? f : f.to(dtype);
}

function randInt(shape: number[], hi: number, dtype: 'int32' | 'int64' = 'int32'): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Int32Array(n);
  for (let i = 0; i < n; ++i) v[i] = Math.floor(uniform() * hi);
  return E.tensor(v, shape, { dtype: 'int32' }).to(dtype);
}

/** The tensor on `dev` (CPU tensors are used as they are). */
const on = (dev: Dev, t: Tensor): Tensor => (dev === 'cpu' ? t : t.toDevice('cuda'));

// ---- the cases ----
interface Case {
  name: string;
  dtype: string;
  /** rel-L2 bound; 0 = bytes must be equal */
  tol: number;
  /** runs the op with its inputs on `dev`; returns the outputs to compare */
  run: (dev: Dev) => Tensor | Tensor[];
}

const tolOf = (dtype: DType): number => (dtype === 'float32' ? 1e-5 : 1e-2);
const FLOATS: DType[] = ['float32', 'bfloat16'];
const cases: Case[] = [];
const add = (name: string, dtype: string, tol: number, run: Case['run']) => cases.push({ name, dtype, tol, run });

// memory and layout
{
  const big = rand([21, 1024, 1024]);  // 84 MiB: several staging chunks each way
  add('upload/download 84 MiB round trip', 'float32', 0, (d) => on(d, big));
  const x = rand([37, 53, 3], 'bfloat16');
  add('contiguous(permute)', 'bfloat16', 0, (d) => on(d, x).permute(2, 0, 1).contiguous());
  add('slice with step, contiguous', 'bfloat16', 0, (d) => on(d, x).slice(1, 3, 50, 4).contiguous());
  const f = rand([1000, 33], 'float32', -300, 300);
  for (const to of ['bfloat16', 'float16', 'int32', 'int64', 'uint8', 'float8_e4m3'] as DType[])
    add(`cast float32 -> ${to}`, to, 0, (d) => on(d, f).to(to));
  const ints = randInt([999], 1 << 20, 'int64');
  add('cast int64 -> float32', 'float32', 0, (d) => on(d, ints).to('float32'));
  add('cast bfloat16 -> float32 (transposed)', 'float32', 0, (d) => on(d, x).transpose(0, 1).to('float32'));
  const src = rand([10, 40]);
  add('copy_ into a strided view', 'float32', 0, (d) => {
    const dst = E.zeros([40, 40], { device: d });
    dst.slice(0, 5, 25, 2).copy_(on(d, src));
    return dst;
  });
  add('concat', 'bfloat16', 0, (d) => E.concat([on(d, x), on(d, x).slice(1, 0, 7)], 1));
  add('pad (with crop)', 'float32', 0, (d) => E.pad(on(d, f), [2, -1, 1, 3], 0.5));
  for (const dtype of ['float32', 'bfloat16', 'int32', 'int64'] as DType[]) {
    add('full', dtype, 0, (d) => E.full([3, 1001], 7.25, { dtype, device: d }));
    add('arange', dtype, 0, (d) => E.arange(-5, 300, dtype.startsWith('int') ? 3 : 0.5, { dtype, device: d }));
  }
  add('linspace', 'float32', 0, (d) => E.linspace(-1, 3, 1017, { device: d }));
}

// randn: the Philox stream must give the same bits on both devices
for (const dtype of ['float32', 'bfloat16', 'float16'] as DType[])
  for (const offset of [0, 7])
    add(`randn offset ${offset}`, dtype, 0, (d) => E.randn([3, 1001], { seed: 1234567, offset, dtype, device: d }));

// elementwise
{
  const unary: Array<[string, (x: Tensor) => Tensor, number, number]> = [
    ['neg', E.neg, -3, 3], ['abs', E.abs, -3, 3], ['exp', E.exp, -20, 20], ['log', E.log, 0.01, 50],
    ['sqrt', E.sqrt, 0, 50], ['rsqrt', E.rsqrt, 0.01, 50], ['sin', E.sin, -10, 10], ['cos', E.cos, -10, 10],
    ['tanh', E.tanh, -6, 6], ['sigmoid', E.sigmoid, -20, 20], ['silu', E.silu, -20, 20], ['gelu', E.gelu, -6, 6],
    ['geluTanh', E.geluTanh, -6, 6], ['relu', E.relu, -3, 3], ['square', E.square, -3, 3],
    ['reciprocal', E.reciprocal, 0.1, 10],
  ];
  for (const [name, op, lo, hi] of unary)
    for (const dtype of FLOATS) {
      const x = rand([129, 67], dtype, lo, hi);
      add(`unary ${name} (transposed input)`, dtype, tolOf(dtype), (d) => op(on(d, x).transpose(0, 1)));
    }
  const binary: Array<[string, (a: Tensor, b: Tensor) => Tensor]> = [
    ['add', E.add], ['sub', E.sub], ['mul', E.mul], ['div', E.div], ['maximum', E.maximum], ['minimum', E.minimum],
    ['pow', E.pow],
  ];
  for (const [name, op] of binary)
    for (const dtype of FLOATS) {
      const a = rand([6, 1, 33, 9], dtype, name === 'pow' ? 0.1 : -2, 2);
      const b = rand([5, 1, 9], dtype, 0.5, 2);
      add(`binary ${name} (broadcast)`, dtype, tolOf(dtype), (d) => op(on(d, a), on(d, b)));
    }
  const ia = randInt([7, 50], 1000, 'int64'), ib = randInt([50], 1000, 'int64');
  add('binary add int64', 'int64', 0, (d) => E.add(on(d, ia), on(d, ib)));
  add('binary maximum int64', 'int64', 0, (d) => E.maximum(on(d, ia), on(d, ib)));
  for (const dtype of FLOATS) {
    const x = rand([513, 7], dtype, -4, 4);
    add('affine', dtype, tolOf(dtype), (d) => E.affine(on(d, x), 1.5, -0.25));
    add('clamp', dtype, tolOf(dtype), (d) => E.clamp(on(d, x), -1, 2));
    add('pow scalar 3', dtype, tolOf(dtype), (d) => E.pow(E.abs(on(d, x)), 3));
  }
  add('affine int64', 'int64', 0, (d) => E.affine(on(d, ia), 3, -7));
}

// reductions
for (const dtype of FLOATS) {
  const x = rand([9, 130, 17], dtype, -2, 2);
  for (const dim of [0, 1, 2]) {
    add(`sum dim ${dim}`, dtype, tolOf(dtype), (d) => E.sum(on(d, x), dim));
    add(`mean dim ${dim}`, dtype, tolOf(dtype), (d) => E.mean(on(d, x), dim, true));
    add(`max dim ${dim}`, dtype, 0, (d) => E.max(on(d, x), dim));
    add(`min dim ${dim}`, dtype, 0, (d) => E.min(on(d, x), dim));
  }
  add('softmax last dim', dtype, tolOf(dtype), (d) => E.softmax(E.mul(on(d, x), 4), -1));
  add('softmax dim 1', dtype, tolOf(dtype), (d) => E.softmax(on(d, x), 1));
}
{
  const masked = E.full([3, 40], -Infinity);
  add('softmax of a fully masked row', 'float32', 0, (d) => E.softmax(on(d, masked), -1));
}

// linear algebra
for (const dtype of ['float32', 'bfloat16', 'float16'] as DType[]) {
  const tol = tolOf(dtype);
  const a = rand([3, 77, 130], dtype), b = rand([3, 130, 65], dtype), b1 = rand([130, 65], dtype);
  add('matmul batched', dtype, tol, (d) => E.matmul(on(d, a), on(d, b)));
  add('matmul broadcast weight', dtype, tol, (d) => E.matmul(on(d, a), on(d, b1)));
  add('matmul transposed operands', dtype, tol, (d) => E.matmul(on(d, b).transpose(1, 2), on(d, a).transpose(1, 2)));
  const x = rand([2, 45, 96], dtype), w = rand([200, 96], dtype, -0.2, 0.2), bias = rand([200], dtype);
  for (const act of ['none', 'gelu_tanh', 'gelu', 'silu', 'relu'] as const)
    add(`linear + bias + ${act}`, dtype, tol, (d) => E.linear(on(d, x), on(d, w), on(d, bias), act));
  add('linear without bias', dtype, tol, (d) => E.linear(on(d, x), on(d, w)));
}
{
  const x = rand([33, 64]), w = rand([48, 64], 'bfloat16');
  add('linear float32 x bfloat16 weight', 'float32', 1e-5, (d) => E.linear(on(d, x), on(d, w)));
}

// attention: flash kernel (bf16/f16, head dim 64/128) and the generic kernel (f32, other dims)
{
  interface A { B: number; H: number; Hk: number; Lq: number; Lk: number; D: number; causal?: boolean; kv?: boolean; bias?: boolean }
  const shapes: A[] = [
    { B: 2, H: 4, Hk: 4, Lq: 200, Lk: 200, D: 128 },
    { B: 1, H: 6, Hk: 2, Lq: 77, Lk: 333, D: 64 },
    { B: 2, H: 4, Hk: 4, Lq: 150, Lk: 150, D: 128, causal: true },
    { B: 2, H: 2, Hk: 1, Lq: 96, Lk: 160, D: 64, causal: true, kv: true },
    { B: 2, H: 3, Hk: 3, Lq: 70, Lk: 129, D: 128, kv: true, bias: true },
    { B: 1, H: 2, Hk: 2, Lq: 65, Lk: 90, D: 80 },
    { B: 1, H: 1, Hk: 1, Lq: 300, Lk: 300, D: 512 },  // a VAE mid-block attention (one head over the channels)
  ];
  for (const s of shapes)
    for (const dtype of ['bfloat16', 'float16', 'float32'] as DType[]) {
      if (dtype === 'float16' && s.D !== 64 && s.D !== 128) continue;
      const q = rand([s.B, s.Lq, s.H, s.D], dtype, -2, 2).permute(0, 2, 1, 3);  // [B, H, L, D] views
      const k = rand([s.B, s.Lk, s.Hk, s.D], dtype, -2, 2).permute(0, 2, 1, 3);
      const v = rand([s.B, s.Hk, s.Lk, s.D], dtype);
      const kvLens = s.kv ? E.tensor(Int32Array.from({ length: s.B }, (_, i) => s.Lk - 17 * (i + 1)), [s.B], { dtype: 'int32' }) : null;
      const bias = s.bias ? rand([1, s.H, s.Lq, s.Lk], 'float32', -1, 1) : null;
      const name = `attention B${s.B} H${s.H}/${s.Hk} ${s.Lq}x${s.Lk} D${s.D}${s.causal ? ' causal' : ''}${s.kv ? ' kv_lens' : ''}${s.bias ? ' bias' : ''}`;
      add(name, dtype, tolOf(dtype), (d) => {
        const r = E.attentionWithLse(on(d, q), on(d, k), on(d, v), {
          causal: s.causal, kvLens: kvLens ? on(d, kvLens) : null, bias: bias ? on(d, bias) : null,
        });
        return [r.out, r.lse];
      });
    }
}

// convolution, resampling, normalisation, rope, embedding
for (const dtype of FLOATS) {
  const tol = tolOf(dtype);
  const x = rand([2, 12, 19, 23], dtype), w3 = rand([16, 12, 3, 3], dtype, -0.3, 0.3), b = rand([16], dtype);
  add('conv2d 3x3 pad 1', dtype, tol, (d) => E.conv2d(on(d, x), on(d, w3), on(d, b), { padding: 1 }));
  add('conv2d 3x3 stride 2 dilation 2', dtype, tol, (d) => E.conv2d(on(d, x), on(d, w3), on(d, b), { stride: 2, padding: [1, 2, 0, 1], dilation: 2 }));
  const wg = rand([8, 3, 3, 3], dtype, -0.3, 0.3);
  add('conv2d groups 4', dtype, tol, (d) => E.conv2d(on(d, x), on(d, wg), null, { padding: 1, groups: 4 }));
  const w1 = rand([20, 12, 1, 1], dtype, -0.3, 0.3), b1 = rand([20], dtype);
  add('conv2d 1x1', dtype, tol, (d) => E.conv2d(on(d, x), on(d, w1), on(d, b1)));
  const x3 = rand([1, 8, 5, 14, 11], dtype), w33 = rand([12, 8, 3, 3, 3], dtype, -0.3, 0.3), b3 = rand([12], dtype);
  add('conv3d 3x3x3 causal pad', dtype, tol, (d) => E.conv3d(on(d, x3), on(d, w33), on(d, b3), { padding: [2, 0, 1, 1, 1, 1] }));
  add('conv3d stride (1,2,2)', dtype, tol, (d) => E.conv3d(on(d, x3), on(d, w33), null, { stride: [1, 2, 2], padding: 1 }));
  add('upsample nearest 2x', dtype, 0, (d) => E.upsampleNearest(on(d, x), [38, 46]));
  add('upsample nearest 3-D', dtype, 0, (d) => E.upsampleNearest(on(d, x3), [10, 28, 22]));
  add('upsample nearest-exact 7/3', dtype, 0, (d) => E.upsampleNearest(on(d, x), [44, 31], true));
  const h = rand([3, 17, 1536], dtype, -2, 2), g = rand([1536], dtype, 0.5, 1.5), bb = rand([1536], dtype);
  const hs = rand([5, 9, 96], dtype, -2, 2), gs = rand([96], dtype, 0.5, 1.5);
  add('layer norm D=1536 (block per row)', dtype, tol, (d) => E.layerNorm(on(d, h), on(d, g), on(d, bb), 1e-6));
  add('layer norm D=96 no affine (warp per row)', dtype, tol, (d) => E.layerNorm(on(d, hs), null, null, 1e-5));
  add('rms norm D=1536', dtype, tol, (d) => E.rmsNorm(on(d, h), on(d, g), 1e-6));
  add('rms norm D=96', dtype, tol, (d) => E.rmsNorm(on(d, hs), on(d, gs), 1e-6));
  const gx = rand([2, 32, 3, 9, 10], dtype, -1, 3), gw = rand([32], dtype), gb = rand([32], dtype);
  const cw = rand([32]), cb = rand([32]);
  add('group norm 8 groups', dtype, tol, (d) => E.groupNorm(on(d, gx), 8, on(d, gw), on(d, gb), 1e-6));
  add('normalize channels + silu', dtype, tol, (d) =>
    E.normalizeChannels(on(d, gx), on(d, cw), on(d, cb), { scale: Math.sqrt(32), activation: 'silu' }));
  const shift = rand([3, 1, 1536], dtype), scale = rand([3, 17, 1536], dtype, -0.5, 0.5);
  add('normModulate layer + shift/scale', dtype, tol, (d) => E.normModulate(on(d, h), { shift: on(d, shift), scale: on(d, scale), eps: 1e-6 }));
  add('normModulate rms + weight + scale', dtype, tol, (d) => E.normModulate(on(d, h), { norm: 'rms', weight: on(d, g), scale: on(d, shift), eps: 1e-6 }));
  add('gatedAdd', dtype, tol, (d) => E.gatedAdd(on(d, h), on(d, scale), on(d, shift)));
  const q = rand([2, 33, 5, 64], dtype, -2, 2), cos = rand([33, 32], 'float32'), sin = rand([33, 32], 'float32');
  const cosB = rand([2, 33, 32], 'float32'), sinB = rand([2, 33, 32], 'float32');
  add('rope interleaved', dtype, tol, (d) => E.rope(on(d, q), on(d, cos), on(d, sin), true));
  add('rope halves, per-batch tables, strided x', dtype, tol, (d) =>
    E.rope(on(d, q.permute(0, 2, 1, 3).contiguous()).permute(0, 2, 1, 3), on(d, cosB), on(d, sinB), false));
  const table = rand([1000, 48], dtype), ids = randInt([3, 41], 1000, 'int64');
  add('embedding', dtype, 0, (d) => E.embedding(on(d, table), on(d, ids)));
}

// LoRA merge: several adapters in one pass, into a new tensor, in place, and restored
for (const dtype of FLOATS) {
  const base = rand([300, 257], dtype, -1, 1);
  const deltas = [8, 16, 4].map((r, i) => ({ up: rand([300, r], dtype), down: rand([r, 257], 'float32'), scale: 0.5 + 0.25 * i }));
  const tol = tolOf(dtype);
  add('loraMerge 3 adapters', dtype, tol, (d) => {
    const out = E.empty([300, 257], { dtype, device: d });
    E.loraMerge(on(d, base), deltas.map((t) => ({ up: on(d, t.up), down: on(d, t.down), scale: t.scale })), out);
    return out;
  });
  add('loraMerge in place, then restore from the saved base', dtype, 0, (d) => {
    const saved = on(d, base);
    const live = saved.clone();
    E.loraMerge(live, deltas.map((t) => ({ up: on(d, t.up), down: on(d, t.down), scale: t.scale })), live);
    E.loraMerge(saved, [], live);
    return live;
  });
}

// ---- run ----
interface Row { name: string; dtype: string; shape: string; err: number; maxAbs: number; tol: number; ok: boolean; note: string }
const rows: Row[] = [];

function asList(r: Tensor | Tensor[]): Tensor[] {
  return Array.isArray(r) ? r : [r];
}

for (const c of cases) {
  if (filter && !filter.test(`${c.name} ${c.dtype}`)) continue;
  const row: Row = { name: c.name, dtype: c.dtype, shape: '', err: NaN, maxAbs: NaN, tol: c.tol, ok: false, note: '' };
  try {
    E.scope(() => {
      const want = asList(c.run('cpu'));
      const got = asList(c.run(target));
      E.synchronize(target);
      row.shape = want.map((t) => `[${t.shape.join(',')}]`).join(' ');
      let num = 0, den = 0, maxAbs = 0, equal = true, badShape = false, nan = false;
      for (let i = 0; i < want.length; ++i) {
        const w = want[i] as Tensor, g = got[i] as Tensor;
        if (target === 'cuda' && g.device !== 'cuda:0') row.note = `output on ${g.device}`;
        if (w.dtype !== g.dtype || w.shape.join() !== g.shape.join()) badShape = true;
        if (c.tol === 0) {
          const wb = w.bytes(), gb = g.bytes();
          if (wb.length !== gb.length || wb.some((v, j) => v !== gb[j])) equal = false;
        }
        const wf = w.toFloat32(), gf = g.toFloat32();
        for (let j = 0; j < wf.length; ++j) {
          const a = wf[j] as number, b = gf[j] as number;
          if (Number.isNaN(b) && !Number.isNaN(a)) nan = true;
          if (!Number.isFinite(a) && a === b) continue;  // matching infinities (masked lse)
          const diff = a - b;
          num += diff * diff;
          den += a * a;
          maxAbs = Math.max(maxAbs, Math.abs(diff));
        }
      }
      row.err = den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
      row.maxAbs = maxAbs;
      row.ok = !badShape && !nan && !row.note && (c.tol === 0 ? equal : row.err <= c.tol);
      if (badShape) row.note = 'dtype/shape differ';
      else if (nan) row.note = 'NaN in the CUDA output (unwritten or poisoned elements)';
      else if (c.tol === 0 && !equal) row.note = 'bytes differ';
    });
  } catch (err) {
    row.note = (err as Error).message.split('\n')[0] ?? 'error';
  }
  rows.push(row);
  if (!row.ok) console.log(`FAIL ${row.name} ${row.dtype}: ${row.note || `rel-L2 ${row.err.toExponential(2)} > ${row.tol}`}`);
}

// ---- report ----
const fmt = (v: number) => (Number.isNaN(v) ? '-' : v === 0 ? '0' : v.toExponential(2));
const table = [['op', 'dtype', 'shape', 'rel-L2', 'max |err|', 'tol', 'result']];
for (const r of rows)
  table.push([r.name, r.dtype, r.shape, fmt(r.err), fmt(r.maxAbs), r.tol === 0 ? 'exact' : String(r.tol), r.ok ? 'ok' : `FAIL ${r.note}`]);
const widths = (table[0] as string[]).map((_, i) => Math.max(...table.map((row) => (row[i] as string).length)));
for (const row of table) console.log(row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] as number))).join('  '));
const failed = rows.filter((r) => !r.ok).length;
const stats = E.memoryStats();
console.log(`\n${rows.length - failed}/${rows.length} passed; device peak ${(stats.devicePeakBytes / 2 ** 20).toFixed(1)} MiB, ${(stats.deviceBytes / 2 ** 20).toFixed(1)} MiB still held`);
// communicators: NCCL with one rank per device (lib/parallel)
const ncclFailed = !filter || filter.test('nccl') ? await runNcclChecks(target) : 0;
process.exit(failed + ncclFailed > 0 ? 1 : 0);
