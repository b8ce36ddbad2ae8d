// Convolutions, nearest resampling, norms, RoPE and embedding lookup against float64
// references written here, on fresh random inputs; plus bad-input errors.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import t from 'tap';

import * as E from '../../lib/engine/index.js';
import { type ConvCase, numel, rand, type Rand, runConv } from '../helpers/nn-ref.js';
import { randomArray, relL2 } from '../helpers/numeric.js';

const F32_TOL = 1e-5;
const BF16_TOL = 1e-2;

// ---------------------------------------------------------------------------------------
// convolution

// Up to 4 output channels per group (with unit column stride) take the direct path, more take
// the implicit GEMM; 1x1 kernels with unit stride and no padding are plain GEMMs.
const conv2dCases: ConvCase[] = [
  { name: '3x3 pad 1, odd sizes, bias', x: [2, 3, 11, 13], w: [5, 3, 3, 3], pad: [1, 1, 1, 1], bias: true },
  { name: 'stride 2 with asymmetric pad (0,1,0,1)', x: [1, 4, 9, 12], w: [6, 4, 3, 3], stride: [2, 2], pad: [0, 1, 0, 1], bias: true },
  { name: 'dilation 2, rectangular kernel', x: [1, 3, 12, 15], w: [6, 3, 2, 3], dilation: [2, 2], pad: [2, 1, 0, 3] },
  { name: 'few output channels (direct): partial tiles, dilation, rectangular kernel', x: [1, 8, 9, 37], w: [3, 8, 3, 2], dilation: [1, 3], pad: [1, 1, 3, 0], bias: true },
  { name: 'few output channels (direct): width below one tile', x: [2, 5, 6, 7], w: [4, 5, 3, 3], pad: [1, 1, 1, 1] },
  { name: 'groups 2', x: [2, 6, 7, 9], w: [4, 3, 3, 3], groups: 2, pad: [1, 1, 1, 1], bias: true },
  { name: 'depthwise (groups = C, multiplier 2)', x: [1, 4, 8, 10], w: [8, 1, 3, 3], groups: 4, pad: [1, 1, 1, 1], bias: true },
  { name: '1x1 kernel (plain GEMM), bias', x: [2, 16, 9, 17], w: [8, 16, 1, 1], bias: true },
  { name: '1x1 kernel, groups 4', x: [1, 12, 5, 7], w: [8, 3, 1, 1], groups: 4 },
  { name: '1x1 kernel with stride 2 and pad', x: [1, 5, 9, 8], w: [3, 5, 1, 1], stride: [2, 2], pad: [1, 0, 0, 1] },
  { name: 'kernel covers the whole padded input', x: [1, 2, 3, 4], w: [3, 2, 5, 6], pad: [1, 1, 1, 1] },
  { name: 'many output positions (several chunks)', x: [1, 8, 40, 71], w: [7, 8, 3, 3], pad: [1, 1, 1, 1], bias: true },
  { name: 'deep reduction (C = 64)', x: [1, 64, 13, 19], w: [24, 64, 3, 3], pad: [1, 1, 1, 1], bias: true },
  { name: 'bf16 weights', x: [1, 6, 10, 11], w: [5, 6, 3, 3], pad: [1, 1, 1, 1], wdtype: 'bfloat16', bias: true },
  { name: 'f16 weights', x: [1, 6, 10, 11], w: [5, 6, 3, 3], pad: [1, 1, 1, 1], wdtype: 'float16' },
  { name: 'channels-last (non-contiguous) input', x: [2, 5, 8, 9], w: [4, 5, 3, 3], pad: [1, 1, 1, 1], channelsLast: true },
];

const conv3dCases: ConvCase[] = [
  { name: 'causal 3x3x3 (pad front 2, back 0)', x: [1, 4, 3, 8, 8], w: [6, 4, 3, 3, 3], pad: [2, 0, 1, 1, 1, 1], bias: true },
  { name: 'first causal chunk: one frame, pad front 2 (padding-only taps skipped)', x: [1, 5, 1, 6, 7], w: [7, 5, 3, 3, 3], pad: [2, 0, 1, 1, 1, 1], bias: true },
  { name: 'output frames that read only padding, with bias', x: [1, 2, 1, 48, 64], w: [6, 2, 2, 1, 1], pad: [3, 0, 0, 0, 0, 0], bias: true },
  { name: 'output frames that read only padding, no bias', x: [1, 2, 1, 48, 64], w: [6, 2, 2, 1, 1], pad: [3, 0, 0, 0, 0, 0] },
  { name: 'RGB head (direct): 3 output channels, causal, channel blocks', x: [1, 11, 3, 7, 35], w: [3, 11, 3, 3, 3], pad: [2, 0, 1, 1, 1, 1], bias: true },
  { name: 'temporal (3,1,1) causal conv', x: [1, 5, 4, 6, 7], w: [10, 5, 3, 1, 1], pad: [2, 0, 0, 0, 0, 0], bias: true },
  { name: 'symmetric pad, odd sizes, batch 2', x: [2, 3, 5, 7, 9], w: [4, 3, 3, 3, 3], pad: [1, 1, 1, 1, 1, 1] },
  { name: 'stride (1,2,2), dilation (2,1,1), groups 2', x: [1, 6, 7, 9, 10], w: [4, 3, 3, 3, 3], stride: [1, 2, 2], dilation: [2, 1, 1], pad: [2, 2, 1, 1, 1, 1], groups: 2, bias: true },
  { name: 'temporal stride 2 (downsample3d time conv)', x: [1, 4, 5, 4, 5], w: [4, 4, 3, 1, 1], stride: [2, 1, 1] },
  { name: 'depthwise', x: [1, 3, 4, 6, 6], w: [3, 1, 3, 3, 3], groups: 3, pad: [1, 1, 1, 1, 1, 1] },
  { name: '1x1x1 (plain GEMM) with bias', x: [2, 12, 3, 5, 7], w: [9, 12, 1, 1, 1], bias: true },
  { name: 'bf16 weights, causal', x: [1, 8, 3, 6, 9], w: [8, 8, 3, 3, 3], pad: [2, 0, 1, 1, 1, 1], wdtype: 'bfloat16', bias: true },
  { name: 'channels-last (non-contiguous) input', x: [1, 4, 3, 5, 6], w: [3, 4, 3, 3, 3], pad: [1, 1, 1, 1, 1, 1], channelsLast: true },
];

t.test('conv2d matches a float64 reference', async (t) => {
  for (const c of conv2dCases) {
    E.scope(() => {
      const { got, want, wantShape } = runConv(c);
      t.same(got.shape, wantShape, `${c.name}: shape`);
      t.equal(got.dtype, 'float32');
      const err = relL2(got.toFloat32(), want);
      t.ok(err <= F32_TOL, `${c.name}: rel-L2 ${err.toExponential(2)}`);
    });
  }
});

t.test('conv3d matches a float64 reference', async (t) => {
  for (const c of conv3dCases) {
    E.scope(() => {
      const { got, want, wantShape } = runConv(c);
      t.same(got.shape, wantShape, `${c.name}: shape`);
      const err = relL2(got.toFloat32(), want);
      t.ok(err <= F32_TOL, `${c.name}: rel-L2 ${err.toExponential(2)}`);
    });
  }
});

t.test('conv gives the same results on every GEMM micro-kernel (AVX-512, AVX2, portable)', async (t) => {
  const script = fileURLToPath(new URL('../helpers/conv-kernel-check.ts', import.meta.url));
  for (const kernel of ['avx512', 'avx2', 'generic']) {
    const out = execFileSync(process.execPath, ['--import=tsx', script], {
      env: { ...process.env, ND_GEMM_KERNEL: kernel },
      encoding: 'utf8',
    });
    const report = JSON.parse(out) as { kernel: string; maxErr: number; cases: number };
    t.equal(report.cases, 5);
    t.ok(report.maxErr <= F32_TOL, `${report.kernel} (asked for ${kernel}): max rel-L2 ${report.maxErr.toExponential(2)}`);
  }
});

t.test('conv with bf16/f16 activations returns the activation dtype', async (t) => {
  const cases: ConvCase[] = [
    { name: 'bf16 input, f32 weights', x: [1, 4, 7, 9], w: [5, 4, 3, 3], pad: [1, 1, 1, 1], xdtype: 'bfloat16', bias: true },
    { name: 'bf16 input and weights', x: [1, 4, 7, 9], w: [5, 4, 3, 3], pad: [1, 1, 1, 1], xdtype: 'bfloat16', wdtype: 'bfloat16' },
    { name: 'f16 input', x: [1, 4, 7, 9], w: [5, 4, 1, 1], xdtype: 'float16' },
    { name: 'bf16 input 3-D causal', x: [1, 3, 2, 5, 6], w: [4, 3, 3, 3, 3], pad: [2, 0, 1, 1, 1, 1], xdtype: 'bfloat16' },
  ];
  for (const c of cases) {
    E.scope(() => {
      const { got, want, wantShape } = runConv(c);
      t.same(got.shape, wantShape);
      t.equal(got.dtype, c.xdtype, `${c.name}: output dtype`);
      const err = relL2(got.toFloat32(), want);
      t.ok(err <= BF16_TOL, `${c.name}: rel-L2 ${err.toExponential(2)}`);
    });
  }
});

t.test('conv bad input gives errors naming the shapes', async (t) => {
  E.scope(() => {
    const x3 = E.zeros([1, 4, 3, 8, 8]);
    t.throws(
      () => E.conv3d(x3, E.zeros([8, 3, 3, 3, 3])),
      /conv3d: input \[1, 4, 3, 8, 8\] has 4 channels but weight \[8, 3, 3, 3, 3\] expects 3 \(groups 1\)/,
    );
    t.throws(() => E.conv3d(x3, E.zeros([8, 4, 5, 3, 3])), /kernel \[5, 3, 3\] .* larger than input \[1, 4, 3, 8, 8\]/);
    t.doesNotThrow(() => E.conv3d(x3, E.zeros([8, 4, 5, 3, 3]), null, { padding: [2, 0, 0, 0, 0, 0] }));
    t.throws(() => E.conv3d(x3, E.zeros([6, 2, 3, 3, 3]), null, { groups: 3 }), /groups 3 must divide/);
    t.throws(() => E.conv3d(x3, E.zeros([6, 4, 3, 3, 3]), E.zeros([5])), /bias \[5\] must have shape \[6\]/);
    t.throws(() => E.conv3d(E.zeros([4, 3, 8, 8]), E.zeros([8, 4, 3, 3, 3])), /input \[4, 3, 8, 8\] must be \[N, C, D, H, W\]/);
    t.throws(() => E.conv3d(x3, E.zeros([8, 4, 3, 3])), /weight \[8, 4, 3, 3\] must be/);
    t.throws(() => E.conv3d(x3, E.zeros([8, 4, 1, 1, 1]), null, { stride: [1, 0, 1] }), /stride .* must be >= 1/);
    t.throws(() => E.conv3d(x3, E.zeros([8, 4, 1, 1, 1]), null, { padding: [0, -1, 0, 0, 0, 0] }), /padding .* must be >= 0/);
    t.throws(() => E.conv3d(x3, E.zeros([8, 4, 1, 1, 1]), null, { padding: [1, 2] as never }), /padding must have 3 or 6 values/);
    const x2 = E.zeros([2, 6, 5, 5]);
    t.throws(() => E.conv2d(x2, E.zeros([4, 4, 3, 3]), null, { groups: 4 }), /groups 4 must divide the input channels \(6/);
    t.throws(() => E.conv2d(x2, E.zeros([4, 6, 7, 3])), /kernel \[7, 3\] with dilation \(1, 1\) is larger than input \[2, 6, 5, 5\] padded by \(0, 0, 0, 0\)/);
    t.throws(() => E.conv2d(x2, E.zeros([4, 6, 3, 3]), null, { dilation: 3 }), /is larger than input/);
    t.throws(() => E.conv2d(E.zeros([2, 6, 5, 5], { dtype: 'int32' }), E.zeros([4, 6, 3, 3])), /input must be float32, bfloat16 or float16/);
    t.throws(() => E.conv2d(x2, E.zeros([4, 6, 3, 3], { dtype: 'int32' })), /weight must be float32/);
  });
});

// ---------------------------------------------------------------------------------------
// nearest resampling (torch's CPU index formulas for a requested output size)

function nearestIndex(dst: number, inSize: number, outSize: number, exact: boolean): number {
  const scale = Math.fround(Math.fround(inSize) / Math.fround(outSize));
  const f = exact ? Math.fround((dst + 0.5) * scale) : Math.fround(Math.fround(dst) * scale);
  return Math.min(Math.floor(f), inSize - 1);
}

function refUpsample(x: Float64Array, xs: number[], size: number[], exact: boolean): Float64Array {
  const sd = size.length;
  const inSp = xs.slice(xs.length - sd);
  const planes = numel(xs.slice(0, xs.length - sd));
  const D = sd === 3 ? size[0]! : 1;
  const H = size[sd - 2]!;
  const W = size[sd - 1]!;
  const [Di, Hi, Wi] = sd === 3 ? (inSp as [number, number, number]) : [1, inSp[0]!, inSp[1]!];
  const out = new Float64Array(planes * D * H * W);
  let k = 0;
  for (let p = 0; p < planes; ++p)
    for (let d = 0; d < D; ++d)
      for (let h = 0; h < H; ++h)
        for (let w = 0; w < W; ++w) {
          const id = sd === 3 ? nearestIndex(d, Di, D, exact) : 0;
          out[k++] = x[((p * Di + id) * Hi + nearestIndex(h, Hi, H, exact)) * Wi + nearestIndex(w, Wi, W, exact)]!;
        }
  return out;
}

t.test('upsampleNearest matches torch nearest / nearest-exact index formulas exactly', async (t) => {
  const cases: Array<[number[], number[]]> = [
    [[2, 3, 5, 7], [10, 14]], // 2x
    [[1, 2, 5, 7], [7, 10]], // non-integer up
    [[1, 2, 8, 9], [3, 4]], // down
    [[1, 1, 13, 3], [29, 11]],
    [[1, 2, 3, 4, 5], [6, 8, 10]], // 3-D 2x
    [[1, 2, 3, 4, 5], [4, 7, 9]], // 3-D non-integer
    [[2, 3, 6, 7], [1, 1]],
    [[1, 1, 100, 3], [333, 3]], // large non-integer ratio where float rounding matters
  ];
  for (const [xs, size] of cases)
    for (const exact of [false, true])
      for (const dtype of ['float32', 'bfloat16'] as E.DType[]) {
        E.scope(() => {
          const x = rand(xs, dtype);
          const got = E.upsampleNearest(x.t, size, exact);
          t.same(got.shape, [...xs.slice(0, xs.length - size.length), ...size]);
          t.equal(got.dtype, dtype);
          const want = refUpsample(x.ref, xs, size, exact);
          t.same(Array.from(got.toFloat32()), Array.from(want), `[${xs}] -> [${size}] exact=${exact} ${dtype}`);
        });
      }
  // the two modes differ where they should: 3 -> 5 picks [0,0,1,1,2] vs [0,0,1,2,2]
  E.scope(() => {
    const x = E.tensor([0, 1, 2], [1, 1, 1, 3]);
    t.same(E.upsampleNearest(x, [1, 5], false).toArray(), [0, 0, 1, 1, 2]);
    t.same(E.upsampleNearest(x, [1, 5], true).toArray(), [0, 0, 1, 2, 2]);
    // a non-contiguous input is read through its strides
    const y = E.tensor([0, 1, 2, 3, 4, 5], [1, 1, 3, 2]).transpose(2, 3);
    t.same(E.upsampleNearest(y, [4, 3], false).toArray(), [0, 2, 4, 0, 2, 4, 1, 3, 5, 1, 3, 5]);
  });
});

t.test('upsampleNearest picks the source indices PyTorch picks (recorded from torch)', async (t) => {
  const file = fileURLToPath(new URL('../fixtures/nearest/torch-indices.json', import.meta.url));
  const recorded = JSON.parse(readFileSync(file, 'utf8')) as { cases: Record<string, Record<'nearest' | 'nearest-exact', number[]>> };
  for (const [key, modes] of Object.entries(recorded.cases)) {
    const [inSize, outSize] = key.split('->').map(Number) as [number, number];
    E.scope(() => {
      const x = E.arange(0, inSize).reshape(1, 1, 1, inSize);
      for (const mode of ['nearest', 'nearest-exact'] as const) {
        const want = modes[mode];
        t.same(E.upsampleNearest(x, [1, outSize], mode === 'nearest-exact').toArray(), want, `${key} ${mode}`);
        t.same(Array.from({ length: outSize }, (_, d) => nearestIndex(d, inSize, outSize, mode === 'nearest-exact')), want, `reference formula ${key} ${mode}`);
      }
    });
  }
});

t.test('upsampleNearest bad input', async (t) => {
  E.scope(() => {
    const x = E.zeros([1, 2, 3, 4]);
    t.throws(() => E.upsampleNearest(x, [8]), /must name 2 \(H, W\) or 3/);
    t.throws(() => E.upsampleNearest(x, [0, 8]), /cannot resize input \[1, 2, 3, 4\] to spatial size \[0, 8\]/);
    t.throws(() => E.upsampleNearest(E.zeros([3, 4]), [6, 8]), /needs at least 3 dims/);
    t.throws(() => E.upsampleNearest(E.zeros([1, 1, 2, 2], { dtype: 'int64' }), [4, 4]), /must be float32/);
  });
});

// ---------------------------------------------------------------------------------------
// normalisation

function refLayerNorm(x: Float64Array, D: number, w: Float64Array | null, b: Float64Array | null, eps: number) {
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / D; ++r) {
    let mean = 0;
    for (let i = 0; i < D; ++i) mean += x[r * D + i]!;
    mean /= D;
    let v = 0;
    for (let i = 0; i < D; ++i) v += (x[r * D + i]! - mean) ** 2;
    const rstd = 1 / Math.sqrt(v / D + eps);
    for (let i = 0; i < D; ++i) out[r * D + i] = (x[r * D + i]! - mean) * rstd * (w ? w[i]! : 1) + (b ? b[i]! : 0);
  }
  return out;
}

function refRmsNorm(x: Float64Array, D: number, w: Float64Array | null, eps: number) {
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / D; ++r) {
    let ms = 0;
    for (let i = 0; i < D; ++i) ms += x[r * D + i]! ** 2;
    const rstd = 1 / Math.sqrt(ms / D + eps);
    for (let i = 0; i < D; ++i) out[r * D + i] = x[r * D + i]! * rstd * (w ? w[i]! : 1);
  }
  return out;
}

function refGroupNorm(x: Float64Array, xs: number[], G: number, w: Float64Array | null, b: Float64Array | null, eps: number) {
  const [N, C] = xs as [number, number];
  const S = numel(xs.slice(2));
  const cpg = C / G;
  const out = new Float64Array(x.length);
  for (let n = 0; n < N; ++n)
    for (let g = 0; g < G; ++g) {
      const base = (n * C + g * cpg) * S;
      const len = cpg * S;
      let mean = 0;
      for (let i = 0; i < len; ++i) mean += x[base + i]!;
      mean /= len;
      let v = 0;
      for (let i = 0; i < len; ++i) v += (x[base + i]! - mean) ** 2;
      const rstd = 1 / Math.sqrt(v / len + eps);
      for (let i = 0; i < len; ++i) {
        const c = g * cpg + Math.floor(i / S);
        out[base + i] = (x[base + i]! - mean) * rstd * (w ? w[c]! : 1) + (b ? b[c]! : 0);
      }
    }
  return out;
}

t.test('layerNorm and rmsNorm match float64 references', async (t) => {
  for (const shape of [[7], [3, 129], [2, 5, 1031], [4, 3072]]) {
    const D = shape[shape.length - 1]!;
    for (const affine of [true, false])
      for (const pdtype of ['float32', 'bfloat16'] as E.DType[]) {
        E.scope(() => {
          // an offset mean checks that the variance does not cancel catastrophically
          const x = rand(shape, 'float32', 99, 101);
          const w = affine ? rand([D], pdtype, 0.5, 1.5) : null;
          const b = affine ? rand([D], pdtype) : null;
          const ln = E.layerNorm(x.t, w?.t ?? null, b?.t ?? null, 1e-6);
          const eln = relL2(ln.toFloat32(), refLayerNorm(x.ref, D, w?.ref ?? null, b?.ref ?? null, 1e-6));
          t.ok(eln <= F32_TOL, `layerNorm [${shape}] affine=${affine} ${pdtype}: ${eln.toExponential(2)}`);
          const rn = E.rmsNorm(x.t, w?.t ?? null, 1e-5);
          const ern = relL2(rn.toFloat32(), refRmsNorm(x.ref, D, w?.ref ?? null, 1e-5));
          t.ok(ern <= F32_TOL, `rmsNorm [${shape}] affine=${affine} ${pdtype}: ${ern.toExponential(2)}`);
        });
      }
  }
  // bf16 activations in, bf16 out
  E.scope(() => {
    const x = rand([6, 257], 'bfloat16', -3, 3);
    const w = rand([257], 'float32');
    const ln = E.layerNorm(x.t, w.t, null, 1e-5);
    t.equal(ln.dtype, 'bfloat16');
    t.ok(relL2(ln.toFloat32(), refLayerNorm(x.ref, 257, w.ref, null, 1e-5)) <= BF16_TOL);
    const rn = E.rmsNorm(x.t, w.t, 1e-5);
    t.equal(rn.dtype, 'bfloat16');
    t.ok(relL2(rn.toFloat32(), refRmsNorm(x.ref, 257, w.ref, 1e-5)) <= BF16_TOL);
  });
  // non-contiguous input (a transposed view)
  E.scope(() => {
    const x = rand([33, 6]);
    const xt = x.t.transpose(0, 1);
    const dense = Float64Array.from(xt.contiguous().toFloat32());
    t.ok(relL2(E.layerNorm(xt, null, null, 1e-5).toFloat32(), refLayerNorm(dense, 33, null, null, 1e-5)) <= F32_TOL);
    t.ok(relL2(E.rmsNorm(xt, null, 1e-6).toFloat32(), refRmsNorm(dense, 33, null, 1e-6)) <= F32_TOL);
  });
});

t.test('groupNorm matches a float64 reference', async (t) => {
  const cases: Array<[number[], number, boolean, E.DType]> = [
    [[2, 6, 5, 7], 3, true, 'float32'],
    [[1, 8, 3, 4, 5], 4, false, 'float32'],
    [[2, 4, 9], 1, true, 'float32'],
    [[2, 4, 9], 4, true, 'float32'],
    [[1, 4, 70, 70], 2, true, 'float32'], // groups longer than one processing chunk
    [[1, 64, 6, 5], 32, true, 'bfloat16'], // bf16 affine parameters
  ];
  for (const [shape, G, affine, pdtype] of cases) {
    E.scope(() => {
      const x = rand(shape, 'float32', -2, 3);
      const C = shape[1]!;
      const w = affine ? rand([C], pdtype, 0.5, 1.5) : null;
      const b = affine ? rand([C], pdtype) : null;
      const got = E.groupNorm(x.t, G, w?.t ?? null, b?.t ?? null, 1e-6);
      const err = relL2(got.toFloat32(), refGroupNorm(x.ref, shape, G, w?.ref ?? null, b?.ref ?? null, 1e-6));
      t.ok(err <= F32_TOL, `groupNorm [${shape}] G=${G} affine=${affine}: ${err.toExponential(2)}`);
    });
  }
  E.scope(() => {
    const x = rand([1, 6, 4, 4], 'bfloat16');
    const got = E.groupNorm(x.t, 2, null, null, 1e-5);
    t.equal(got.dtype, 'bfloat16');
    t.ok(relL2(got.toFloat32(), refGroupNorm(x.ref, [1, 6, 4, 4], 2, null, null, 1e-5)) <= BF16_TOL);
  });
});

t.test('norm bad input', async (t) => {
  E.scope(() => {
    const x = E.zeros([2, 6, 4]);
    t.throws(() => E.layerNorm(x, E.ones([5]), null, 1e-5), /layer_norm: weight \[5\] must have shape \[4\] for input \[2, 6, 4\]/);
    t.throws(() => E.layerNorm(x, null, E.ones([4, 1]), 1e-5), /bias \[4, 1\] must have shape \[4\]/);
    t.throws(() => E.rmsNorm(x, E.ones([6]), 1e-5), /rms_norm: weight \[6\] must have shape \[4\]/);
    t.throws(() => E.rmsNorm(x, null, -1), /eps must be >= 0/);
    t.throws(() => E.groupNorm(x, 4, null, null, 1e-5), /4 groups do not divide the 6 channels of input \[2, 6, 4\]/);
    t.throws(() => E.groupNorm(x, 0, null, null, 1e-5), /0 groups do not divide/);
    t.throws(() => E.groupNorm(x, 3, E.ones([4]), null, 1e-5), /weight \[4\] must have shape \[6\]/);
    t.throws(() => E.groupNorm(E.zeros([6]), 3, null, null, 1e-5), /must be \[N, C, \*\]/);
    t.throws(() => E.layerNorm(E.zeros([2, 3], { dtype: 'int32' }), null, null, 1e-5), /must be float32/);
  });
});

// ---------------------------------------------------------------------------------------
// rotary embeddings

function refRope(x: Float64Array, xs: number[], cos: Float64Array, sin: Float64Array, perBatch: boolean, interleaved: boolean) {
  const [B, L, H, D] = xs as [number, number, number, number];
  const half = D / 2;
  const out = new Float64Array(x.length);
  for (let b = 0; b < B; ++b)
    for (let l = 0; l < L; ++l)
      for (let h = 0; h < H; ++h) {
        const base = ((b * L + l) * H + h) * D;
        const tb = ((perBatch ? b * L : 0) + l) * half;
        for (let i = 0; i < half; ++i) {
          const c = cos[tb + i]!;
          const s = sin[tb + i]!;
          const [i0, i1] = interleaved ? [base + 2 * i, base + 2 * i + 1] : [base + i, base + i + half];
          out[i0] = x[i0]! * c - x[i1]! * s;
          out[i1] = x[i1]! * c + x[i0]! * s;
        }
      }
  return out;
}

function ropeTables(rows: number, half: number): { cos: Rand; sin: Rand } {
  const ang = randomArray(rows * half, 4242 + rows + half, -Math.PI, Math.PI);
  const c = Float64Array.from(Float32Array.from(ang.map(Math.cos)));
  const s = Float64Array.from(Float32Array.from(ang.map(Math.sin)));
  return { cos: { t: E.tensor(Float32Array.from(c), [rows, half]), ref: c }, sin: { t: E.tensor(Float32Array.from(s), [rows, half]), ref: s } };
}

t.test('rope: interleaved and rotate-half forms, [L, D/2] and [B, L, D/2] tables', async (t) => {
  for (const xs of [[2, 5, 3, 8], [1, 7, 2, 128], [3, 4, 1, 2]])
    for (const perBatch of [false, true])
      for (const interleaved of [true, false]) {
        E.scope(() => {
          const [B, L, , D] = xs as [number, number, number, number];
          const x = rand(xs);
          const { cos, sin } = ropeTables(perBatch ? B * L : L, D / 2);
          const shape = perBatch ? [B, L, D / 2] : [L, D / 2];
          const got = E.rope(x.t, cos.t.reshape(shape), sin.t.reshape(shape), interleaved);
          t.same(got.shape, xs);
          const err = relL2(got.toFloat32(), refRope(x.ref, xs, cos.ref, sin.ref, perBatch, interleaved));
          t.ok(err <= F32_TOL, `[${xs}] perBatch=${perBatch} interleaved=${interleaved}: ${err.toExponential(2)}`);
        });
      }
  // non-contiguous x: q out of a fused [B, L, 3, H, D] qkv projection; bf16 x keeps its dtype
  for (const dtype of ['float32', 'bfloat16'] as E.DType[]) {
    E.scope(() => {
      const qkv = rand([2, 6, 3, 4, 16], dtype);
      const q = qkv.t.select(2, 0);
      t.notOk(q.isContiguous);
      const dense = Float64Array.from(q.contiguous().toFloat32());
      const { cos, sin } = ropeTables(6, 8);
      const got = E.rope(q, cos.t, sin.t, true);
      t.equal(got.dtype, dtype);
      t.ok(got.isContiguous);
      const err = relL2(got.toFloat32(), refRope(dense, [2, 6, 4, 16], cos.ref, sin.ref, false, true));
      t.ok(err <= (dtype === 'float32' ? F32_TOL : BF16_TOL), `strided q ${dtype}: ${err.toExponential(2)}`);
    });
  }
});

t.test('rope bad input', async (t) => {
  E.scope(() => {
    const x = E.zeros([1, 4, 2, 7]);
    t.throws(() => E.rope(x, E.zeros([4, 3]), E.zeros([4, 3]), true), /head dim D = 7 of input \[1, 4, 2, 7\] must be even/);
    const y = E.zeros([2, 4, 2, 8]);
    t.throws(() => E.rope(y, E.zeros([5, 4]), E.zeros([5, 4]), true), /tables \[5, 4\] must be \[L, D\/2\] = \[4, 4\] or \[B, L, D\/2\] = \[2, 4, 4\]/);
    t.throws(() => E.rope(y, E.zeros([4, 4]), E.zeros([4, 3]), true), /cos \[4, 4\] and sin \[4, 3\] must have the same shape/);
    t.throws(() => E.rope(y, E.zeros([3, 4, 4]), E.zeros([3, 4, 4]), false), /must be \[L, D\/2\]/);
    t.throws(() => E.rope(E.zeros([4, 2, 8]), E.zeros([4, 4]), E.zeros([4, 4]), false), /must be \[B, L, H, D\]/);
  });
});

// ---------------------------------------------------------------------------------------
// embedding

t.test('embedding gathers rows into float32 for int32 and int64 ids', async (t) => {
  const V = 11;
  const D = 7;
  for (const wdtype of ['float32', 'bfloat16', 'float16'] as E.DType[]) {
    E.scope(() => {
      const w = rand([V, D], wdtype);
      const idList = [3, 0, 10, 10, 5, 1];
      for (const [ids, shape] of [
        [E.tensor(Int32Array.from(idList), [2, 3]), [2, 3]],
        [E.tensor(BigInt64Array.from(idList.map(BigInt)), [6]), [6]],
      ] as Array<[E.Tensor, number[]]>) {
        const got = E.embedding(w.t, ids);
        t.same(got.shape, [...shape, D]);
        t.equal(got.dtype, 'float32');
        const want = idList.flatMap((id) => Array.from(w.ref.subarray(id * D, id * D + D)));
        t.same(Array.from(got.toFloat32()), want, `${wdtype} ${ids.dtype}`);
      }
    });
  }
  // a strided table (transposed view of [D, V]) is read through its strides
  E.scope(() => {
    const wt = rand([D, V]);
    const w = wt.t.transpose(0, 1);
    const got = E.embedding(w, E.tensor(Int32Array.from([2, 9]), [2]));
    const want = [2, 9].flatMap((id) => Array.from({ length: D }, (_, d) => wt.ref[d * V + id]!));
    t.same(Array.from(got.toFloat32()), want);
  });
  // empty ids give an empty result
  E.scope(() => t.same(E.embedding(E.zeros([V, D]), E.tensor(new Int32Array(0), [0])).shape, [0, D]));
});

t.test('embedding bad input: out-of-range ids throw a RangeError naming the id', async (t) => {
  E.scope(() => {
    const w = E.zeros([5, 3]);
    t.throws(() => E.embedding(w, E.tensor(Int32Array.from([1, 5, 2]), [3])), { name: 'RangeError', message: /id 5 at position 1 of ids \[3\] is outside \[0, 5\)/ });
    t.throws(() => E.embedding(w, E.tensor(Int32Array.from([-1]), [1])), { name: 'RangeError', message: /id -1/ });
    t.throws(() => E.embedding(w, E.tensor(BigInt64Array.from([2n ** 40n]), [1])), { name: 'RangeError', message: /id 1099511627776/ });
    t.throws(() => E.embedding(w, E.tensor([1, 2], [2])), /ids must be int32 or int64, got float32/);
    t.throws(() => E.embedding(E.zeros([5]), E.tensor(Int32Array.from([1]), [1])), /weight \[5\] must be \[V, D\]/);
    t.throws(() => E.embedding(E.zeros([5, 3], { dtype: 'int32' }), E.tensor(Int32Array.from([1]), [1])), /weight must be a float tensor/);
  });
});

t.test('failed ops leave no tensors or memory behind', async (t) => {
  const base = E.memoryStats();
  const bad: Array<() => unknown> = [
    () => E.conv3d(E.zeros([1, 4, 3, 8, 8]), E.zeros([8, 3, 3, 3, 3])),
    () => E.rope(E.zeros([1, 4, 2, 7]), E.zeros([4, 3]), E.zeros([4, 3]), true),
    () => E.embedding(E.zeros([5, 3]), E.tensor(Int32Array.from([9]), [1])),
    () => E.groupNorm(E.zeros([1, 6, 2]), 4, null, null, 1e-5),
  ];
  for (const f of bad) t.throws(() => E.scope(f));
  const end = E.memoryStats();
  t.equal(end.liveTensors, base.liveTensors);
  t.equal(end.hostBytes, base.hostBytes);
});
