// Normalisation over the channel dim of [N, C, *] tensors in one pass (csrc/core/ops_channel_norm.cpp,
// csrc/cpu/channel_norm.cpp): the Wan VAE's RMS norm without permuting to channels-last.
import { native, type NativeTensor } from '../native.js';
import { Tensor } from '../tensor.js';

declare module '../native.js' {
  interface NativeAddon {
    normalizeChannels(x: NativeTensor, weight: NativeTensor | null, bias: NativeTensor | null, scale: number, eps: number, activation: number): NativeTensor;
  }
}

export interface NormalizeChannelsOptions {
  /** multiplies the normalised values (the Wan VAE uses sqrt(C), which makes this an RMS norm) */
  scale?: number;
  /** lower bound of the L2 norm, as F.normalize's eps (default 1e-12) */
  eps?: number;
  /** applied after the affine */
  activation?: 'none' | 'silu';
}

const ACTIVATION = { none: 0, silu: 3 } as const;

/**
 * torch.nn.functional.normalize(x, dim=1) * scale * weight[c] + bias[c], then the activation, for
 * x [N, C, *] in one pass: out = act(x / max(||x[n, :, ...]||_2, eps) * scale * weight + bias).
 * weight/bias are [C] (optional); the result has x's shape and dtype.
 */
export function normalizeChannels(x: Tensor, weight: Tensor | null, bias: Tensor | null, opts: NormalizeChannelsOptions = {}): Tensor {
  const act = opts.activation ?? 'none';
  if (!(act in ACTIVATION)) throw new RangeError(`normalizeChannels: activation must be 'none' or 'silu', got '${act}'`);
  return new Tensor(
    native.normalizeChannels(x.handle, weight ? weight.handle : null, bias ? bias.handle : null, opts.scale ?? 1, opts.eps ?? 1e-12, ACTIVATION[act]),
  );
}
