// AutoencoderKL (diffusers autoencoder_kl.py over vae.py's Encoder/Decoder), the 16-channel image VAE
// of FLUX.1 and Z-Image. Encoder: conv_in, DownEncoderBlock2D levels (ResnetBlock2D layers, then a
// stride-2 conv after an asymmetric (0, 1, 0, 1) zero pad on all but the last level), a mid block
// (resnet, single-head spatial self-attention, resnet), GroupNorm + SiLU, conv_out to the mean and
// log-variance. Decoder: the mirror image with nearest 2x upsampling + conv. ResnetBlock2D is
// GroupNorm -> SiLU -> conv3x3 twice plus a (1x1-projected) residual. The parts are exported so
// AutoencoderKLFlux2 (the same Encoder/Decoder with a batch norm on patchified latents) reuses them.
// Activations are NCHW float32; forwards never modify or free their input.
import { add, affine, clamp, silu } from '../../engine/ops/basic.js';
import { attention, linear } from '../../engine/ops/linalg.js';
import { conv2d, groupNorm, upsampleNearest } from '../../engine/ops/nn.js';
import { scope, type Tensor } from '../../engine/tensor.js';
import type { AutoencoderKLConfig } from '../../io/configs.js';
import type { WeightSet } from '../../io/weights.js';
import { loadFromFolder } from '../component-config.js';
import { ModelParams, type ParamOptions, type WeightSource } from '../weights.js';
import { type KLStructure, klStructure } from './layout.js';

const NAME = 'AutoencoderKL';
/** eps of every GroupNorm in the Encoder/Decoder (resnet_eps) */
const NORM_EPS = 1e-6;

interface Conv {
  weight: Tensor;
  bias: Tensor;
}

interface Norm {
  weight: Tensor;
  bias: Tensor;
}

interface Resnet {
  norm1: Norm;
  conv1: Conv;
  norm2: Norm;
  conv2: Conv;
  shortcut: Conv | null;
}

interface MidAttention {
  norm: Norm;
  toQ: Conv;
  toK: Conv;
  toV: Conv;
  toOut: Conv;
}

interface MidBlock {
  resnet0: Resnet;
  attention: MidAttention | null;
  resnet1: Resnet;
}

/** Reads the parameters of the Encoder/Decoder building blocks from one checkpoint. */
class PartReader {
  constructor(private readonly p: ModelParams) {}

  conv(name: string, o: number, i: number, k = 3): Conv {
    return { weight: this.p.matrix(`${name}.weight`, [o, i, k, k]), bias: this.p.vector(`${name}.bias`, [o]) };
  }

  linear(name: string, o: number, i: number): Conv {
    return { weight: this.p.matrix(`${name}.weight`, [o, i]), bias: this.p.vector(`${name}.bias`, [o]) };
  }

  norm(name: string, ch: number): Norm {
    return { weight: this.p.vector(`${name}.weight`, [ch]), bias: this.p.vector(`${name}.bias`, [ch]) };
  }

  resnet(name: string, i: number, o: number): Resnet {
    return {
      norm1: this.norm(`${name}.norm1`, i),
      conv1: this.conv(`${name}.conv1`, o, i),
      norm2: this.norm(`${name}.norm2`, o),
      conv2: this.conv(`${name}.conv2`, o, o),
      shortcut: i !== o ? this.conv(`${name}.conv_shortcut`, o, i, 1) : null,
    };
  }

  mid(name: string, ch: number, withAttention: boolean): MidBlock {
    const a = `${name}.attentions.0`;
    return {
      resnet0: this.resnet(`${name}.resnets.0`, ch, ch),
      attention: withAttention
        ? {
            norm: this.norm(`${a}.group_norm`, ch),
            toQ: this.linear(`${a}.to_q`, ch, ch),
            toK: this.linear(`${a}.to_k`, ch, ch),
            toV: this.linear(`${a}.to_v`, ch, ch),
            toOut: this.linear(`${a}.to_out.0`, ch, ch),
          }
        : null,
      resnet1: this.resnet(`${name}.resnets.1`, ch, ch),
    };
  }
}

function normSilu(x: Tensor, n: Norm, groups: number): Tensor {
  return silu(groupNorm(x, groups, n.weight, n.bias, NORM_EPS));
}

function conv(x: Tensor, c: Conv, opts: Parameters<typeof conv2d>[3] = { padding: 1 }): Tensor {
  return conv2d(x, c.weight, c.bias, opts);
}

/** ResnetBlock2D (no time embedding, output_scale_factor 1). */
function resnetForward(r: Resnet, x: Tensor, groups: number): Tensor {
  return scope(() => {
    const h = conv(normSilu(conv(normSilu(x, r.norm1, groups), r.conv1), r.norm2, groups), r.conv2);
    return add(r.shortcut ? conv(x, r.shortcut, {}) : x, h);
  });
}

/** The mid block's Attention: GroupNorm, one head over the H*W positions, output projection, residual. */
function midAttentionForward(a: MidAttention, x: Tensor, groups: number): Tensor {
  return scope(() => {
    const [b, c, h, w] = x.shape as [number, number, number, number];
    const tokens = groupNorm(x, groups, a.norm.weight, a.norm.bias, NORM_EPS).view(b, c, h * w).transpose(1, 2);
    const head = (p: Conv) => linear(tokens, p.weight, p.bias).view(b, h * w, 1, c).permute(0, 2, 1, 3);
    const out = attention(head(a.toQ), head(a.toK), head(a.toV)).transpose(1, 2).reshape(b, h * w, c);
    return add(linear(out, a.toOut.weight, a.toOut.bias).transpose(1, 2).reshape(b, c, h, w), x);
  });
}

function midForward(m: MidBlock, x: Tensor, groups: number): Tensor {
  return scope(() => {
    let h = resnetForward(m.resnet0, x, groups);
    if (m.attention) h = midAttentionForward(m.attention, h, groups);
    return resnetForward(m.resnet1, h, groups);
  });
}

interface DownLevel {
  resnets: Resnet[];
  downsample: Conv | null;
}

interface UpLevel {
  resnets: Resnet[];
  upsample: Conv | null;
}

/** vae.py Encoder (double_z): image [B, in, H, W] -> moments [B, 2 latent, H/2^(levels-1), ...]. */
export class VaeEncoder {
  private readonly convIn: Conv;
  private readonly levels: DownLevel[] = [];
  private readonly mid: MidBlock;
  private readonly normOut: Norm;
  private readonly convOut: Conv;
  private readonly groups: number;

  constructor(p: ModelParams, s: KLStructure, prefix = 'encoder') {
    const r = new PartReader(p);
    this.groups = s.normNumGroups;
    const widths = s.blockOutChannels;
    this.convIn = r.conv(`${prefix}.conv_in`, widths[0]!, s.inChannels);
    let ch = widths[0]!;
    widths.forEach((out, i) => {
      const b = `${prefix}.down_blocks.${i}`;
      this.levels.push({
        resnets: Array.from({ length: s.layersPerBlock }, (_, j) => r.resnet(`${b}.resnets.${j}`, j === 0 ? ch : out, out)),
        downsample: i < widths.length - 1 ? r.conv(`${b}.downsamplers.0.conv`, out, out) : null,
      });
      ch = out;
    });
    this.mid = r.mid(`${prefix}.mid_block`, ch, s.midBlockAddAttention);
    this.normOut = r.norm(`${prefix}.conv_norm_out`, ch);
    this.convOut = r.conv(`${prefix}.conv_out`, 2 * s.latentChannels, ch);
  }

  /** Spatial reduction factor (2 per downsampling level). */
  get downFactor(): number {
    return 2 ** this.levels.filter((l) => l.downsample).length;
  }

  forward(x: Tensor): Tensor {
    return scope(() => {
      let h = conv(x, this.convIn);
      for (const level of this.levels) {
        for (const r of level.resnets) h = resnetForward(r, h, this.groups);
        // Downsample2D with padding=0: F.pad(x, (0, 1, 0, 1)) then a stride-2 conv
        if (level.downsample) h = conv(h, level.downsample, { stride: 2, padding: [0, 1, 0, 1] });
      }
      h = midForward(this.mid, h, this.groups);
      return conv(normSilu(h, this.normOut, this.groups), this.convOut);
    });
  }
}

/** vae.py Decoder: latents [B, latent, h, w] -> image [B, out, h*2^(levels-1), ...] (not clamped). */
export class VaeDecoder {
  private readonly convIn: Conv;
  private readonly mid: MidBlock;
  private readonly levels: UpLevel[] = [];
  private readonly normOut: Norm;
  private readonly convOut: Conv;
  private readonly groups: number;

  constructor(p: ModelParams, s: KLStructure, prefix = 'decoder') {
    const r = new PartReader(p);
    this.groups = s.normNumGroups;
    const widths = [...s.decoderBlockOutChannels].reverse();
    this.convIn = r.conv(`${prefix}.conv_in`, widths[0]!, s.latentChannels);
    this.mid = r.mid(`${prefix}.mid_block`, widths[0]!, s.midBlockAddAttention);
    let ch = widths[0]!;
    widths.forEach((out, i) => {
      const b = `${prefix}.up_blocks.${i}`;
      this.levels.push({
        resnets: Array.from({ length: s.layersPerBlock + 1 }, (_, j) => r.resnet(`${b}.resnets.${j}`, j === 0 ? ch : out, out)),
        upsample: i < widths.length - 1 ? r.conv(`${b}.upsamplers.0.conv`, out, out) : null,
      });
      ch = out;
    });
    this.normOut = r.norm(`${prefix}.conv_norm_out`, ch);
    this.convOut = r.conv(`${prefix}.conv_out`, s.outChannels, ch);
  }

  /** Spatial enlargement factor (2 per upsampling level). */
  get upFactor(): number {
    return 2 ** this.levels.filter((l) => l.upsample).length;
  }

  forward(z: Tensor): Tensor {
    return scope(() => {
      let h = midForward(this.mid, conv(z, this.convIn), this.groups);
      for (const level of this.levels) {
        for (const r of level.resnets) h = resnetForward(r, h, this.groups);
        // Upsample2D: nearest 2x, then a 3x3 conv
        if (level.upsample) h = conv(upsampleNearest(h, [2 * h.size(2), 2 * h.size(3)]), level.upsample);
      }
      return conv(normSilu(h, this.normOut, this.groups), this.convOut);
    });
  }
}

/**
 * Encoder + quant_conv and post_quant_conv + Decoder over one checkpoint: the common core of
 * AutoencoderKL and AutoencoderKLFlux2.
 */
export class KLAutoencoderCore {
  readonly encoder: VaeEncoder;
  readonly decoder: VaeDecoder;
  private readonly quantConv: Conv | null;
  private readonly postQuantConv: Conv | null;
  /** the VAE class, for error messages */
  private readonly component: string;

  constructor(p: ModelParams, private readonly s: KLStructure) {
    this.component = p.component;
    const r = new PartReader(p);
    this.encoder = new VaeEncoder(p, s);
    this.decoder = new VaeDecoder(p, s);
    this.quantConv = s.useQuantConv ? r.conv('quant_conv', 2 * s.latentChannels, 2 * s.latentChannels, 1) : null;
    this.postQuantConv = s.usePostQuantConv ? r.conv('post_quant_conv', s.latentChannels, s.latentChannels, 1) : null;
  }

  /**
   * The latent distribution of images [B, in, H, W] in [-1, 1] (any float dtype): mean and
   * log-variance, each [B, latent, H/f, W/f]; the log-variance clamped to [-30, 20] as
   * DiagonalGaussianDistribution does.
   */
  encode(image: Tensor): { mean: Tensor; logvar: Tensor } {
    const s = this.s;
    if (image.ndim !== 4 || image.size(1) !== s.inChannels)
      throw new RangeError(`${this.component}: images must be [B, ${s.inChannels}, H, W], got [${image.shape}]`);
    const f = this.encoder.downFactor;
    if (image.size(2) % f || image.size(3) % f) throw new RangeError(`${this.component}: image size ${image.size(2)}x${image.size(3)} is not a multiple of ${f}`);
    return scope(() => {
      let moments = this.encoder.forward(image.to('float32'));
      if (this.quantConv) moments = conv(moments, this.quantConv, {});
      const [mean, logvar] = moments.chunk(2, 1) as [Tensor, Tensor];
      return { mean: mean.contiguous(), logvar: clamp(logvar, -30, 20) };
    });
  }

  /** Decoder output [B, out, H, W] for latents [B, latent, h, w] as the decoder takes them (un-normalised). */
  decode(z: Tensor): Tensor {
    const s = this.s;
    if (z.ndim !== 4 || z.size(1) !== s.latentChannels)
      throw new RangeError(`${this.component}: latents must be [B, ${s.latentChannels}, h, w], got [${z.shape}]`);
    return scope(() => {
      const x = z.to('float32');
      return this.decoder.forward(this.postQuantConv ? conv(x, this.postQuantConv, {}) : x);
    });
  }
}

export type AutoencoderKLLoadOptions = ParamOptions;

export class AutoencoderKL {
  readonly config: AutoencoderKLConfig;
  readonly structure: KLStructure;
  /** dtype the convolution weights are stored (or were converted) in */
  readonly weightDtype: string;
  private readonly params: ModelParams;
  private readonly weights: WeightSet | null;
  private readonly core: KLAutoencoderCore;

  /** Builds the VAE over weights (owned and disposed by the VAE when `owns` is given). */
  constructor(weights: WeightSource, config: AutoencoderKLConfig, opts: AutoencoderKLLoadOptions = {}, owns: WeightSet | null = null) {
    this.config = config;
    this.structure = klStructure(config, NAME);
    this.weights = owns;
    this.params = new ModelParams(NAME, weights, opts);
    this.core = new KLAutoencoderCore(this.params, this.structure);
    this.params.checkAllUsed();
    this.weightDtype = opts.dtype ?? weights.info('decoder.conv_in.weight').dtype;
  }

  /** Loads a diffusers `vae` folder (config.json + safetensors, memory-mapped). */
  static load(dir: string, opts: AutoencoderKLLoadOptions = {}): Promise<AutoencoderKL> {
    return loadFromFolder(dir, NAME, (weights, config) => new AutoencoderKL(weights, config, opts, weights));
  }

  /** Pixels per latent along each side (2^(levels - 1): 8 for four levels). */
  get scaleFactor(): number {
    return this.core.decoder.upFactor;
  }


  /** AutoencoderKL.encode(image).latent_dist: mean and (clamped) log-variance. */
  encode(image: Tensor): { mean: Tensor; logvar: Tensor } {
    return this.core.encode(image);
  }

  /** AutoencoderKL.decode(z): the raw decoder output [B, out, 8h, 8w] (the model's [-1, 1] range, not clamped). */
  decode(z: Tensor): Tensor {
    return this.core.decode(z);
  }

  /** Pipeline latents -> decoder input: z / scaling_factor + shift_factor. */
  denormalizeLatents(latents: Tensor): Tensor {
    return affine(latents, 1 / this.config.scaling_factor, this.config.shift_factor ?? 0);
  }

  /** Encoder mean -> pipeline latents: (mean - shift_factor) * scaling_factor. */
  normalizeLatents(mean: Tensor): Tensor {
    const s = this.config.scaling_factor;
    return affine(mean, s, -(this.config.shift_factor ?? 0) * s);
  }

  /** Frees the converted parameters and, when the VAE loaded them, the mapped weights. */
  dispose(): void {
    this.params.dispose();
    this.weights?.dispose();
  }
}
