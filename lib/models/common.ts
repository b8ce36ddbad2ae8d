// Pieces the models share where they compute the same thing: the sinusoidal timestep embedding
// (diffusers' get_timestep_embedding / Timesteps), the RoPE axis frequencies, running a per-token
// map over slices of the token dimension, and chaining tensor steps that free their intermediates.
import { concat, cos, mul, sin } from '../engine/ops/basic.js';
import { type Device, keep, scope, type Tensor, tensor } from '../engine/tensor.js';

/**
 * The frequencies exp(-ln(10000) i / half), i < half = channels / 2, of get_timestep_embedding
 * (downscale_freq_shift 0), computed in float32 arithmetic step by step as torch does; a kept float32
 * tensor [1, half] on the device, which its model disposes.
 */
export function timestepFrequencies(channels: number, device: Device): Tensor {
  const half = channels / 2;
  const f = Math.fround;
  const freqs = Float32Array.from({ length: half }, (_, i) => Math.exp(f(f(f(-Math.log(10000)) * i) / half)));
  return keep(tensor(freqs, [1, half], { device }));
}

/** Timesteps(flip_sin_to_cos=True): cat(cos, sin) of the float32 timesteps t [B] times the frequencies -> [B, channels]. */
export function timestepSinusoid(t: Tensor, freqs: Tensor): Tensor {
  const args = mul(t.reshape(-1, 1), freqs);
  return concat([cos(args), sin(args)], -1);
}

/** The RoPE frequencies 1 / theta^(arange(0, dim, 2) / dim) of one axis, in float64 as the references compute them. */
export function ropeFrequencies(dim: number, theta: number): Float64Array {
  return Float64Array.from({ length: dim / 2 }, (_, i) => 1 / theta ** ((2 * i) / dim));
}

/** The `ffnChunkTokens` load option: `given` when set (a positive integer), else the model's default. */
export function chunkTokensOption(component: string, given: number | undefined, fallback: number): number {
  const chunk = given ?? fallback;
  if (!Number.isInteger(chunk) || chunk < 1) throw new RangeError(`${component}: ffnChunkTokens must be a positive integer, got ${given}`);
  return chunk;
}

/**
 * run(start, end) over token ranges of at most `chunk` tokens, the results concatenated along dim 1;
 * a single call over the whole range when it fits. Bounds the hidden buffers of per-token maps.
 */
export function byTokenRanges(length: number, chunk: number, run: (start: number, end: number) => Tensor): Tensor {
  if (length <= chunk) return run(0, length);
  const parts: Tensor[] = [];
  for (let at = 0; at < length; at += chunk) parts.push(scope(() => run(at, Math.min(length, at + chunk))));
  return concat(parts, 1);
}

/**
 * Applies the steps in order, freeing each intermediate as soon as the next step has produced its
 * result (x itself is left alone): the peak holds two tensors, not the whole chain.
 */
export function chain(x: Tensor, ...steps: Array<(t: Tensor) => Tensor>): Tensor {
  let cur = x;
  for (const step of steps) {
    const next = step(cur);
    if (cur !== x && cur !== next) cur.dispose();
    cur = next;
  }
  return cur;
}

/** A per-token map over x [B, T, ...] in slices of at most `chunk` tokens (x itself when it fits). */
export function byTokenSlices(x: Tensor, chunk: number, run: (part: Tensor) => Tensor): Tensor {
  const length = x.size(1);
  return byTokenRanges(length, chunk, (at, end) => run(end - at === length ? x : x.slice(1, at, end)));
}
