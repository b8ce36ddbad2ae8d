// WanTransformer3DModel (diffusers transformer_wan.py): the Wan2.1 text-to-video DiT. Latent video
// [B, 16, F, H, W] is cut into 1x2x2 patches (a conv3d with kernel = stride = patch, computed as
// patchify + linear), run through blocks of self-attention with 3D rotary positions, cross-attention
// to the text and a GELU-tanh feed-forward, each modulated by the timestep (6-way shift/scale/gate),
// and projected back to patches.
import { add, affine, concat, mul, silu } from '../../engine/ops/basic.js';
import { attention, linear } from '../../engine/ops/linalg.js';
import { layerNorm, rmsNorm, rope } from '../../engine/ops/nn.js';
import { keep, scope, type Tensor, tensor } from '../../engine/tensor.js';
import type { SequenceParallel, SequenceShard } from '../../parallel/sequence.js';
import type { WanTransformer3DConfig } from '../../io/configs.js';
import type { WeightSet } from '../../io/weights.js';
import { byTokenSlices, chunkTokensOption, ropeFrequencies, timestepFrequencies, timestepSinusoid } from '../common.js';
import { loadFromFolder } from '../component-config.js';
import { CheckpointModel, ModelParams, type ParamOptions, type WeightSource } from '../weights.js';

const NAME = 'WanTransformer3DModel';

/** Rejects configs of Wan variants this text-to-video model does not implement. */
function checkSupported(c: WanTransformer3DConfig): void {
  const fail = (msg: string) => {
    throw new Error(`${NAME}: ${msg}`);
  };
  // image conditioning (Wan2.1 I2V / FLF2V) adds an image embedder and extra key/value projections
  if (c.image_dim !== null || c.added_kv_proj_dim !== null || c.pos_embed_seq_len !== null)
    fail('image conditioning (image_dim / added_kv_proj_dim / pos_embed_seq_len) is not supported: text-to-video only');
  if (c.attention_head_dim % 2 !== 0) fail(`attention_head_dim must be even for rotary embeddings, got ${c.attention_head_dim}`);
  if (c.freq_dim % 2 !== 0) fail(`freq_dim must be even, got ${c.freq_dim}`);
}

interface Linear {
  weight: Tensor;
  bias: Tensor | null;
}

interface WanAttention {
  toQ: Linear;
  toK: Linear;
  toV: Linear;
  toOut: Linear;
  /** RMS norms over the full inner dim (all heads), applied before splitting into heads */
  normQ: Tensor;
  normK: Tensor;
}

interface WanBlock {
  /** [1, 6, dim]: shift, scale, gate of self-attention, then of the feed-forward */
  scaleShiftTable: Tensor;
  attn1: WanAttention;
  attn2: WanAttention;
  /** cross-attention pre-norm (LayerNorm with affine), absent when cross_attn_norm is false */
  norm2: { weight: Tensor; bias: Tensor } | null;
  ffnIn: Linear;
  ffnOut: Linear;
}

/** Default token count above which the feed-forward runs in slices of this many tokens. */
const FFN_CHUNK_TOKENS = 8192;

/**
 * Per-axis rotary angle tables: the frequencies of get_1d_rotary_pos_embed(dim, max_len, 10000)
 * for the t, h and w parts of a head (t takes what 2 x (head_dim // 6) leaves for h and w).
 * Computed in float64 like the reference, stored as float32.
 */
function axisAngles(positions: number, dim: number): { cos: Float32Array; sin: Float32Array } {
  const pairs = dim / 2;
  const freqs = ropeFrequencies(dim, 10000);
  const c = new Float32Array(positions * pairs);
  const s = new Float32Array(positions * pairs);
  for (let p = 0; p < positions; ++p)
    for (let i = 0; i < pairs; ++i) {
      const freq = freqs[i] as number;
      c[p * pairs + i] = Math.cos(p * freq);
      s[p * pairs + i] = Math.sin(p * freq);
    }
  return { cos: c, sin: s };
}

export interface WanTransformerLoadOptions extends ParamOptions {
  /**
   * The feed-forward (a per-token map) runs over slices of this many tokens, which bounds its
   * [tokens, ffn_dim] hidden buffer (4.2 GB for the 14B at 720p in one piece); default 8192.
   */
  ffnChunkTokens?: number;
}

export interface WanForwardOptions {
  /**
   * Split the video tokens over the ranks of this group: each rank keeps its shard of the tokens
   * and of the rotary tables, self-attention runs over all of them through the group (Ulysses
   * and/or ring), and the output tokens are gathered at the end.
   */
  sequenceParallel?: SequenceParallel | null;
}

export class WanTransformer3DModel extends CheckpointModel {
  readonly config: WanTransformer3DConfig;
  readonly innerDim: number;
  readonly outChannels: number;
  private readonly ffnChunkTokens: number;
  private readonly patchEmbedding: Linear;
  private readonly timeEmbedder1: Linear;
  private readonly timeEmbedder2: Linear;
  private readonly timeProj: Linear;
  private readonly textEmbedder1: Linear;
  private readonly textEmbedder2: Linear;
  private readonly blocks: WanBlock[] = [];
  private readonly scaleShiftTable: Tensor;
  private readonly projOut: Linear;
  /** frequencies of the sinusoidal timestep embedding, float32 [1, freq_dim / 2] */
  private readonly timestepFreqs: Tensor;
  private ropeCache: { key: string; cos: Tensor; sin: Tensor } | null = null;

  /** Builds the model over weights (owned and disposed by the model when `owns` is given). */
  constructor(weights: WeightSource, config: WanTransformer3DConfig, opts: WanTransformerLoadOptions = {}, owns: WeightSet | null = null) {
    super(new ModelParams(NAME, weights, opts), owns);
    checkSupported(config);
    this.config = config;
    this.ffnChunkTokens = chunkTokensOption(NAME, opts.ffnChunkTokens, FFN_CHUNK_TOKENS);
    const c = config;
    const inner = (this.innerDim = c.num_attention_heads * c.attention_head_dim);
    const out = (this.outChannels = c.out_channels ?? c.in_channels);
    const p = this.params;
    const lin = (name: string, outF: number, inF: number): Linear => ({
      weight: p.matrix(`${name}.weight`, [outF, inF]),
      bias: p.vector(`${name}.bias`, [outF]),
    });
    const [pt, ph, pw] = c.patch_size;
    const patchIn = c.in_channels * pt * ph * pw;
    // conv3d with kernel = stride = patch == linear over flattened (c, pt, ph, pw) patches
    this.patchEmbedding = {
      weight: p.matrix('patch_embedding.weight', [inner, c.in_channels, pt, ph, pw], [inner, patchIn]),
      bias: p.vector('patch_embedding.bias', [inner]),
    };
    this.timeEmbedder1 = lin('condition_embedder.time_embedder.linear_1', inner, c.freq_dim);
    this.timeEmbedder2 = lin('condition_embedder.time_embedder.linear_2', inner, inner);
    this.timeProj = lin('condition_embedder.time_proj', 6 * inner, inner);
    this.textEmbedder1 = lin('condition_embedder.text_embedder.linear_1', inner, c.text_dim);
    this.textEmbedder2 = lin('condition_embedder.text_embedder.linear_2', inner, inner);

    const attn = (prefix: string): WanAttention => ({
      toQ: lin(`${prefix}.to_q`, inner, inner),
      toK: lin(`${prefix}.to_k`, inner, inner),
      toV: lin(`${prefix}.to_v`, inner, inner),
      toOut: lin(`${prefix}.to_out.0`, inner, inner),
      normQ: p.vector(`${prefix}.norm_q.weight`, [inner]),
      normK: p.vector(`${prefix}.norm_k.weight`, [inner]),
    });
    for (let i = 0; i < c.num_layers; ++i) {
      const b = `blocks.${i}`;
      this.blocks.push({
        scaleShiftTable: p.vector(`${b}.scale_shift_table`, [1, 6, inner]),
        attn1: attn(`${b}.attn1`),
        attn2: attn(`${b}.attn2`),
        norm2: c.cross_attn_norm ? { weight: p.vector(`${b}.norm2.weight`, [inner]), bias: p.vector(`${b}.norm2.bias`, [inner]) } : null,
        ffnIn: lin(`${b}.ffn.net.0.proj`, c.ffn_dim, inner),
        ffnOut: lin(`${b}.ffn.net.2`, inner, c.ffn_dim),
      });
    }
    this.scaleShiftTable = p.vector('scale_shift_table', [1, 2, inner]);
    this.projOut = lin('proj_out', out * pt * ph * pw, inner);
    p.checkAllUsed();

    // Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0)
    this.timestepFreqs = timestepFrequencies(c.freq_dim, p.device);
  }

  /** Loads a diffusers `transformer` folder (config.json + sharded safetensors, memory-mapped). */
  static load(dir: string, opts: WanTransformerLoadOptions = {}): Promise<WanTransformer3DModel> {
    return loadFromFolder(dir, NAME, (weights, config) => new WanTransformer3DModel(weights, config, opts, weights));
  }

  /** dtype the large matrices are stored (or were converted) in */
  get weightDtype(): string {
    return this.blocks[0]?.attn1.toQ.weight.dtype ?? this.projOut.weight.dtype;
  }

  /** [B, freq_dim]: cos and sin of t * freqs (the flipped sinusoidal embedding of diffusers' Timesteps). */
  private timestepEmbedding(timestep: Tensor): Tensor {
    return timestepSinusoid(timestep.to('float32'), this.timestepFreqs);
  }

  /**
   * cos/sin tables [F'*H'*W', head_dim / 2] of the 3D rotary embedding: each token's pair i rotates
   * by its frame, row or column index times the axis frequency, depending on which of the t/h/w
   * parts of the head pair i belongs to (WanRotaryPosEmbed).
   */
  private rotaryTables(ppf: number, pph: number, ppw: number, device: Tensor['device']): { cos: Tensor; sin: Tensor } {
    const key = `${ppf}x${pph}x${ppw}@${device}`;
    if (this.ropeCache?.key === key) return this.ropeCache;
    const d = this.config.attention_head_dim;
    const maxLen = this.config.rope_max_seq_len;
    if (Math.max(ppf, pph, ppw) > maxLen)
      throw new RangeError(`${NAME}: a latent grid of ${ppf}x${pph}x${ppw} patches exceeds rope_max_seq_len ${maxLen}`);
    const hDim = 2 * Math.floor(d / 6);
    const tDim = d - 2 * hDim;
    const axes: Array<[number, number, number[]]> = [
      [ppf, tDim, [ppf, 1, 1]],
      [pph, hDim, [1, pph, 1]],
      [ppw, hDim, [1, 1, ppw]],
    ];
    const tables = scope(() => {
      const build = (which: 'cos' | 'sin') =>
        concat(
          axes.map(([n, dim, view]) => tensor(axisAngles(n, dim)[which], [...view, dim / 2], { device }).expand(ppf, pph, ppw, dim / 2)),
          -1,
        ).reshape(ppf * pph * ppw, d / 2);
      return { cos: build('cos'), sin: build('sin') };
    });
    if (this.ropeCache) {
      this.ropeCache.cos.dispose();
      this.ropeCache.sin.dispose();
    }
    this.ropeCache = { key, ...keep(tables) };
    return this.ropeCache;
  }

  private attention(
    a: WanAttention,
    x: Tensor,
    context: Tensor,
    rotary: { cos: Tensor; sin: Tensor } | null,
    shard: SequenceShard | null = null,
  ): Tensor {
    const [b, l] = x.shape as [number, number];
    const lk = context.size(1);
    const { num_attention_heads: h, attention_head_dim: d, eps } = this.config;
    let q = rmsNorm(linear(x, a.toQ.weight, a.toQ.bias), a.normQ, eps).view(b, l, h, d);
    let k = rmsNorm(linear(context, a.toK.weight, a.toK.bias), a.normK, eps).view(b, lk, h, d);
    const v = linear(context, a.toV.weight, a.toV.bias).view(b, lk, h, d);
    if (rotary) {
      q = rope(q, rotary.cos, rotary.sin, true);
      k = rope(k, rotary.cos, rotary.sin, true);
    }
    // self-attention over sharded tokens goes through the sequence-parallel group
    const out = shard
      ? shard.attention(q, k, v)
      : attention(q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)).transpose(1, 2);
    return linear(out.reshape(b, l, h * d), a.toOut.weight, a.toOut.bias);
  }

  private feedForward(block: WanBlock, x: Tensor): Tensor {
    return byTokenSlices(x, this.ffnChunkTokens, (part) =>
      linear(linear(part, block.ffnIn.weight, block.ffnIn.bias, 'gelu_tanh'), block.ffnOut.weight, block.ffnOut.bias),
    );
  }

  /** x * (1 + scale) + shift with scale/shift [B, 1, dim] broadcast over the tokens. */
  private modulate(x: Tensor, shift: Tensor, scale: Tensor): Tensor {
    return add(mul(x, affine(scale, 1, 1)), shift);
  }

  private block(
    block: WanBlock,
    x: Tensor,
    context: Tensor,
    timestepProj: Tensor,
    rotary: { cos: Tensor; sin: Tensor },
    shard: SequenceShard | null,
  ): Tensor {
    const eps = this.config.eps;
    const [shiftMsa, scaleMsa, gateMsa, cShiftMsa, cScaleMsa, cGateMsa] = add(block.scaleShiftTable, timestepProj).chunk(6, 1) as [
      Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,
    ];
    // 1. self-attention
    const attnIn = this.modulate(layerNorm(x, null, null, eps), shiftMsa, scaleMsa);
    let h = add(x, mul(this.attention(block.attn1, attnIn, attnIn, rotary, shard), gateMsa));
    // 2. cross-attention to the text
    const crossIn = block.norm2 ? layerNorm(h, block.norm2.weight, block.norm2.bias, eps) : h;
    h = add(h, this.attention(block.attn2, crossIn, context, null));
    // 3. feed-forward
    const ffIn = this.modulate(layerNorm(h, null, null, eps), cShiftMsa, cScaleMsa);
    return add(h, mul(this.feedForward(block, ffIn), cGateMsa));
  }

  /**
   * Noise (flow) prediction [B, out, F, H, W] for latents [B, in, F, H, W], timesteps [B] (the
   * scheduler's values; any numeric dtype) and text embeddings [B, S, text_dim].
   */
  forward(hiddenStates: Tensor, timestep: Tensor, encoderHiddenStates: Tensor, opts: WanForwardOptions = {}): Tensor {
    const c = this.config;
    const [pt, ph, pw] = c.patch_size;
    if (hiddenStates.ndim !== 5 || hiddenStates.size(1) !== c.in_channels)
      throw new RangeError(`${NAME}: hidden_states must be [B, ${c.in_channels}, F, H, W], got [${hiddenStates.shape}]`);
    const [b, ch, f, hgt, wid] = hiddenStates.shape as [number, number, number, number, number];
    if (f % pt || hgt % ph || wid % pw) throw new RangeError(`${NAME}: latent size ${f}x${hgt}x${wid} is not a multiple of the patch ${pt}x${ph}x${pw}`);
    if (timestep.numel !== b) throw new RangeError(`${NAME}: timestep must have ${b} values (one per batch item), got [${timestep.shape}]`);
    if (encoderHiddenStates.ndim !== 3 || encoderHiddenStates.size(0) !== b || encoderHiddenStates.size(2) !== c.text_dim)
      throw new RangeError(`${NAME}: encoder_hidden_states must be [${b}, S, ${c.text_dim}], got [${encoderHiddenStates.shape}]`);
    const [ppf, pph, ppw] = [f / pt, hgt / ph, wid / pw];
    const rotary = this.rotaryTables(ppf, pph, ppw, hiddenStates.device);

    return scope(() => {
      // patch embedding: [B, C, F, H, W] -> [B, F'H'W', C pt ph pw] -> linear
      const patches = hiddenStates
        .reshape(b, ch, ppf, pt, pph, ph, ppw, pw)
        .permute(0, 2, 4, 6, 1, 3, 5, 7)
        .reshape(b, ppf * pph * ppw, ch * pt * ph * pw);
      let x = linear(patches, this.patchEmbedding.weight, this.patchEmbedding.bias);
      // sequence parallelism: this rank's tokens and their rotary rows
      const shard = opts.sequenceParallel ? opts.sequenceParallel.shard(x.size(1)) : null;
      let rope = rotary;
      if (shard) {
        x = shard.take(x, 1);
        rope = { cos: shard.take(rotary.cos, 0), sin: shard.take(rotary.sin, 0) };
      }

      // condition embedder: timestep -> temb [B, dim] and the 6-way modulation [B, 6, dim]; text MLP
      const temb = linear(
        linear(this.timestepEmbedding(timestep), this.timeEmbedder1.weight, this.timeEmbedder1.bias, 'silu'),
        this.timeEmbedder2.weight, this.timeEmbedder2.bias,
      );
      const timestepProj = linear(silu(temb), this.timeProj.weight, this.timeProj.bias).view(b, 6, this.innerDim);
      const context = linear(
        linear(encoderHiddenStates, this.textEmbedder1.weight, this.textEmbedder1.bias, 'gelu_tanh'),
        this.textEmbedder2.weight, this.textEmbedder2.bias,
      );

      for (const block of this.blocks) x = scope(() => this.block(block, x, context, timestepProj, rope, shard));

      // output norm, modulated by temb through the model's own shift/scale table
      const [shift, scale] = add(this.scaleShiftTable, temb.unsqueeze(1)).chunk(2, 1) as [Tensor, Tensor];
      let out = linear(this.modulate(layerNorm(x, null, null, c.eps), shift, scale), this.projOut.weight, this.projOut.bias);
      if (shard) out = shard.gather(out, 1);
      // unpatchify: [B, F'H'W', pt ph pw C] -> [B, C, F, H, W]
      return out
        .reshape(b, ppf, pph, ppw, pt, ph, pw, this.outChannels)
        .permute(0, 7, 1, 4, 2, 5, 3, 6)
        .reshape(b, this.outChannels, f, hgt, wid);
    });
  }

  /** Frees the converted parameters, cached tables and, when the model loaded them, the mapped weights. */
  override dispose(): void {
    super.dispose();
    this.timestepFreqs.dispose();
    if (this.ropeCache) {
      this.ropeCache.cos.dispose();
      this.ropeCache.sin.dispose();
      this.ropeCache = null;
    }
    this.blocks.length = 0;
  }
}
