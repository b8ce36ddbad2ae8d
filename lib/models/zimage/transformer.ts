// ZImageTransformer2DModel (diffusers transformer_z_image.py): the single-stream DiT of Z-Image.
// Each latent image [C, F, H, W] is cut into pF x p x p patches and embedded, each caption embedding
// (Qwen3 hidden states) is RMS-normed and projected; both are padded to a multiple of 32 tokens with
// learned pad tokens. Image tokens run through "noise refiner" blocks (timestep-modulated), caption
// tokens through "context refiner" blocks (unmodulated); then each item's [image, caption] sequence
// runs through the main blocks, and a modulated final layer projects the image tokens back to patches.
// Every block: RMS-normed self-attention (per-head q/k RMS norm, 3-axis complex RoPE) and a SwiGLU
// feed-forward, each sandwiched between two RMS norms and gated by tanh(gate) under modulation.
// Items of a batch may differ in caption length (CFG runs the prompt and the negative prompt
// together): sequences are padded to the longest and keys past each item's length are masked.
import { add, affine, concat, mul, pad, stack, tanh, silu } from '../../engine/ops/basic.js';
import { attention, linear } from '../../engine/ops/linalg.js';
import { layerNorm, rmsNorm, rope } from '../../engine/ops/nn.js';
import { type Device, scope, type Tensor, tensor } from '../../engine/tensor.js';
import type { ZImageTransformer2DConfig } from '../../io/configs.js';
import type { WeightSet } from '../../io/weights.js';
import { byTokenSlices, chunkTokensOption, ropeFrequencies, timestepFrequencies, timestepSinusoid } from '../common.js';
import { loadFromFolder } from '../component-config.js';
import { CheckpointModel, ModelParams, type ParamOptions, type WeightSource } from '../weights.js';
import { ZIMAGE_TIMESTEP_FREQ_DIM, ZIMAGE_TIMESTEP_MLP_DIM, zimageAdalnDim, zimageFfnDim } from './layout.js';

const NAME = 'ZImageTransformer2DModel';
/** Every image and caption sequence is padded to a multiple of this many tokens (SEQ_MULTI_OF). */
export const ZIMAGE_SEQ_MULTIPLE = 32;
/** eps of the per-head q/k RMS norms (the Attention module's fixed eps) */
const QK_NORM_EPS = 1e-5;
/** eps of the final layer's LayerNorm */
const FINAL_NORM_EPS = 1e-6;

function checkSupported(c: ZImageTransformer2DConfig): void {
  const fail = (msg: string) => {
    throw new Error(`${NAME}: ${msg}`);
  };
  if (c.siglip_feat_dim !== null) fail('siglip_feat_dim is set: the Omni variant (SigLIP image conditioning) is not supported');
  if (c.all_patch_size.length !== c.all_f_patch_size.length) fail('all_patch_size and all_f_patch_size must have the same length');
  if (c.dim % c.n_heads !== 0) fail(`dim ${c.dim} is not a multiple of n_heads ${c.n_heads}`);
  const headDim = c.dim / c.n_heads;
  if (c.axes_dims.length !== c.axes_lens.length) fail('axes_dims and axes_lens must have the same length');
  if (c.axes_dims.length !== 3) fail(`axes_dims must have 3 entries (frame, row, column), got ${c.axes_dims.length}`);
  const sum = c.axes_dims.reduce((a, b) => a + b, 0);
  if (sum !== headDim) fail(`axes_dims [${c.axes_dims}] must add up to the head dim ${headDim}`);
  if (c.axes_dims.some((d) => d % 2 !== 0)) fail(`axes_dims [${c.axes_dims}] must be even`);
}

interface Linear {
  weight: Tensor;
  bias: Tensor | null;
}

interface ZImageBlock {
  toQ: Tensor;
  toK: Tensor;
  toV: Tensor;
  toOut: Tensor;
  normQ: Tensor | null;
  normK: Tensor | null;
  w1: Tensor;
  w2: Tensor;
  w3: Tensor;
  attentionNorm1: Tensor;
  attentionNorm2: Tensor;
  ffnNorm1: Tensor;
  ffnNorm2: Tensor;
  /** [4 dim, adaln] -> scale_msa, gate_msa, scale_mlp, gate_mlp; null in the context refiner */
  adaLN: Linear | null;
}

interface PatchHead {
  embedder: Linear;
  finalLinear: Linear;
  finalAdaLN: Linear;
}

/** One batch item's token layout. */
interface ItemLayout {
  /** latent size F, H, W */
  size: [number, number, number];
  /** patch grid F/pF, H/p, W/p */
  grid: [number, number, number];
  /** image tokens before / after padding to the multiple */
  imageTokens: number;
  imagePadded: number;
  captionTokens: number;
  captionPadded: number;
}

/** Rotary tables (cos, sin) [B, L, head_dim / 2] of a batch of position-id lists. */
interface Rotary {
  cos: Tensor;
  sin: Tensor;
}

/** Default token count above which the feed-forward runs in slices of this many tokens. */
const FFN_CHUNK_TOKENS = 8192;

export interface ZImageTransformerLoadOptions extends ParamOptions {
  /**
   * The feed-forward (a per-token map) runs over slices of this many tokens, which bounds its
   * [tokens, ffn_dim] hidden buffers (1.3 GB each for a CFG batch at 2048x2048 in one piece); default 8192.
   */
  ffnChunkTokens?: number;
}

export class ZImageTransformer2DModel extends CheckpointModel {
  readonly config: ZImageTransformer2DConfig;
  readonly headDim: number;
  private readonly ffnChunkTokens: number;
  private readonly heads = new Map<string, PatchHead>();
  private readonly xPadToken: Tensor;
  private readonly capPadToken: Tensor;
  private readonly tMlp1: Linear;
  private readonly tMlp2: Linear;
  private readonly capNorm: Tensor;
  private readonly capLinear: Linear;
  private readonly noiseRefiner: ZImageBlock[] = [];
  private readonly contextRefiner: ZImageBlock[] = [];
  private readonly layers: ZImageBlock[] = [];
  /** frequencies of the sinusoidal timestep embedding, float32 [1, 128] */
  private readonly timestepFreqs: Tensor;
  /** per axis: the RoPE frequencies theta^(-2i/d), float64 as in the reference */
  private readonly axisFreqs: Float64Array[];

  /** Builds the model over weights (owned and disposed by the model when `owns` is given). */
  constructor(weights: WeightSource, config: ZImageTransformer2DConfig, opts: ZImageTransformerLoadOptions = {}, owns: WeightSet | null = null) {
    super(new ModelParams(NAME, weights, opts), owns);
    checkSupported(config);
    this.config = config;
    this.ffnChunkTokens = chunkTokensOption(NAME, opts.ffnChunkTokens, FFN_CHUNK_TOKENS);
    const c = config;
    const dim = c.dim;
    const hd = (this.headDim = dim / c.n_heads);
    const adaln = zimageAdalnDim(c);
    const ffn = zimageFfnDim(c);
    const p = this.params;
    const lin = (name: string, outF: number, inF: number, bias = true): Linear => ({
      weight: p.matrix(`${name}.weight`, [outF, inF]),
      bias: bias ? p.vector(`${name}.bias`, [outF]) : null,
    });
    this.xPadToken = p.vector('x_pad_token', [1, dim]);
    this.capPadToken = p.vector('cap_pad_token', [1, dim]);
    c.all_patch_size.forEach((ps, i) => {
      const fs = c.all_f_patch_size[i] as number;
      const key = `${ps}-${fs}`;
      const patchDim = fs * ps * ps * c.in_channels;
      this.heads.set(key, {
        embedder: lin(`all_x_embedder.${key}`, dim, patchDim),
        finalLinear: lin(`all_final_layer.${key}.linear`, patchDim, dim),
        finalAdaLN: lin(`all_final_layer.${key}.adaLN_modulation.1`, dim, adaln),
      });
    });
    const block = (prefix: string, modulation: boolean): ZImageBlock => ({
      toQ: p.matrix(`${prefix}.attention.to_q.weight`, [dim, dim]),
      toK: p.matrix(`${prefix}.attention.to_k.weight`, [dim, dim]),
      toV: p.matrix(`${prefix}.attention.to_v.weight`, [dim, dim]),
      toOut: p.matrix(`${prefix}.attention.to_out.0.weight`, [dim, dim]),
      normQ: c.qk_norm ? p.vector(`${prefix}.attention.norm_q.weight`, [hd]) : null,
      normK: c.qk_norm ? p.vector(`${prefix}.attention.norm_k.weight`, [hd]) : null,
      w1: p.matrix(`${prefix}.feed_forward.w1.weight`, [ffn, dim]),
      w2: p.matrix(`${prefix}.feed_forward.w2.weight`, [dim, ffn]),
      w3: p.matrix(`${prefix}.feed_forward.w3.weight`, [ffn, dim]),
      attentionNorm1: p.vector(`${prefix}.attention_norm1.weight`, [dim]),
      attentionNorm2: p.vector(`${prefix}.attention_norm2.weight`, [dim]),
      ffnNorm1: p.vector(`${prefix}.ffn_norm1.weight`, [dim]),
      ffnNorm2: p.vector(`${prefix}.ffn_norm2.weight`, [dim]),
      adaLN: modulation ? lin(`${prefix}.adaLN_modulation.0`, 4 * dim, adaln) : null,
    });
    for (let i = 0; i < c.n_refiner_layers; ++i) this.noiseRefiner.push(block(`noise_refiner.${i}`, true));
    for (let i = 0; i < c.n_refiner_layers; ++i) this.contextRefiner.push(block(`context_refiner.${i}`, false));
    this.tMlp1 = lin('t_embedder.mlp.0', ZIMAGE_TIMESTEP_MLP_DIM, ZIMAGE_TIMESTEP_FREQ_DIM);
    this.tMlp2 = lin('t_embedder.mlp.2', adaln, ZIMAGE_TIMESTEP_MLP_DIM);
    this.capNorm = p.vector('cap_embedder.0.weight', [c.cap_feat_dim]);
    this.capLinear = lin('cap_embedder.1', dim, c.cap_feat_dim);
    for (let i = 0; i < c.n_layers; ++i) this.layers.push(block(`layers.${i}`, true));
    p.checkAllUsed();

    // TimestepEmbedder.timestep_embedding
    this.timestepFreqs = timestepFrequencies(ZIMAGE_TIMESTEP_FREQ_DIM, p.device);
    // RopeEmbedder.precompute_freqs_cis: 1 / theta^(arange(0, d, 2) / d) in float64
    this.axisFreqs = c.axes_dims.map((d) => ropeFrequencies(d, c.rope_theta));
  }

  /** Loads a diffusers `transformer` folder (config.json + sharded safetensors, memory-mapped). */
  static load(dir: string, opts: ZImageTransformerLoadOptions = {}): Promise<ZImageTransformer2DModel> {
    return loadFromFolder(dir, NAME, (weights, config) => new ZImageTransformer2DModel(weights, config, opts, weights));
  }

  get inChannels(): number {
    return this.config.in_channels;
  }

  /** dtype the large matrices are stored (or were converted) in */
  get weightDtype(): string {
    return (this.layers[0] ?? this.noiseRefiner[0])?.toQ.dtype ?? this.capLinear.weight.dtype;
  }

  /** t_embedder(t * t_scale): sinusoidal embedding (cos, sin) -> Linear -> SiLU -> Linear, [B, adaln]. */
  private timestepEmbedding(t: Tensor): Tensor {
    const freq = timestepSinusoid(mul(t.to('float32'), this.config.t_scale), this.timestepFreqs);
    return linear(linear(freq, this.tMlp1.weight, this.tMlp1.bias, 'silu'), this.tMlp2.weight, this.tMlp2.bias);
  }

  /**
   * cos/sin tables [B, L, head_dim / 2] for per-item lists of (frame, row, column) position ids:
   * each axis contributes the angles position * freq (float64, rounded to float32 as the reference's
   * .float() does) for its share of the head's pairs. Rows past an item's length stay zero.
   */
  private rotaryTables(positions: Int32Array[], length: number, device: Device): Rotary {
    const half = this.headDim / 2;
    const c = new Float32Array(positions.length * length * half);
    const s = new Float32Array(positions.length * length * half);
    positions.forEach((ids, b) => {
      const tokens = ids.length / 3;
      for (let tok = 0; tok < tokens; ++tok) {
        let at = (b * length + tok) * half;
        for (let axis = 0; axis < 3; ++axis) {
          const pos = ids[tok * 3 + axis] as number;
          for (const freq of this.axisFreqs[axis] as Float64Array) {
            const angle = Math.fround(pos * freq);
            c[at] = Math.cos(angle);
            s[at] = Math.sin(angle);
            ++at;
          }
        }
      }
    });
    const shape = [positions.length, length, half];
    return { cos: tensor(c, shape, { device }), sin: tensor(s, shape, { device }) };
  }

  private attention(block: ZImageBlock, x: Tensor, rotary: Rotary, kvLens: Tensor | null): Tensor {
    const [b, l] = x.shape as [number, number];
    const h = this.config.n_heads;
    const hd = this.headDim;
    const heads = (t: Tensor, norm: Tensor | null) => {
      const split = t.view(b, l, h, hd);
      return rope(norm ? rmsNorm(split, norm, QK_NORM_EPS) : split, rotary.cos, rotary.sin, true).permute(0, 2, 1, 3);
    };
    const q = heads(linear(x, block.toQ), block.normQ);
    const k = heads(linear(x, block.toK), block.normK);
    const v = linear(x, block.toV).view(b, l, h, hd).permute(0, 2, 1, 3);
    const out = attention(q, k, v, { kvLens });
    return linear(out.transpose(1, 2).reshape(b, l, h * hd), block.toOut);
  }

  private feedForward(block: ZImageBlock, x: Tensor): Tensor {
    return byTokenSlices(x, this.ffnChunkTokens, (part) => linear(mul(linear(part, block.w1, null, 'silu'), linear(part, block.w3)), block.w2));
  }

  /**
   * ZImageTransformerBlock.forward: with modulation (adaln [B, adaln_dim]), scale = 1 + s and
   * gate = tanh(g) from one linear of the timestep embedding; without it, plain residuals.
   */
  private block(block: ZImageBlock, x: Tensor, rotary: Rotary, kvLens: Tensor | null, adaln: Tensor | null): Tensor {
    const eps = this.config.norm_eps;
    const norm = (t: Tensor, w: Tensor) => rmsNorm(t, w, eps);
    if (block.adaLN && adaln) {
      const mod = linear(adaln, block.adaLN.weight, block.adaLN.bias).unsqueeze(1);
      const [scaleMsa, gateMsa, scaleMlp, gateMlp] = mod.chunk(4, 2) as [Tensor, Tensor, Tensor, Tensor];
      const attnOut = this.attention(block, mul(norm(x, block.attentionNorm1), affine(scaleMsa, 1, 1)), rotary, kvLens);
      const h = add(x, mul(tanh(gateMsa), norm(attnOut, block.attentionNorm2)));
      const ff = this.feedForward(block, mul(norm(h, block.ffnNorm1), affine(scaleMlp, 1, 1)));
      return add(h, mul(tanh(gateMlp), norm(ff, block.ffnNorm2)));
    }
    const h = add(x, norm(this.attention(block, norm(x, block.attentionNorm1), rotary, kvLens), block.attentionNorm2));
    return add(h, norm(this.feedForward(block, norm(h, block.ffnNorm1)), block.ffnNorm2));
  }

  /**
   * Items of different lengths as one batch [B, max, dim] (zero rows after each item) and the key
   * lengths of the attention mask (null when all items are as long as the batch).
   */
  private static batch(items: Tensor[], device: Device): { x: Tensor; kvLens: Tensor | null } {
    const lens = items.map((t) => t.size(0));
    const longest = Math.max(...lens);
    const x = stack(items.map((t) => (t.size(0) === longest ? t : pad(t, [0, 0, 0, longest - t.size(0)]))), 0);
    const kvLens = lens.every((n) => n === longest) ? null : tensor(Int32Array.from(lens), [lens.length], { dtype: 'int32', device });
    return { x, kvLens };
  }

  /** [n, dim] rows followed by `extra` copies of a pad token. */
  private static withPadTokens(rows: Tensor, padToken: Tensor, extra: number): Tensor {
    return extra === 0 ? rows : concat([rows, padToken.expand(extra, padToken.size(1))], 0);
  }

  /**
   * The denoiser forward (ZImageTransformer2DModel.forward, basic mode): latents x[i] [C, F, H, W],
   * t [B] in [0, 1] (the pipeline's (1000 - timestep) / 1000; multiplied by t_scale here) and caption
   * embeddings capFeats[i] [L_i, cap_feat_dim] -> the model output per item, [C, F, H, W].
   */
  forward(x: Tensor[], t: Tensor, capFeats: Tensor[], patchSize = 2, fPatchSize = 1): Tensor[] {
    const c = this.config;
    const head = this.heads.get(`${patchSize}-${fPatchSize}`);
    if (!head) throw new RangeError(`${NAME}: patch size ${patchSize}-${fPatchSize} is not one of the model's (${[...this.heads.keys()].join(', ')})`);
    const b = x.length;
    if (b === 0) throw new RangeError(`${NAME}: no input latents`);
    if (capFeats.length !== b) throw new RangeError(`${NAME}: ${b} latents but ${capFeats.length} caption embeddings`);
    if (t.numel !== b) throw new RangeError(`${NAME}: t must have ${b} values (one per item), got [${t.shape}]`);
    const device = x[0]!.device;
    const layouts = x.map((img, i) => this.itemLayout(img, capFeats[i]!, patchSize, fPatchSize, i));

    return scope(() => {
      const adaln = this.timestepEmbedding(t);

      // image tokens: patchify, embed, pad with x_pad_token, noise refiner
      const patches = x.map((img, i) => {
        const ch = img.size(0);
        const [ft, ht, wt] = layouts[i]!.grid;
        return img
          .reshape(ch, ft, fPatchSize, ht, patchSize, wt, patchSize)
          .permute(1, 3, 5, 2, 4, 6, 0)
          .reshape(ft * ht * wt, fPatchSize * patchSize * patchSize * ch);
      });
      const embedded = linear(concat(patches, 0), head.embedder.weight, head.embedder.bias);
      const imageItems = embedded
        .split(layouts.map((l) => l.imageTokens), 0)
        .map((rows, i) => ZImageTransformer2DModel.withPadTokens(rows, this.xPadToken, layouts[i]!.imagePadded - layouts[i]!.imageTokens));
      const imagePositions = layouts.map((l) => imagePositionIds(l));
      const imageBatch = ZImageTransformer2DModel.batch(imageItems, device);
      const imageRotary = this.rotaryTables(imagePositions, imageBatch.x.size(1), device);
      let img = imageBatch.x;
      for (const block of this.noiseRefiner) img = scope(() => this.block(block, img, imageRotary, imageBatch.kvLens, adaln));

      // caption tokens: RMS norm + linear, pad with cap_pad_token, context refiner
      const capEmbedded = linear(rmsNorm(concat(capFeats.map((cf) => cf.to('float32')), 0), this.capNorm, c.norm_eps), this.capLinear.weight, this.capLinear.bias);
      const capItems = capEmbedded
        .split(layouts.map((l) => l.captionTokens), 0)
        .map((rows, i) => ZImageTransformer2DModel.withPadTokens(rows, this.capPadToken, layouts[i]!.captionPadded - layouts[i]!.captionTokens));
      const capPositions = layouts.map((l) => captionPositionIds(l));
      const capBatch = ZImageTransformer2DModel.batch(capItems, device);
      const capRotary = this.rotaryTables(capPositions, capBatch.x.size(1), device);
      let cap = capBatch.x;
      for (const block of this.contextRefiner) cap = scope(() => this.block(block, cap, capRotary, capBatch.kvLens, null));

      // unified [image, caption] sequence per item through the main layers
      const unifiedItems = layouts.map((l, i) =>
        concat([img.select(0, i).slice(0, 0, l.imagePadded), cap.select(0, i).slice(0, 0, l.captionPadded)], 0),
      );
      const unifiedBatch = ZImageTransformer2DModel.batch(unifiedItems, device);
      const unifiedPositions = layouts.map((_, i) => concatIds(imagePositions[i]!, capPositions[i]!));
      const unifiedRotary = this.rotaryTables(unifiedPositions, unifiedBatch.x.size(1), device);
      let u = unifiedBatch.x;
      for (const block of this.layers) u = scope(() => this.block(block, u, unifiedRotary, unifiedBatch.kvLens, adaln));

      // final layer: LayerNorm (no affine) * (1 + Linear(SiLU(adaln))) -> Linear, then unpatchify
      const scale = affine(linear(silu(adaln), head.finalAdaLN.weight, head.finalAdaLN.bias), 1, 1).unsqueeze(1);
      const out = linear(mul(layerNorm(u, null, null, FINAL_NORM_EPS), scale), head.finalLinear.weight, head.finalLinear.bias);
      return layouts.map((l, i) => {
        const [f, h, w] = l.size;
        const [ft, ht, wt] = l.grid;
        return out
          .select(0, i)
          .slice(0, 0, l.imageTokens)
          .reshape(ft, ht, wt, fPatchSize, patchSize, patchSize, c.in_channels)
          .permute(6, 0, 3, 1, 4, 2, 5)
          .reshape(c.in_channels, f, h, w);
      });
    });
  }

  private itemLayout(img: Tensor, capFeat: Tensor, p: number, pf: number, i: number): ItemLayout {
    const c = this.config;
    if (img.ndim !== 4 || img.size(0) !== c.in_channels)
      throw new RangeError(`${NAME}: latents ${i} must be [${c.in_channels}, F, H, W], got [${img.shape}]`);
    const [, f, h, w] = img.shape as [number, number, number, number];
    if (f % pf || h % p || w % p) throw new RangeError(`${NAME}: latents ${i} of size ${f}x${h}x${w} are not a multiple of the patch ${pf}x${p}x${p}`);
    if (capFeat.ndim !== 2 || capFeat.size(1) !== c.cap_feat_dim)
      throw new RangeError(`${NAME}: caption embedding ${i} must be [L, ${c.cap_feat_dim}], got [${capFeat.shape}]`);
    if (capFeat.size(0) === 0) throw new RangeError(`${NAME}: caption embedding ${i} is empty`);
    const grid: [number, number, number] = [f / pf, h / p, w / p];
    const imageTokens = grid[0] * grid[1] * grid[2];
    const captionTokens = capFeat.size(0);
    const captionPadded = roundUp(captionTokens);
    // position ids must index the RoPE tables: frames start after the caption positions
    const [lenF, lenH, lenW] = c.axes_lens as [number, number, number];
    if (captionPadded + grid[0] >= lenF || grid[1] > lenH || grid[2] > lenW)
      throw new RangeError(
        `${NAME}: ${captionTokens} caption tokens and a ${grid[0]}x${grid[1]}x${grid[2]} patch grid exceed the rotary tables (axes_lens [${c.axes_lens}])`,
      );
    return { size: [f, h, w], grid, imageTokens, imagePadded: roundUp(imageTokens), captionTokens, captionPadded };
  }

  /** Frees the converted parameters, the frequency table and, when the model loaded them, the mapped weights. */
  override dispose(): void {
    super.dispose();
    this.timestepFreqs.dispose();
    this.layers.length = 0;
    this.noiseRefiner.length = 0;
    this.contextRefiner.length = 0;
  }
}

function roundUp(n: number): number {
  return Math.ceil(n / ZIMAGE_SEQ_MULTIPLE) * ZIMAGE_SEQ_MULTIPLE;
}

/**
 * Image position ids (patchify_and_embed): the patch grid (frame, row, column) with frames starting
 * at captionPadded + 1; the pad tokens after the image sit at (0, 0, 0).
 */
function imagePositionIds(l: ItemLayout): Int32Array {
  const ids = new Int32Array(l.imagePadded * 3);
  const [ft, ht, wt] = l.grid;
  let at = 0;
  for (let f = 0; f < ft; ++f)
    for (let h = 0; h < ht; ++h)
      for (let w = 0; w < wt; ++w) {
        ids[at++] = l.captionPadded + 1 + f;
        ids[at++] = h;
        ids[at++] = w;
      }
  return ids;
}

/** Caption position ids: (1 + j, 0, 0) for every token j of the padded caption, pad tokens included. */
function captionPositionIds(l: ItemLayout): Int32Array {
  const ids = new Int32Array(l.captionPadded * 3);
  for (let j = 0; j < l.captionPadded; ++j) ids[j * 3] = 1 + j;
  return ids;
}

function concatIds(a: Int32Array, b: Int32Array): Int32Array {
  const out = new Int32Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}
