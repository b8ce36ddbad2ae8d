// AutoencoderKLFlux2 (diffusers autoencoder_kl_flux2.py): the 32-channel KL autoencoder of FLUX.2 —
// the same Encoder/Decoder and quant convs as AutoencoderKL (reused from autoencoder-kl.ts) plus a
// BatchNorm2d (running statistics only) over the 2x2-patchified latents, which the FLUX.2 pipelines
// use to normalise latents: 2x2 patches of the 32 latent channels become 128 channels (channel
// c*4 + dy*2 + dx), normalised with (x - running_mean) / sqrt(running_var + batch_norm_eps).
import { add, div, mul, sqrt, sub } from '../../engine/ops/basic.js';
import { keep, scope, type Tensor } from '../../engine/tensor.js';
import type { AutoencoderKLFlux2Config } from '../../io/configs.js';
import type { WeightSet } from '../../io/weights.js';
import { loadFromFolder } from '../component-config.js';
import { ModelParams, type ParamOptions, type WeightSource } from '../weights.js';
import { KLAutoencoderCore } from './autoencoder-kl.js';
import { type KLStructure, klStructure } from './layout.js';

const NAME = 'AutoencoderKLFlux2';
/** The batch norm's step counter: an int64 scalar no computation reads. */
const BN_COUNTER = 'bn.num_batches_tracked';

/** Hides the batch norm's step counter from the unused-weight check. */
function withoutCounter(source: WeightSource): WeightSource {
  return {
    get: (n) => source.get(n),
    has: (n) => source.has(n),
    info: (n) => source.info(n),
    names: () => source.names().filter((n) => n !== BN_COUNTER),
  };
}

/** _patchify_latents: [B, C, H, W] -> [B, 4C, H/2, W/2], channel c*4 + dy*2 + dx. */
export function patchifyLatents(x: Tensor): Tensor {
  const [b, c, h, w] = x.shape as [number, number, number, number];
  if (x.ndim !== 4 || h % 2 || w % 2) throw new RangeError(`${NAME}: latents to patchify must be [B, C, H, W] with even H and W, got [${x.shape}]`);
  return x.reshape(b, c, h / 2, 2, w / 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h / 2, w / 2);
}

/** _unpatchify_latents: [B, 4C, h, w] -> [B, C, 2h, 2w]. */
export function unpatchifyLatents(x: Tensor): Tensor {
  const [b, c4, h, w] = x.shape as [number, number, number, number];
  if (x.ndim !== 4 || c4 % 4) throw new RangeError(`${NAME}: patchified latents must be [B, 4C, h, w], got [${x.shape}]`);
  return x.reshape(b, c4 / 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 / 4, h * 2, w * 2);
}

export type AutoencoderKLFlux2LoadOptions = ParamOptions;

export class AutoencoderKLFlux2 {
  readonly config: AutoencoderKLFlux2Config;
  readonly structure: KLStructure;
  /** dtype the convolution weights are stored (or were converted) in */
  readonly weightDtype: string;
  private readonly params: ModelParams;
  private readonly weights: WeightSet | null;
  private readonly core: KLAutoencoderCore;
  /** bn.running_mean, float32 [1, 4 latent, 1, 1] */
  private readonly bnMean: Tensor;
  /** sqrt(bn.running_var + batch_norm_eps), float32 [1, 4 latent, 1, 1] */
  private readonly bnStd: Tensor;

  /** Builds the VAE over weights (owned and disposed by the VAE when `owns` is given). */
  constructor(weights: WeightSource, config: AutoencoderKLFlux2Config, opts: AutoencoderKLFlux2LoadOptions = {}, owns: WeightSet | null = null) {
    const [ph, pw] = config.patch_size;
    if (ph !== 2 || pw !== 2) throw new Error(`${NAME}: patch_size [${config.patch_size}] is not supported (the FLUX.2 pipelines patchify 2x2)`);
    this.config = config;
    this.structure = klStructure(config, NAME);
    this.weights = owns;
    const p = (this.params = new ModelParams(NAME, withoutCounter(weights), opts));
    this.core = new KLAutoencoderCore(p, this.structure);
    const channels = 4 * config.latent_channels;
    const mean = p.vector('bn.running_mean', [channels]);
    const variance = p.vector('bn.running_var', [channels]);
    p.checkAllUsed();
    this.bnMean = keep(mean.reshape(1, channels, 1, 1));
    this.bnStd = keep(scope(() => sqrt(add(variance, config.batch_norm_eps)).reshape(1, channels, 1, 1)));
    this.weightDtype = opts.dtype ?? weights.info('decoder.conv_in.weight').dtype;
  }

  /** Loads a diffusers `vae` folder (config.json + safetensors, memory-mapped). */
  static load(dir: string, opts: AutoencoderKLFlux2LoadOptions = {}): Promise<AutoencoderKLFlux2> {
    return loadFromFolder(dir, NAME, (weights, config) => new AutoencoderKLFlux2(weights, config, opts, weights));
  }

  /** Pixels per latent along each side (2^(levels - 1): 8 for four levels). */
  get scaleFactor(): number {
    return this.core.decoder.upFactor;
  }

  get latentChannels(): number {
    return this.config.latent_channels;
  }

  /** AutoencoderKLFlux2.encode(image).latent_dist: mean and (clamped) log-variance, [B, latent, H/8, W/8]. */
  encode(image: Tensor): { mean: Tensor; logvar: Tensor } {
    return this.core.encode(image);
  }

  /** AutoencoderKLFlux2.decode(z): the raw decoder output [B, out, 8h, 8w] (the model's [-1, 1] range, not clamped). */
  decode(z: Tensor): Tensor {
    return this.core.decode(z);
  }

  private checkPatchified(x: Tensor): void {
    const channels = 4 * this.config.latent_channels;
    if (x.ndim !== 4 || x.size(1) !== channels) throw new RangeError(`${NAME}: patchified latents must be [B, ${channels}, h, w], got [${x.shape}]`);
  }

  /** Patchified latents [B, 128, h, w] -> (x - running_mean) / sqrt(running_var + eps). */
  normalizePatchified(x: Tensor): Tensor {
    this.checkPatchified(x);
    return scope(() => div(sub(x.to('float32'), this.bnMean), this.bnStd));
  }

  /** The inverse: x * sqrt(running_var + eps) + running_mean. */
  denormalizePatchified(x: Tensor): Tensor {
    this.checkPatchified(x);
    return scope(() => add(mul(x.to('float32'), this.bnStd), this.bnMean));
  }

  /**
   * What the pipelines derive from images [B, 3, H, W] in [-1, 1] (_encode_vae_image): the
   * distribution mode (the mean), 2x2-patchified and batch-norm normalised, [B, 128, H/16, W/16].
   */
  encodeToPatchified(image: Tensor): Tensor {
    return scope(() => this.normalizePatchified(patchifyLatents(this.encode(image).mean)));
  }

  /** The pipelines' decode of patchified, normalised latents [B, 128, h, w]: de-normalise, un-patchify, decode. */
  decodePatchified(x: Tensor): Tensor {
    return scope(() => this.decode(unpatchifyLatents(this.denormalizePatchified(x))));
  }

  /** Frees the converted parameters and, when the VAE loaded them, the mapped weights. */
  dispose(): void {
    this.params.dispose();
    this.weights?.dispose();
    this.bnMean.dispose();
    this.bnStd.dispose();
  }
}
