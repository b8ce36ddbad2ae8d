// Convolutions, resampling, normalisation, rotary embeddings and embedding lookup
// (csrc/core/ops_nn.cpp and the csrc/cpu kernels behind it).
import { native, type NativeTensor } from '../native.js';
import { Tensor } from '../tensor.js';

declare module '../native.js' {
  interface NativeAddon {
    conv2d(x: NativeTensor, w: NativeTensor, bias: NativeTensor | null, stride: number[], pad: number[], dilation: number[], groups: number): NativeTensor;
    conv3d(x: NativeTensor, w: NativeTensor, bias: NativeTensor | null, stride: number[], pad: number[], dilation: number[], groups: number): NativeTensor;
    upsampleNearest(x: NativeTensor, outSpatial: number[], exact: boolean): NativeTensor;
    layerNorm(x: NativeTensor, weight: NativeTensor | null, bias: NativeTensor | null, eps: number): NativeTensor;
    rmsNorm(x: NativeTensor, weight: NativeTensor | null, eps: number): NativeTensor;
    groupNorm(x: NativeTensor, groups: number, weight: NativeTensor | null, bias: NativeTensor | null, eps: number): NativeTensor;
    rope(x: NativeTensor, cos: NativeTensor, sin: NativeTensor, interleaved: boolean): NativeTensor;
    embedding(weight: NativeTensor, ids: NativeTensor): NativeTensor;
  }
}

export interface Conv2dOptions {
  stride?: number | [number, number];
  /** symmetric [h, w] or explicit [top, bottom, left, right] */
  padding?: number | [number, number] | [number, number, number, number];
  dilation?: number | [number, number];
  groups?: number;
}

export interface Conv3dOptions {
  stride?: number | [number, number, number];
  /** symmetric [d, h, w] or explicit [front, back, top, bottom, left, right] (causal: [2p, 0, ...]) */
  padding?: number | [number, number, number] | [number, number, number, number, number, number];
  dilation?: number | [number, number, number];
  groups?: number;
}

function rep(v: number | number[] | undefined, n: number, dflt: number): number[] {
  if (v === undefined) return new Array<number>(n).fill(dflt);
  if (typeof v === 'number') return new Array<number>(n).fill(v);
  if (v.length !== n) throw new RangeError(`expected ${n} values, got [${v}]`);
  return [...v];
}

function pads(v: number | number[] | undefined, dims: number): number[] {
  if (v === undefined || typeof v === 'number') return new Array<number>(2 * dims).fill(v ?? 0);
  if (v.length === dims) return v.flatMap((p) => [p, p]);
  if (v.length === 2 * dims) return [...v];
  throw new RangeError(`padding must have ${dims} or ${2 * dims} values, got [${v}]`);
}

/** NCHW convolution; weight [O, C/groups, kh, kw] (float32/bf16/f16), bias [O]. */
export function conv2d(x: Tensor, weight: Tensor, bias?: Tensor | null, opts: Conv2dOptions = {}): Tensor {
  return new Tensor(
    native.conv2d(x.handle, weight.handle, bias ? bias.handle : null, rep(opts.stride, 2, 1), pads(opts.padding, 2), rep(opts.dilation, 2, 1), opts.groups ?? 1),
  );
}

/** NCDHW convolution; weight [O, C/groups, kd, kh, kw], bias [O]. */
export function conv3d(x: Tensor, weight: Tensor, bias?: Tensor | null, opts: Conv3dOptions = {}): Tensor {
  return new Tensor(
    native.conv3d(x.handle, weight.handle, bias ? bias.handle : null, rep(opts.stride, 3, 1), pads(opts.padding, 3), rep(opts.dilation, 3, 1), opts.groups ?? 1),
  );
}

/**
 * Nearest-neighbour resize of the trailing spatial dims (2 for NCHW, 3 for NCDHW) to `size`.
 * exact=true is torch's 'nearest-exact' (pixel centres), false is 'nearest'.
 */
export function upsampleNearest(x: Tensor, size: number[], exact = false): Tensor {
  return new Tensor(native.upsampleNearest(x.handle, size, exact));
}

/** Layer norm over the last dim; weight/bias optional ([D]). */
export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps: number): Tensor {
  return new Tensor(native.layerNorm(x.handle, weight ? weight.handle : null, bias ? bias.handle : null, eps));
}

/** RMS norm over the last dim: x / sqrt(mean(x^2) + eps) * weight (weight optional). */
export function rmsNorm(x: Tensor, weight: Tensor | null, eps: number): Tensor {
  return new Tensor(native.rmsNorm(x.handle, weight ? weight.handle : null, eps));
}

/** Group norm over [N, C, *] with `groups` groups; weight/bias [C] optional. */
export function groupNorm(x: Tensor, groups: number, weight: Tensor | null, bias: Tensor | null, eps: number): Tensor {
  return new Tensor(native.groupNorm(x.handle, groups, weight ? weight.handle : null, bias ? bias.handle : null, eps));
}

/**
 * Rotary position embedding on x [B, L, H, D] with float32 cos/sin tables [L, D/2] (or [B, L, D/2]).
 * interleaved: rotate pairs (x[2i], x[2i+1]) (Wan, Flux, Z-Image complex form);
 * otherwise rotate halves (x[i], x[i + D/2]) (Llama/Qwen rotate_half form).
 */
export function rope(x: Tensor, cos: Tensor, sin: Tensor, interleaved: boolean): Tensor {
  return new Tensor(native.rope(x.handle, cos.handle, sin.handle, interleaved));
}

/** weight[ids]: ids int32/int64 of any shape -> float32 [...ids.shape, D] for any float weight dtype; an id outside [0, V) throws a RangeError before anything is written. */
export function embedding(weight: Tensor, ids: Tensor): Tensor {
  return new Tensor(native.embedding(weight.handle, ids.handle));
}
