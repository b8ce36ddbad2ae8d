// Fused DiT elementwise ops (csrc/core/ops_fused.cpp): normalisation with adaptive modulation and
// the gated residual add, each one pass over memory instead of three to five.
import { native, type NativeTensor } from '../native.js';
import { Tensor } from '../tensor.js';

declare module '../native.js' {
  interface NativeAddon {
    normModulate(
      x: NativeTensor,
      kind: number,
      weight: NativeTensor | null,
      bias: NativeTensor | null,
      shift: NativeTensor | null,
      scale: NativeTensor | null,
      eps: number,
    ): NativeTensor;
    gatedAdd(x: NativeTensor, y: NativeTensor, gate: NativeTensor): NativeTensor;
  }
}

export interface NormModulateOptions {
  /** 'layer' (LayerNorm, the default) or 'rms' (RMSNorm) over the last dim */
  norm?: 'layer' | 'rms';
  /** per-feature [D] affine weight (optional) */
  weight?: Tensor | null;
  /** per-feature [D] affine bias, LayerNorm only (optional) */
  bias?: Tensor | null;
  /** added after scaling; broadcast to x's shape, e.g. [B, 1, D] per sample or [B, L, D] per token */
  shift?: Tensor | null;
  /** the output is multiplied by (1 + scale); broadcast like shift */
  scale?: Tensor | null;
  eps: number;
}

/** norm(x) * weight + bias, then * (1 + scale) + shift: a DiT block's norm + adaLN modulation in one op. */
export function normModulate(x: Tensor, opts: NormModulateOptions): Tensor {
  const h = (t: Tensor | null | undefined) => (t ? t.handle : null);
  return new Tensor(
    native.normModulate(x.handle, opts.norm === 'rms' ? 1 : 0, h(opts.weight), h(opts.bias), h(opts.shift), h(opts.scale), opts.eps),
  );
}

/** x + y * gate with y and gate broadcast to x's shape (a DiT block's gated residual). */
export function gatedAdd(x: Tensor, y: Tensor, gate: Tensor): Tensor {
  return new Tensor(native.gatedAdd(x.handle, y.handle, gate.handle));
}
