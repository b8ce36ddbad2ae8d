// AutoencoderKLWan, the Wan2.1 video VAE, mirroring diffusers' models/autoencoders/autoencoder_kl_wan.py.
//
// Every temporal convolution is causal (zero frames, or cached frames, in front; none behind), so a
// video is decoded one latent frame at a time and encoded in chunks of 4 frames: each causal conv keeps
// the last CACHE_T = 2 frames of its input from the previous chunk (diffusers' feat_cache/feat_idx) and
// prepends them instead of zero padding. Memory therefore depends on the frame size, not on the number
// of frames. Activations are NCDHW float32; module forwards never modify or free their input.
import type { DType } from '../../engine/dtype.js';
import { attention, linear } from '../../engine/ops/linalg.js';
import { add, clamp, concat, div, mul, sub } from '../../engine/ops/basic.js';
import { normalizeChannels } from '../../engine/ops/channel_norm.js';
import { conv3d, upsampleNearest } from '../../engine/ops/nn.js';
import { type Device, Tensor, empty, keep, scope, tensor, zeros } from '../../engine/tensor.js';
import type { AutoencoderKLWanConfig } from '../../io/configs.js';
import type { WeightSet } from '../../io/weights.js';
import { chain } from '../common.js';
import { loadFromFolder } from '../component-config.js';
import { ModelParams } from '../weights.js';

/** Frames of a causal conv's input kept for the next chunk. */
const CACHE_T = 2;

// ---------------------------------------------------------------------------------------
// The causal feature cache

type CacheSlot = Tensor | 'Rep' | undefined;

/**
 * diffusers' feat_cache + feat_idx: one slot per cached layer, visited in the same order in every
 * chunk. A slot holds the last input frames of its layer from the previous chunk ('Rep' marks a
 * temporal upsampler that has seen the first chunk, which it passes through without upsampling).
 */
class FeatureCache {
  private readonly slots: CacheSlot[] = [];
  private index = 0;

  /** Starts a chunk: slots are visited from the first again. */
  beginChunk(): void {
    this.index = 0;
  }

  /** What the current slot holds from the previous chunk. */
  peek(): CacheSlot {
    return this.slots[this.index];
  }

  /** Replaces the current slot (freeing what it held) and moves to the next one. */
  store(value: Tensor | 'Rep'): void {
    const old = this.slots[this.index];
    if (old instanceof Tensor) old.dispose();
    this.slots[this.index++] = value instanceof Tensor ? keep(value) : value;
  }

  dispose(): void {
    for (const s of this.slots) if (s instanceof Tensor) s.dispose();
    this.slots.length = 0;
  }
}

/**
 * diffusers' cache_x: the last CACHE_T frames of x, with the last frame cached from the chunk before
 * (or a zero frame after a 'Rep' marker) in front when x is shorter. A fresh tensor.
 */
function nextCacheFrames(x: Tensor, prev: CacheSlot): Tensor {
  return scope(() => {
    const t = x.size(2);
    const tail = x.slice(2, Math.max(0, t - CACHE_T), t);
    if (tail.size(2) >= CACHE_T || prev === undefined) return tail.clone();
    const front = prev === 'Rep' ? zeros(tail.shape, { device: tail.device }) : prev.slice(2, prev.size(2) - 1, prev.size(2));
    return concat([front, tail], 2);
  });
}

// ---------------------------------------------------------------------------------------
// Layers

/** WanCausalConv3d: Conv3d whose temporal padding is all in front (2 * pad), filled from the cache when given. */
class WanCausalConv3d {
  private readonly weight: Tensor;
  private readonly bias: Tensor;
  private readonly front: number;
  private readonly spatialPad: [number, number, number, number];

  constructor(
    w: ModelParams,
    name: string,
    inDim: number,
    outDim: number,
    kernel: [number, number, number],
    private readonly stride: [number, number, number] = [1, 1, 1],
    padding: [number, number, number] = [0, 0, 0],
  ) {
    this.weight = w.matrix(`${name}.weight`, [outDim, inDim, ...kernel]);
    this.bias = w.vector(`${name}.bias`, [outDim]);
    this.front = 2 * padding[0];
    this.spatialPad = [padding[1], padding[1], padding[2], padding[2]];
  }

  /** x [B, C, T, H, W]; cache: earlier frames that take the place of (some of) the zero frames in front. */
  forward(x: Tensor, cache?: Tensor): Tensor {
    if (!cache || this.front === 0)
      return conv3d(x, this.weight, this.bias, { stride: this.stride, padding: [this.front, 0, ...this.spatialPad] });
    const input = concat([cache, x], 2);
    try {
      return conv3d(input, this.weight, this.bias, {
        stride: this.stride,
        padding: [this.front - cache.size(2), 0, ...this.spatialPad],
      });
    } finally {
      input.dispose();
    }
  }
}

/** A causal conv fed from and feeding the cache: the pattern diffusers repeats around every cached conv. */
function cachedConv(conv: WanCausalConv3d, x: Tensor, cache: FeatureCache): Tensor {
  const prev = cache.peek();
  if (prev === 'Rep') throw new Error('AutoencoderKLWan: feature cache out of step (a conv slot holds an upsampler marker)');
  const next = nextCacheFrames(x, prev);
  const out = conv.forward(x, prev);
  cache.store(next);
  return out;
}

/** nn.Conv2d applied to every frame of [B, C, T, H, W] (a conv3d with a 1 x k x k kernel). */
class FrameConv2d {
  private readonly weight: Tensor;
  private readonly bias: Tensor;

  constructor(
    w: ModelParams,
    name: string,
    inDim: number,
    readonly outDim: number,
    private readonly stride: number,
    /** [top, bottom, left, right] */
    private readonly padding: [number, number, number, number],
  ) {
    this.weight = w.matrix(`${name}.weight`, [outDim, inDim, 3, 3], [outDim, inDim, 1, 3, 3]);
    this.bias = w.vector(`${name}.bias`, [outDim]);
  }

  forward(x: Tensor): Tensor {
    return conv3d(x, this.weight, this.bias, { stride: [1, this.stride, this.stride], padding: [0, 0, ...this.padding] });
  }
}

/** WanRMS_norm: F.normalize over channels * sqrt(C) * gamma (no bias in this VAE), optionally followed by SiLU. */
class WanRmsNorm {
  private readonly gamma: Tensor;
  private readonly scale: number;

  /** images: gamma stored [C, 1, 1] (2-D attention input) rather than [C, 1, 1, 1] */
  constructor(w: ModelParams, name: string, dim: number, images = false) {
    this.gamma = w.vector(`${name}.gamma`, images ? [dim, 1, 1] : [dim, 1, 1, 1], [dim]);
    this.scale = Math.sqrt(dim);
  }

  forward(x: Tensor, activation: 'none' | 'silu' = 'none'): Tensor {
    return normalizeChannels(x, this.gamma, null, { scale: this.scale, activation });
  }
}

// ---------------------------------------------------------------------------------------
// Blocks

interface CachedLayer {
  forward(x: Tensor, cache: FeatureCache): Tensor;
}

/** WanResidualBlock: RMS norm, SiLU, causal 3x3x3 conv, twice, plus a (1x1x1 conv) shortcut. */
class WanResidualBlock implements CachedLayer {
  private readonly norm1: WanRmsNorm;
  private readonly conv1: WanCausalConv3d;
  private readonly norm2: WanRmsNorm;
  private readonly conv2: WanCausalConv3d;
  private readonly convShortcut: WanCausalConv3d | null;

  constructor(w: ModelParams, name: string, inDim: number, outDim: number) {
    this.norm1 = new WanRmsNorm(w, `${name}.norm1`, inDim);
    this.conv1 = new WanCausalConv3d(w, `${name}.conv1`, inDim, outDim, [3, 3, 3], [1, 1, 1], [1, 1, 1]);
    this.norm2 = new WanRmsNorm(w, `${name}.norm2`, outDim);
    this.conv2 = new WanCausalConv3d(w, `${name}.conv2`, outDim, outDim, [3, 3, 3], [1, 1, 1], [1, 1, 1]);
    this.convShortcut = inDim !== outDim ? new WanCausalConv3d(w, `${name}.conv_shortcut`, inDim, outDim, [1, 1, 1]) : null;
  }

  forward(x: Tensor, cache: FeatureCache): Tensor {
    return scope(() => {
      const h = this.convShortcut ? this.convShortcut.forward(x) : x;
      const y = chain(
        x,
        (t) => this.norm1.forward(t, 'silu'),
        (t) => cachedConv(this.conv1, t, cache),
        (t) => this.norm2.forward(t, 'silu'),
        (t) => cachedConv(this.conv2, t, cache),
      );
      return add(y, h);
    });
  }
}

/** WanAttentionBlock: single-head self-attention within each frame, with a 1x1 qkv projection. */
class WanAttentionBlock {
  private readonly norm: WanRmsNorm;
  private readonly qkvWeight: Tensor;
  private readonly qkvBias: Tensor;
  private readonly projWeight: Tensor;
  private readonly projBias: Tensor;

  constructor(
    w: ModelParams,
    name: string,
    private readonly dim: number,
  ) {
    this.norm = new WanRmsNorm(w, `${name}.norm`, dim, true);
    this.qkvWeight = w.matrix(`${name}.to_qkv.weight`, [3 * dim, dim, 1, 1], [3 * dim, dim]);
    this.qkvBias = w.vector(`${name}.to_qkv.bias`, [3 * dim]);
    this.projWeight = w.matrix(`${name}.proj.weight`, [dim, dim, 1, 1], [dim, dim]);
    this.projBias = w.vector(`${name}.proj.bias`, [dim]);
  }

  forward(x: Tensor): Tensor {
    return scope(() => {
      const [b, c, t, h, w] = x.shape as [number, number, number, number, number];
      // tokens of every frame, channels last: [B*T, H*W, C]
      const tokens = this.norm.forward(x).permute(0, 2, 3, 4, 1).contiguous().reshape(b * t, h * w, c);
      const qkv = linear(tokens, this.qkvWeight, this.qkvBias); // [B*T, H*W, 3C]
      const [q, k, v] = [0, 1, 2].map((i) => qkv.slice(2, i * c, (i + 1) * c).unsqueeze(1)) as [Tensor, Tensor, Tensor];
      const attended = attention(q, k, v).transpose(1, 2).reshape(b * t, h * w, c);
      const projected = linear(attended, this.projWeight, this.projBias);
      return add(x, projected.reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3));
    });
  }
}

type ResampleMode = 'upsample2d' | 'upsample3d' | 'downsample2d' | 'downsample3d';

/**
 * WanResample: 2x spatial nearest-exact upsampling + 3x3 conv (halving the channels), or ZeroPad2d
 * (0, 1, 0, 1) + stride-2 3x3 conv; the 3d modes also double (time_conv to 2C channels, interleaved
 * into frames) or halve (stride-2 causal time_conv) the frame count, from the second chunk on.
 */
class WanResample implements CachedLayer {
  private readonly conv: FrameConv2d;
  private readonly timeConv: WanCausalConv3d | null = null;

  constructor(
    w: ModelParams,
    name: string,
    dim: number,
    private readonly mode: ResampleMode,
  ) {
    if (mode === 'upsample2d' || mode === 'upsample3d') {
      this.conv = new FrameConv2d(w, `${name}.resample.1`, dim, dim / 2, 1, [1, 1, 1, 1]);
      if (mode === 'upsample3d')
        this.timeConv = new WanCausalConv3d(w, `${name}.time_conv`, dim, dim * 2, [3, 1, 1], [1, 1, 1], [1, 0, 0]);
    } else {
      this.conv = new FrameConv2d(w, `${name}.resample.1`, dim, dim, 2, [0, 1, 0, 1]);
      if (mode === 'downsample3d') this.timeConv = new WanCausalConv3d(w, `${name}.time_conv`, dim, dim, [3, 1, 1], [2, 1, 1]);
    }
  }

  forward(x: Tensor, cache: FeatureCache): Tensor {
    return scope(() => {
      if (this.mode === 'downsample2d') return this.conv.forward(x);
      if (this.mode === 'downsample3d') return chain(x, (t) => this.conv.forward(t), (t) => this.downsampleTime(t, cache));
      const y = this.mode === 'upsample3d' ? this.upsampleTime(x, cache) : x;
      return this.upsampleSpace(y);
    });
  }

  /** Doubles the frames: time_conv gives 2C channels; channels [0, C) become frame 2i, [C, 2C) frame 2i + 1. */
  private upsampleTime(x: Tensor, cache: FeatureCache): Tensor {
    const prev = cache.peek();
    if (prev === undefined) {
      cache.store('Rep');
      return x;
    }
    const next = nextCacheFrames(x, prev);
    const doubled = prev === 'Rep' ? this.timeConv!.forward(x) : this.timeConv!.forward(x, prev);
    cache.store(next);
    const [b, c2, t, h, w] = doubled.shape as [number, number, number, number, number];
    const c = c2 / 2;
    return doubled.reshape(b, 2, c, t, h * w).permute(0, 2, 3, 1, 4).reshape(b, c, 2 * t, h, w);
  }

  /** Halves the frames with the stride-2 time_conv over [last frame of the previous chunk, x]. */
  private downsampleTime(x: Tensor, cache: FeatureCache): Tensor {
    const prev = cache.peek();
    const t = x.size(2);
    const last = x.slice(2, t - 1, t).clone();
    if (prev === undefined) {
      // the first chunk passes through; diffusers caches all of x, of which only the last frame is read
      cache.store(last);
      return x;
    }
    if (prev === 'Rep') throw new Error('AutoencoderKLWan: feature cache out of step (a downsampler slot holds an upsampler marker)');
    const out = this.timeConv!.forward(concat([prev, x], 2));
    cache.store(last);
    return out;
  }

  /** Nearest-exact 2x upsampling of every frame, then the 3x3 conv; one frame at a time to bound the peak. */
  private upsampleSpace(x: Tensor): Tensor {
    const [b, c, t, h, w] = x.shape as [number, number, number, number, number];
    const upsampled = (frame: Tensor) =>
      this.conv.forward(upsampleNearest(frame.reshape(b, c, h, w), [2 * h, 2 * w], true).reshape(b, c, 1, 2 * h, 2 * w));
    if (t === 1) return upsampled(x);
    const out = empty([b, this.conv.outDim, t, 2 * h, 2 * w], { device: x.device });
    for (let f = 0; f < t; ++f) scope(() => void out.slice(2, f, f + 1).copy_(upsampled(x.slice(2, f, f + 1))));
    return out;
  }
}

/** WanMidBlock: residual block, attention, residual block. */
class WanMidBlock implements CachedLayer {
  private readonly resnets: [WanResidualBlock, WanResidualBlock];
  private readonly attention: WanAttentionBlock;

  constructor(w: ModelParams, name: string, dim: number) {
    this.resnets = [new WanResidualBlock(w, `${name}.resnets.0`, dim, dim), new WanResidualBlock(w, `${name}.resnets.1`, dim, dim)];
    this.attention = new WanAttentionBlock(w, `${name}.attentions.0`, dim);
  }

  forward(x: Tensor, cache: FeatureCache): Tensor {
    return chain(
      x,
      (t) => this.resnets[0].forward(t, cache),
      (t) => this.attention.forward(t),
      (t) => this.resnets[1].forward(t, cache),
    );
  }
}

/** WanUpBlock: num_res_blocks + 1 residual blocks, then an optional upsampler. */
class WanUpBlock implements CachedLayer {
  private readonly layers: CachedLayer[] = [];

  constructor(w: ModelParams, name: string, inDim: number, outDim: number, numResBlocks: number, upsample: ResampleMode | null) {
    for (let i = 0; i <= numResBlocks; ++i) this.layers.push(new WanResidualBlock(w, `${name}.resnets.${i}`, i === 0 ? inDim : outDim, outDim));
    if (upsample) this.layers.push(new WanResample(w, `${name}.upsamplers.0`, outDim, upsample));
  }

  forward(x: Tensor, cache: FeatureCache): Tensor {
    return chain(x, ...this.layers.map((l) => (t: Tensor) => l.forward(t, cache)));
  }
}

/** WanEncoder3d: conv_in, residual blocks with spatial/temporal downsamplers, mid block, head. */
class WanEncoder3d implements CachedLayer {
  private readonly convIn: WanCausalConv3d;
  private readonly downBlocks: CachedLayer[] = [];
  private readonly midBlock: WanMidBlock;
  private readonly normOut: WanRmsNorm;
  private readonly convOut: WanCausalConv3d;

  constructor(w: ModelParams, cfg: AutoencoderKLWanConfig) {
    const dim = cfg.base_dim;
    const dims = [1, ...cfg.dim_mult].map((u) => dim * u);
    this.convIn = new WanCausalConv3d(w, 'encoder.conv_in', cfg.in_channels, dims[0]!, [3, 3, 3], [1, 1, 1], [1, 1, 1]);
    const last = cfg.dim_mult.length - 1;
    for (let i = 0; i <= last; ++i) {
      let inDim = dims[i]!;
      const outDim = dims[i + 1]!;
      for (let r = 0; r < cfg.num_res_blocks; ++r) {
        this.downBlocks.push(new WanResidualBlock(w, `encoder.down_blocks.${this.downBlocks.length}`, inDim, outDim));
        inDim = outDim;
      }
      if (i !== last) {
        const mode = cfg.temperal_downsample[i] ? 'downsample3d' : 'downsample2d';
        this.downBlocks.push(new WanResample(w, `encoder.down_blocks.${this.downBlocks.length}`, outDim, mode));
      }
    }
    const top = dims[dims.length - 1]!;
    this.midBlock = new WanMidBlock(w, 'encoder.mid_block', top);
    this.normOut = new WanRmsNorm(w, 'encoder.norm_out', top);
    this.convOut = new WanCausalConv3d(w, 'encoder.conv_out', top, 2 * cfg.z_dim, [3, 3, 3], [1, 1, 1], [1, 1, 1]);
  }

  forward(x: Tensor, cache: FeatureCache): Tensor {
    return chain(
      x,
      (t) => cachedConv(this.convIn, t, cache),
      ...this.downBlocks.map((b) => (t: Tensor) => b.forward(t, cache)),
      (t) => this.midBlock.forward(t, cache),
      (t) => this.normOut.forward(t, 'silu'),
      (t) => cachedConv(this.convOut, t, cache),
    );
  }
}

/** WanDecoder3d: conv_in, mid block, up blocks (temporal upsampling first), head. */
class WanDecoder3d implements CachedLayer {
  private readonly convIn: WanCausalConv3d;
  private readonly midBlock: WanMidBlock;
  private readonly upBlocks: WanUpBlock[] = [];
  private readonly normOut: WanRmsNorm;
  private readonly convOut: WanCausalConv3d;
  /** frames produced per latent frame after the first */
  readonly temporalFactor: number;
  /** output pixels per latent pixel (per side) */
  readonly spatialFactor: number;

  constructor(w: ModelParams, cfg: AutoencoderKLWanConfig) {
    const dim = cfg.decoder_base_dim ?? cfg.base_dim;
    const mult = cfg.dim_mult;
    const dims = [mult[mult.length - 1]!, ...[...mult].reverse()].map((u) => dim * u);
    const temperalUpsample = [...cfg.temperal_downsample].reverse();
    this.convIn = new WanCausalConv3d(w, 'decoder.conv_in', cfg.z_dim, dims[0]!, [3, 3, 3], [1, 1, 1], [1, 1, 1]);
    this.midBlock = new WanMidBlock(w, 'decoder.mid_block', dims[0]!);
    let temporal = 1;
    let spatial = 1;
    for (let i = 0; i < mult.length; ++i) {
      // Wan2.1: every block after the first receives the halved channels of the upsampler before it
      const inDim = i > 0 ? dims[i]! / 2 : dims[i]!;
      const outDim = dims[i + 1]!;
      const up = i !== mult.length - 1;
      const mode: ResampleMode | null = up ? (temperalUpsample[i] ? 'upsample3d' : 'upsample2d') : null;
      if (mode === 'upsample3d') temporal *= 2;
      if (mode) spatial *= 2;
      this.upBlocks.push(new WanUpBlock(w, `decoder.up_blocks.${i}`, inDim, outDim, cfg.num_res_blocks, mode));
    }
    const outDim = dims[dims.length - 1]!;
    this.normOut = new WanRmsNorm(w, 'decoder.norm_out', outDim);
    this.convOut = new WanCausalConv3d(w, 'decoder.conv_out', outDim, cfg.out_channels, [3, 3, 3], [1, 1, 1], [1, 1, 1]);
    this.temporalFactor = temporal;
    this.spatialFactor = spatial;
  }

  forward(x: Tensor, cache: FeatureCache): Tensor {
    return chain(
      x,
      (t) => cachedConv(this.convIn, t, cache),
      (t) => this.midBlock.forward(t, cache),
      ...this.upBlocks.map((b) => (t: Tensor) => b.forward(t, cache)),
      (t) => this.normOut.forward(t, 'silu'),
      (t) => cachedConv(this.convOut, t, cache),
    );
  }
}

// ---------------------------------------------------------------------------------------
// The model

export interface WanVaeLoadOptions {
  device?: Device;
  /** dtype of the convolution weights (default: as stored); activations are float32 */
  dtype?: DType;
}

export interface WanVaeDecodeOptions {
  /** called after each latent frame is decoded (decoded: 1..total) */
  onFrame?: (decoded: number, total: number) => void;
}

/** Rejects configs that the Wan2.1 structure implemented here cannot represent. */
function checkSupported(cfg: AutoencoderKLWanConfig, file: string): void {
  const fail = (msg: string) => {
    throw new Error(`${file}: ${msg}`);
  };
  if (cfg.is_residual) fail('is_residual=true (the Wan2.2 VAE with residual up/down blocks) is not supported');
  if (cfg.patch_size !== null) fail(`patch_size=${cfg.patch_size} (the Wan2.2 VAE) is not supported`);
  if (cfg.attn_scales.length > 0) fail(`attn_scales=[${cfg.attn_scales}] is not supported (the reference encoder cannot run attention in its down blocks)`);
  if (cfg.temperal_downsample.length !== cfg.dim_mult.length - 1)
    fail(`temperal_downsample has ${cfg.temperal_downsample.length} entries; dim_mult=[${cfg.dim_mult}] needs ${cfg.dim_mult.length - 1}`);
  if (cfg.latents_mean.length !== cfg.z_dim || cfg.latents_std.length !== cfg.z_dim)
    fail(`latents_mean/latents_std must have z_dim=${cfg.z_dim} entries`);
  const decDim = cfg.decoder_base_dim ?? cfg.base_dim;
  for (const m of cfg.dim_mult.slice(1)) if ((decDim * m) % 2 !== 0) fail(`decoder channels ${decDim * m} must be even (the upsamplers halve them)`);
}

/** AutoencoderKLWan: encode videos to latent distributions, decode latents to videos in [-1, 1]. */
export class WanVae {
  readonly config: AutoencoderKLWanConfig;
  /** per-channel latent statistics: the pipeline un-normalises with z = latents * std + mean */
  readonly latentsMean: number[];
  readonly latentsStd: number[];
  readonly device: Device;
  private readonly encoder: WanEncoder3d;
  private readonly decoder: WanDecoder3d;
  private readonly quantConv: WanCausalConv3d;
  private readonly postQuantConv: WanCausalConv3d;
  private readonly weights: WeightSet;
  private readonly params: ModelParams;
  private disposed = false;

  private constructor(config: AutoencoderKLWanConfig, weights: WeightSet, opts: WanVaeLoadOptions, source: string) {
    checkSupported(config, source);
    this.config = config;
    this.latentsMean = [...config.latents_mean];
    this.latentsStd = [...config.latents_std];
    this.device = opts.device ?? 'cpu';
    this.weights = weights;
    const p = (this.params = new ModelParams('AutoencoderKLWan', weights, { device: this.device, dtype: opts.dtype }));
    try {
      const z = config.z_dim;
      this.encoder = new WanEncoder3d(p, config);
      this.quantConv = new WanCausalConv3d(p, 'quant_conv', 2 * z, 2 * z, [1, 1, 1]);
      this.postQuantConv = new WanCausalConv3d(p, 'post_quant_conv', z, z, [1, 1, 1]);
      this.decoder = new WanDecoder3d(p, config);
      p.checkAllUsed();
    } catch (err) {
      p.dispose();
      throw err;
    }
  }

  /** Loads a diffusers `vae` folder (config.json + safetensors), memory-mapping the weights. */
  static load(dir: string, opts: WanVaeLoadOptions = {}): Promise<WanVae> {
    return loadFromFolder(dir, 'AutoencoderKLWan', (weights, config) => new WanVae(config, weights, opts, dir));
  }

  /** Frames of a video decoded from `latentFrames` latent frames: 1 + 4 (F - 1) for Wan2.1. */
  videoFrames(latentFrames: number): number {
    return 1 + (latentFrames - 1) * this.decoder.temporalFactor;
  }

  /**
   * Decodes un-normalised latents z [B, z_dim, F, h, w] to a video [B, 3, 1 + 4 (F - 1), 8h, 8w] clamped
   * to [-1, 1]: the first latent frame alone, then one latent frame at a time through the causal cache.
   */
  decode(z: Tensor, opts: WanVaeDecodeOptions = {}): Tensor {
    this.checkLive();
    const zDim = this.config.z_dim;
    if (z.ndim !== 5 || z.shape[1] !== zDim || z.shape.some((d) => d === 0))
      throw new Error(`WanVae.decode: latents must be [B, ${zDim}, F, h, w] with no empty dim, got [${z.shape}]`);
    this.checkDevice(z, 'decode');
    const [b, , f, h, w] = z.shape as [number, number, number, number, number];
    const s = this.decoder.spatialFactor;
    const out = empty([b, this.config.out_channels, this.videoFrames(f), h * s, w * s], { device: this.device });
    const cache = new FeatureCache();
    try {
      let at = 0;
      for (let i = 0; i < f; ++i) {
        cache.beginChunk();
        scope(() => {
          const latent = z.slice(2, i, i + 1).contiguous().to('float32');
          const frames = chain(latent, (t) => this.postQuantConv.forward(t), (t) => this.decoder.forward(t, cache));
          const n = frames.size(2);
          out.slice(2, at, at + n).copy_(clamp(frames, -1, 1));
          at += n;
        });
        opts.onFrame?.(i + 1, f);
      }
    } catch (err) {
      out.dispose();
      throw err;
    } finally {
      cache.dispose();
    }
    return out;
  }

  /**
   * Encodes a video [B, 3, T, H, W] in [-1, 1] to the latent distribution [B, z_dim, 1 + (T - 1) / 4, H/8, W/8]
   * (mean and logvar clamped to [-30, 20]): the first frame alone, then 4-frame chunks (trailing frames that
   * do not fill a chunk are dropped, as in diffusers).
   */
  encode(video: Tensor): { mean: Tensor; logvar: Tensor } {
    this.checkLive();
    const inC = this.config.in_channels;
    if (video.ndim !== 5 || video.shape[1] !== inC || video.shape.some((d) => d === 0))
      throw new Error(`WanVae.encode: video must be [B, ${inC}, T, H, W] with no empty dim, got [${video.shape}]`);
    this.checkDevice(video, 'encode');
    const frames = video.size(2);
    const chunks = 1 + Math.floor((frames - 1) / 4);
    const cache = new FeatureCache();
    try {
      return scope(() => {
        const parts: Tensor[] = [];
        for (let i = 0; i < chunks; ++i) {
          cache.beginChunk();
          const [from, to] = i === 0 ? [0, 1] : [1 + 4 * (i - 1), 1 + 4 * i];
          parts.push(scope(() => this.encoder.forward(video.slice(2, from, to).contiguous().to('float32'), cache)));
        }
        const enc = this.quantConv.forward(concat(parts, 2));
        const z = this.config.z_dim;
        return { mean: enc.slice(1, 0, z).clone(), logvar: clamp(enc.slice(1, z, 2 * z), -30, 20) };
      });
    } finally {
      cache.dispose();
    }
  }

  /**
   * Latents as the Wan pipelines normalise them, (x - latents_mean) * (1 / latents_std) per channel;
   * x [B, z_dim, F, h, w] (e.g. the encoded mean).
   */
  normalizeLatents(x: Tensor): Tensor {
    return scope(() => {
      const [mean, invStd] = this.latentStats(x, 'normalizeLatents');
      return mul(sub(x, mean), invStd);
    });
  }

  /** The inverse, as the pipelines compute it before decoding: x / (1 / latents_std) + latents_mean. */
  denormalizeLatents(x: Tensor): Tensor {
    return scope(() => {
      const [mean, invStd] = this.latentStats(x, 'denormalizeLatents');
      return add(div(x, invStd), mean);
    });
  }

  /** latents_mean and 1 / latents_std as float32 [1, z_dim, 1, 1, 1] on the VAE's device. */
  private latentStats(x: Tensor, op: string): [Tensor, Tensor] {
    const z = this.config.z_dim;
    if (x.ndim !== 5 || x.shape[1] !== z) throw new Error(`WanVae.${op}: latents must be [B, ${z}, F, h, w], got [${x.shape}]`);
    this.checkDevice(x, op);
    const shape = [1, z, 1, 1, 1];
    const invStd = Float32Array.from(this.latentsStd, (s) => Math.fround(1 / Math.fround(s)));
    return [tensor(this.latentsMean, shape).toDevice(this.device), tensor(invStd, shape).toDevice(this.device)];
  }

  /** Releases the weights (memory-mapped files and converted copies). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.params.dispose();
    this.weights.dispose();
  }

  private checkLive(): void {
    if (this.disposed) throw new Error('WanVae has been disposed');
  }

  private checkDevice(x: Tensor, op: string): void {
    if (x.device !== this.device) throw new Error(`WanVae.${op}: input is on ${x.device}, the VAE on ${this.device}`);
  }
}
