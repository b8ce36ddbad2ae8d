// Shared by nn.test.ts and conv-kernel-check.ts: seeded random tensors with the float64 values
// they hold, and a naive float64 convolution reference.
import * as E from '../../lib/engine/index.js';
import { randomArray, roundBf16 } from './numeric.js';

export const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

/** Values as stored in `dtype` (the reference sees exactly what the kernel sees). */
export function stored(x: Float64Array, dtype: E.DType): Float64Array {
  if (dtype === 'bfloat16') return roundBf16(x);
  if (dtype === 'float16') return Float64Array.from(E.tensor(Float32Array.from(x), [x.length], { dtype }).toFloat32());
  return Float64Array.from(Float32Array.from(x));
}

export interface Rand {
  t: E.Tensor;
  ref: Float64Array;
}

let seedCounter = 1;
/** A fresh random tensor and the float64 values it holds. */
export function rand(shape: number[], dtype: E.DType = 'float32', lo = -1, hi = 1): Rand {
  const x = randomArray(numel(shape), 7919 * seedCounter++, lo, hi);
  return { t: E.tensor(Float32Array.from(x), shape, { dtype }), ref: stored(x, dtype) };
}

export interface ConvCase {
  name: string;
  x: number[]; // input shape [N, C, (D,) H, W]
  w: number[]; // weight shape [O, C/groups, (kd,) kh, kw]
  stride?: number[];
  pad?: number[]; // (lo, hi) per spatial dim, in the order of the op's padding option
  dilation?: number[];
  groups?: number;
  bias?: boolean;
  wdtype?: E.DType;
  xdtype?: E.DType;
  channelsLast?: boolean; // pass the input as a permuted (non-contiguous) view
}

/** Naive float64 convolution over 2 or 3 spatial dims. */
export function refConv(x: Float64Array, xs: number[], w: Float64Array, ws: number[], b: Float64Array | null, c: ConvCase) {
  const sd = xs.length - 2;
  // lift 2-D to 3-D with a unit depth
  const X = sd === 3 ? xs : [xs[0]!, xs[1]!, 1, xs[2]!, xs[3]!];
  const Wsh = sd === 3 ? ws : [ws[0]!, ws[1]!, 1, ws[2]!, ws[3]!];
  const st = sd === 3 ? c.stride ?? [1, 1, 1] : [1, ...(c.stride ?? [1, 1])];
  const dl = sd === 3 ? c.dilation ?? [1, 1, 1] : [1, ...(c.dilation ?? [1, 1])];
  const pd = sd === 3 ? c.pad ?? [0, 0, 0, 0, 0, 0] : [0, 0, ...(c.pad ?? [0, 0, 0, 0])];
  const G = c.groups ?? 1;
  const [N, C, Di, Hi, Wi] = X as [number, number, number, number, number];
  const [O, Cg, KD, KH, KW] = Wsh as [number, number, number, number, number];
  const Og = O / G;
  const outSp = [Di, Hi, Wi].map((n, i) => Math.floor((n + pd[2 * i]! + pd[2 * i + 1]! - dl[i]! * ([KD, KH, KW][i]! - 1) - 1) / st[i]!) + 1);
  const [Do, Ho, Wo] = outSp as [number, number, number];
  const out = new Float64Array(N * O * Do * Ho * Wo);
  let k = 0;
  for (let n = 0; n < N; ++n)
    for (let o = 0; o < O; ++o) {
      const g = Math.floor(o / Og);
      for (let od = 0; od < Do; ++od)
        for (let oh = 0; oh < Ho; ++oh)
          for (let ow = 0; ow < Wo; ++ow) {
            let acc = b ? b[o]! : 0;
            for (let ci = 0; ci < Cg; ++ci) {
              const cin = g * Cg + ci;
              for (let kd = 0; kd < KD; ++kd) {
                const id = od * st[0]! + kd * dl[0]! - pd[0]!;
                if (id < 0 || id >= Di) continue;
                for (let kh = 0; kh < KH; ++kh) {
                  const ih = oh * st[1]! + kh * dl[1]! - pd[2]!;
                  if (ih < 0 || ih >= Hi) continue;
                  for (let kw = 0; kw < KW; ++kw) {
                    const iw = ow * st[2]! + kw * dl[2]! - pd[4]!;
                    if (iw < 0 || iw >= Wi) continue;
                    acc +=
                      x[(((n * C + cin) * Di + id) * Hi + ih) * Wi + iw]! * w[(((o * Cg + ci) * KD + kd) * KH + kh) * KW + kw]!;
                  }
                }
              }
            }
            out[k++] = acc;
          }
    }
  const shape = sd === 3 ? [N, O, Do, Ho, Wo] : [N, O, Ho, Wo];
  return { out, shape };
}

export function runConv(c: ConvCase): { got: E.Tensor; want: Float64Array; wantShape: number[] } {
  const sd = c.x.length - 2;
  let x: Rand;
  if (c.channelsLast) {
    // build [N, (D,) H, W, C] and view it as [N, C, (D,) H, W]
    const perm = sd === 3 ? [0, 4, 1, 2, 3] : [0, 3, 1, 2];
    const nhwc = [c.x[0]!, ...c.x.slice(2), c.x[1]!];
    const r = rand(nhwc, c.xdtype);
    const view = r.t.permute(perm);
    // reference values in NC(D)HW order
    const dense = view.contiguous().toFloat32();
    x = { t: view, ref: Float64Array.from(dense) };
  } else {
    x = rand(c.x, c.xdtype);
  }
  const w = rand(c.w, c.wdtype ?? 'float32', -0.5, 0.5);
  const b = c.bias ? rand([c.w[0]!], 'float32') : null;
  const opts = { stride: c.stride, padding: c.pad, dilation: c.dilation, groups: c.groups } as E.Conv3dOptions;
  const got = sd === 3 ? E.conv3d(x.t, w.t, b?.t, opts) : E.conv2d(x.t, w.t, b?.t, opts as E.Conv2dOptions);
  const { out, shape } = refConv(x.ref, c.x, w.ref, c.w, b ? b.ref : null, c);
  return { got, want: out, wantShape: shape };
}

