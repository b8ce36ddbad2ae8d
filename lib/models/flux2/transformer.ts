// Flux2Transformer2DModel (diffusers transformer_flux2.py): the MMDiT of FLUX.2. Image tokens (packed
// latents, [B, S, in_channels], reference-image tokens appended in editing) and text tokens (stacked
// Qwen3 hidden states, [B, L, joint_attention_dim]) are projected to the inner width; a sinusoidal
// timestep embedding (+ an optional guidance embedding) drives modulation tables shared by all blocks
// of a kind: double-stream blocks keep separate image/text weights and attend jointly over [text,
// image]; single-stream blocks run the concatenated sequence through one fused projection (q, k, v
// and the SwiGLU input in one matrix) and a fused output projection. Attention has per-head RMS
// norms on q/k and interleaved RoPE over 4-axis position ids (t, h, w, l); the final AdaLN layer norm
// and projection map the image tokens back to latent channels. No linear has a bias.
import { add, affine, concat, mul, silu } from '../../engine/ops/basic.js';
import { attention, linear } from '../../engine/ops/linalg.js';
import { layerNorm, rmsNorm, rope } from '../../engine/ops/nn.js';
import { type Device, scope, type Tensor, tensor } from '../../engine/tensor.js';
import type { Flux2Transformer2DConfig } from '../../io/configs.js';
import type { WeightSet } from '../../io/weights.js';
import { byTokenRanges, chunkTokensOption, ropeFrequencies, timestepFrequencies, timestepSinusoid } from '../common.js';
import { loadFromFolder } from '../component-config.js';
import { CheckpointModel, ModelParams, type ParamOptions, type WeightSource } from '../weights.js';
import { flux2Widths } from './layout.js';

const NAME = 'Flux2Transformer2DModel';
/** Position ids have one coordinate per RoPE axis: (t, h, w, l). */
export const FLUX2_POSITION_AXES = 4;

function checkSupported(c: Flux2Transformer2DConfig): void {
  const fail = (msg: string) => {
    throw new Error(`${NAME}: ${msg}`);
  };
  if (c.patch_size !== 1) fail(`patch_size ${c.patch_size} is not supported (1: the pipeline packs 2x2 latent patches itself)`);
  if (c.axes_dims_rope.length !== FLUX2_POSITION_AXES) fail(`axes_dims_rope must have ${FLUX2_POSITION_AXES} entries (t, h, w, l), got [${c.axes_dims_rope}]`);
  if (c.axes_dims_rope.some((d) => d % 2 !== 0)) fail(`axes_dims_rope [${c.axes_dims_rope}] must be even`);
  const sum = c.axes_dims_rope.reduce((a, b) => a + b, 0);
  if (sum !== c.attention_head_dim) fail(`axes_dims_rope [${c.axes_dims_rope}] must add up to attention_head_dim ${c.attention_head_dim}`);
  if (c.timestep_guidance_channels % 2 !== 0) fail(`timestep_guidance_channels must be even, got ${c.timestep_guidance_channels}`);
}

interface DoubleBlock {
  toQ: Tensor;
  toK: Tensor;
  toV: Tensor;
  normQ: Tensor;
  normK: Tensor;
  toOut: Tensor;
  addQ: Tensor;
  addK: Tensor;
  addV: Tensor;
  normAddedQ: Tensor;
  normAddedK: Tensor;
  toAddOut: Tensor;
  ffIn: Tensor;
  ffOut: Tensor;
  ffContextIn: Tensor;
  ffContextOut: Tensor;
}

interface SingleBlock {
  /** [3 inner + 2 mlp, dim]: q, k, v, then the SwiGLU gate and value halves */
  qkvMlp: Tensor;
  normQ: Tensor;
  normK: Tensor;
  /** [dim, inner + mlp] over cat(attention output, SwiGLU output) */
  toOut: Tensor;
}

interface Embedder {
  linear1: Tensor;
  linear2: Tensor;
}

/** RoPE tables (cos, sin) [tokens, head_dim / 2] for a [text, image] sequence. */
export interface Flux2Rotary {
  cos: Tensor;
  sin: Tensor;
}

/** Position ids: a tensor [N, 4] or [B, N, 4] (int32/int64; the first item's ids are used) or N x 4 numbers. */
export type PositionIds = Tensor | Int32Array;

/** Default token count above which the per-token feed-forward parts run in slices of this many tokens. */
const FFN_CHUNK_TOKENS = 4096;

export interface Flux2TransformerLoadOptions extends ParamOptions {
  /**
   * The feed-forward parts (per-token maps) run over slices of this many tokens, which bounds their
   * [tokens, 2 x mlp] buffers (about 1 GB for 1024x1024 with one reference image in one piece); default 4096.
   */
  ffnChunkTokens?: number;
}

export class Flux2Transformer2DModel extends CheckpointModel {
  readonly config: Flux2Transformer2DConfig;
  readonly inner: number;
  readonly mlpHidden: number;
  readonly outChannels: number;
  private readonly ffnChunkTokens: number;
  private readonly timestepEmbedder: Embedder;
  private readonly guidanceEmbedder: Embedder | null;
  private readonly modImg: Tensor;
  private readonly modTxt: Tensor;
  private readonly modSingle: Tensor;
  private readonly xEmbedder: Tensor;
  private readonly contextEmbedder: Tensor;
  private readonly doubleBlocks: DoubleBlock[] = [];
  private readonly singleBlocks: SingleBlock[] = [];
  private readonly normOut: Tensor;
  private readonly projOut: Tensor;
  /** frequencies of the sinusoidal timestep embedding, float32 [1, channels / 2] */
  private readonly timestepFreqs: Tensor;
  /** per axis: the RoPE frequencies 1 / theta^(2i/d), float64 as in the reference */
  private readonly axisFreqs: Float64Array[];

  /** Builds the model over weights (owned and disposed by the model when `owns` is given). */
  constructor(weights: WeightSource, config: Flux2Transformer2DConfig, opts: Flux2TransformerLoadOptions = {}, owns: WeightSet | null = null) {
    super(new ModelParams(NAME, weights, opts), owns);
    checkSupported(config);
    this.config = config;
    this.ffnChunkTokens = chunkTokensOption(NAME, opts.ffnChunkTokens, FFN_CHUNK_TOKENS);
    const c = config;
    const { inner: d, mlpHidden: mlp, outChannels } = flux2Widths(c);
    this.inner = d;
    this.mlpHidden = mlp;
    this.outChannels = outChannels;
    const hd = c.attention_head_dim;
    const ch = c.timestep_guidance_channels;
    const p = this.params;
    const embedder = (name: string): Embedder => ({
      linear1: p.matrix(`time_guidance_embed.${name}.linear_1.weight`, [d, ch]),
      linear2: p.matrix(`time_guidance_embed.${name}.linear_2.weight`, [d, d]),
    });
    this.timestepEmbedder = embedder('timestep_embedder');
    this.guidanceEmbedder = c.guidance_embeds ? embedder('guidance_embedder') : null;
    this.modImg = p.matrix('double_stream_modulation_img.linear.weight', [6 * d, d]);
    this.modTxt = p.matrix('double_stream_modulation_txt.linear.weight', [6 * d, d]);
    this.modSingle = p.matrix('single_stream_modulation.linear.weight', [3 * d, d]);
    this.xEmbedder = p.matrix('x_embedder.weight', [d, c.in_channels]);
    this.contextEmbedder = p.matrix('context_embedder.weight', [d, c.joint_attention_dim]);
    for (let i = 0; i < c.num_layers; ++i) {
      const b = `transformer_blocks.${i}`;
      this.doubleBlocks.push({
        toQ: p.matrix(`${b}.attn.to_q.weight`, [d, d]),
        toK: p.matrix(`${b}.attn.to_k.weight`, [d, d]),
        toV: p.matrix(`${b}.attn.to_v.weight`, [d, d]),
        normQ: p.vector(`${b}.attn.norm_q.weight`, [hd]),
        normK: p.vector(`${b}.attn.norm_k.weight`, [hd]),
        toOut: p.matrix(`${b}.attn.to_out.0.weight`, [d, d]),
        addQ: p.matrix(`${b}.attn.add_q_proj.weight`, [d, d]),
        addK: p.matrix(`${b}.attn.add_k_proj.weight`, [d, d]),
        addV: p.matrix(`${b}.attn.add_v_proj.weight`, [d, d]),
        normAddedQ: p.vector(`${b}.attn.norm_added_q.weight`, [hd]),
        normAddedK: p.vector(`${b}.attn.norm_added_k.weight`, [hd]),
        toAddOut: p.matrix(`${b}.attn.to_add_out.weight`, [d, d]),
        ffIn: p.matrix(`${b}.ff.linear_in.weight`, [2 * mlp, d]),
        ffOut: p.matrix(`${b}.ff.linear_out.weight`, [d, mlp]),
        ffContextIn: p.matrix(`${b}.ff_context.linear_in.weight`, [2 * mlp, d]),
        ffContextOut: p.matrix(`${b}.ff_context.linear_out.weight`, [d, mlp]),
      });
    }
    for (let i = 0; i < c.num_single_layers; ++i) {
      const b = `single_transformer_blocks.${i}`;
      this.singleBlocks.push({
        qkvMlp: p.matrix(`${b}.attn.to_qkv_mlp_proj.weight`, [3 * d + 2 * mlp, d]),
        normQ: p.vector(`${b}.attn.norm_q.weight`, [hd]),
        normK: p.vector(`${b}.attn.norm_k.weight`, [hd]),
        toOut: p.matrix(`${b}.attn.to_out.weight`, [d, d + mlp]),
      });
    }
    this.normOut = p.matrix('norm_out.linear.weight', [2 * d, d]);
    this.projOut = p.matrix('proj_out.weight', [outChannels, d]);
    p.checkAllUsed();

    // get_timestep_embedding
    this.timestepFreqs = timestepFrequencies(ch, p.device);
    // Flux2PosEmbed: 1 / theta^(arange(0, d, 2) / d) in float64
    this.axisFreqs = c.axes_dims_rope.map((dim) => ropeFrequencies(dim, c.rope_theta));
  }

  /** Loads a diffusers `transformer` folder (config.json + safetensors, memory-mapped). */
  static load(dir: string, opts: Flux2TransformerLoadOptions = {}): Promise<Flux2Transformer2DModel> {
    return loadFromFolder(dir, NAME, (weights, config) => new Flux2Transformer2DModel(weights, config, opts, weights));
  }

  get inChannels(): number {
    return this.config.in_channels;
  }

  /** dtype the large matrices are stored (or were converted) in */
  get weightDtype(): string {
    return this.xEmbedder.dtype;
  }

  /** Timesteps(flip_sin_to_cos) -> TimestepEmbedding (linear, SiLU, linear) of values already scaled by 1000. */
  private embed(e: Embedder, scaled: Tensor): Tensor {
    return linear(linear(timestepSinusoid(scaled, this.timestepFreqs), e.linear1, null, 'silu'), e.linear2);
  }

  /**
   * cos/sin tables [text + image tokens, head_dim / 2] (Flux2PosEmbed): for each token and axis, the
   * angles position * freq in float64, their cos/sin rounded to float32 as the reference's .float().
   */
  rotaryTables(txtIds: PositionIds, imgIds: PositionIds, device: Device): Flux2Rotary {
    const txt = positionList(txtIds, 'txt_ids');
    const img = positionList(imgIds, 'img_ids');
    const tokens = (txt.length + img.length) / FLUX2_POSITION_AXES;
    const half = this.config.attention_head_dim / 2;
    const c = new Float32Array(tokens * half);
    const s = new Float32Array(tokens * half);
    let at = 0;
    for (const ids of [txt, img])
      for (let tok = 0; tok < ids.length / FLUX2_POSITION_AXES; ++tok)
        for (let axis = 0; axis < FLUX2_POSITION_AXES; ++axis) {
          const pos = ids[tok * FLUX2_POSITION_AXES + axis] as number;
          for (const freq of this.axisFreqs[axis] as Float64Array) {
            const angle = pos * freq;
            c[at] = Math.cos(angle);
            s[at] = Math.sin(angle);
            ++at;
          }
        }
    return { cos: tensor(c, [tokens, half], { device }), sin: tensor(s, [tokens, half], { device }) };
  }

  /** [B, T, inner] projection -> per-head RMS-normed [B, T, H, hd]. */
  private heads(x: Tensor, norm: Tensor): Tensor {
    const [b, l] = x.shape as [number, number];
    return rmsNorm(x.reshape(b, l, this.config.num_attention_heads, this.config.attention_head_dim), norm, this.config.eps);
  }

  /** Joint attention of [B, T, H, hd] queries/keys/values with RoPE on q and k -> [B, T, inner]. */
  private attend(q: Tensor, k: Tensor, v: Tensor, rotary: Flux2Rotary): Tensor {
    const [b, l] = q.shape as [number, number];
    const rq = rope(q, rotary.cos, rotary.sin, true).permute(0, 2, 1, 3);
    const rk = rope(k, rotary.cos, rotary.sin, true).permute(0, 2, 1, 3);
    return attention(rq, rk, v.permute(0, 2, 1, 3)).transpose(1, 2).reshape(b, l, this.inner);
  }

  /** Flux2SwiGLU: silu(first half) * second half of the last dim. */
  private swiglu(x: Tensor): Tensor {
    const [gate, value] = x.chunk(2, -1) as [Tensor, Tensor];
    return mul(silu(gate), value);
  }

  /** Flux2FeedForward: linear_in -> SwiGLU -> linear_out, in token slices. */
  private feedForward(x: Tensor, wIn: Tensor, wOut: Tensor): Tensor {
    return byTokenRanges(x.size(1), this.ffnChunkTokens, (at, end) => linear(this.swiglu(linear(x.slice(1, at, end), wIn)), wOut));
  }

  /** LayerNorm (no affine) then (1 + scale) * x + shift, with [B, 1, D] tables. */
  private modulate(x: Tensor, shift: Tensor, scale: Tensor): Tensor {
    return add(mul(layerNorm(x, null, null, this.config.eps), affine(scale, 1, 1)), shift);
  }

  /** Flux2TransformerBlock: image x [B, S, D] and text c [B, L, D] -> updated (c, x). */
  private doubleBlock(blk: DoubleBlock, x: Tensor, c: Tensor, modImg: Tensor[], modTxt: Tensor[], rotary: Flux2Rotary): [Tensor, Tensor] {
    const [shiftMsa, scaleMsa, gateMsa, shiftMlp, scaleMlp, gateMlp] = modImg as [Tensor, Tensor, Tensor, Tensor, Tensor, Tensor];
    const [cShiftMsa, cScaleMsa, cGateMsa, cShiftMlp, cScaleMlp, cGateMlp] = modTxt as [Tensor, Tensor, Tensor, Tensor, Tensor, Tensor];
    const l = c.size(1);
    const attn = scope(() => {
      const nx = this.modulate(x, shiftMsa, scaleMsa);
      const nc = this.modulate(c, cShiftMsa, cScaleMsa);
      const q = concat([this.heads(linear(nc, blk.addQ), blk.normAddedQ), this.heads(linear(nx, blk.toQ), blk.normQ)], 1);
      const k = concat([this.heads(linear(nc, blk.addK), blk.normAddedK), this.heads(linear(nx, blk.toK), blk.normK)], 1);
      const [b] = x.shape as [number];
      const v = concat([linear(nc, blk.addV), linear(nx, blk.toV)], 1).reshape(b, -1, this.config.num_attention_heads, this.config.attention_head_dim);
      return this.attend(q, k, v, rotary);
    });
    const newX = scope(() => {
      const h = add(x, mul(gateMsa, linear(attn.slice(1, l), blk.toOut)));
      return add(h, mul(gateMlp, this.feedForward(this.modulate(h, shiftMlp, scaleMlp), blk.ffIn, blk.ffOut)));
    });
    const newC = scope(() => {
      const h = add(c, mul(cGateMsa, linear(attn.slice(1, 0, l), blk.toAddOut)));
      return add(h, mul(cGateMlp, this.feedForward(this.modulate(h, cShiftMlp, cScaleMlp), blk.ffContextIn, blk.ffContextOut)));
    });
    attn.dispose();
    return [newC, newX];
  }

  /**
   * Flux2SingleTransformerBlock over the joint sequence h [B, T, D]: one fused projection to q, k, v
   * and the SwiGLU input, attention, then the fused output projection of cat(attention, SwiGLU).
   * The SwiGLU half and the output projection run in token slices (the weight's row blocks are
   * contiguous views).
   */
  private singleBlock(blk: SingleBlock, h: Tensor, mod: Tensor[], rotary: Flux2Rotary): Tensor {
    const [shift, scale, gate] = mod as [Tensor, Tensor, Tensor];
    const d = this.inner;
    return scope(() => {
      const nh = this.modulate(h, shift, scale);
      const qkv = linear(nh, blk.qkvMlp.slice(0, 0, 3 * d));
      const [q, k, v] = qkv.chunk(3, -1) as [Tensor, Tensor, Tensor];
      const [b, t] = h.shape as [number, number];
      const attn = this.attend(this.heads(q, blk.normQ), this.heads(k, blk.normK), v.reshape(b, t, this.config.num_attention_heads, -1), rotary);
      qkv.dispose();
      const mlpW = blk.qkvMlp.slice(0, 3 * d);
      const out = byTokenRanges(t, this.ffnChunkTokens, (at, end) => {
        const act = this.swiglu(linear(nh.slice(1, at, end), mlpW));
        return linear(concat([attn.slice(1, at, end), act], -1), blk.toOut);
      });
      return add(h, mul(gate, out));
    });
  }

  /**
   * The denoiser forward: hidden_states [B, S, in_channels] (packed latents, reference tokens
   * appended), encoder_hidden_states [B, L, joint_attention_dim], timestep [B] (the scheduler's
   * timestep / 1000; scaled by 1000 here), position ids of the image and text tokens, and an optional
   * guidance [B] (guidance-distilled models only). Returns [B, S, out_channels] float32.
   */
  forward(
    hiddenStates: Tensor,
    encoderHiddenStates: Tensor,
    timestep: Tensor,
    imgIds: PositionIds,
    txtIds: PositionIds,
    guidance: Tensor | null = null,
    rotary: Flux2Rotary | null = null,
  ): Tensor {
    const c = this.config;
    if (hiddenStates.ndim !== 3 || hiddenStates.size(2) !== c.in_channels)
      throw new RangeError(`${NAME}: hidden_states must be [B, S, ${c.in_channels}], got [${hiddenStates.shape}]`);
    const [b, s] = hiddenStates.shape as [number, number];
    if (encoderHiddenStates.ndim !== 3 || encoderHiddenStates.size(0) !== b || encoderHiddenStates.size(2) !== c.joint_attention_dim)
      throw new RangeError(`${NAME}: encoder_hidden_states must be [${b}, L, ${c.joint_attention_dim}], got [${encoderHiddenStates.shape}]`);
    const l = encoderHiddenStates.size(1);
    if (timestep.numel !== b) throw new RangeError(`${NAME}: timestep must have ${b} values (one per item), got [${timestep.shape}]`);
    if (guidance && guidance.numel !== b) throw new RangeError(`${NAME}: guidance must have ${b} values (one per item), got [${guidance.shape}]`);
    const imgCount = positionCount(imgIds, 'img_ids');
    const txtCount = positionCount(txtIds, 'txt_ids');
    if (imgCount !== s) throw new RangeError(`${NAME}: img_ids give ${imgCount} positions for ${s} image tokens`);
    if (txtCount !== l) throw new RangeError(`${NAME}: txt_ids give ${txtCount} positions for ${l} text tokens`);
    const device = hiddenStates.device;

    return scope(() => {
      let temb = this.embed(this.timestepEmbedder, mul(timestep.to('float32'), 1000));
      if (guidance && this.guidanceEmbedder) temb = add(temb, this.embed(this.guidanceEmbedder, mul(guidance.to('float32'), 1000)));
      const act = silu(temb);
      const table = (w: Tensor, n: number) => linear(act, w).unsqueeze(1).chunk(n, -1);
      const modImg = table(this.modImg, 6);
      const modTxt = table(this.modTxt, 6);
      const modSingle = table(this.modSingle, 3);
      const rot = rotary ?? this.rotaryTables(txtIds, imgIds, device);
      if (rot.cos.size(0) !== l + s) throw new RangeError(`${NAME}: rotary tables cover ${rot.cos.size(0)} tokens, the sequence has ${l + s}`);

      let x = linear(hiddenStates.to('float32'), this.xEmbedder);
      let ctx = linear(encoderHiddenStates.to('float32'), this.contextEmbedder);
      for (const blk of this.doubleBlocks) {
        const [nc, nx] = this.doubleBlock(blk, x, ctx, modImg, modTxt, rot);
        x.dispose();
        ctx.dispose();
        x = nx;
        ctx = nc;
      }
      let h = concat([ctx, x], 1);
      x.dispose();
      ctx.dispose();
      for (const blk of this.singleBlocks) {
        const next = this.singleBlock(blk, h, modSingle, rot);
        h.dispose();
        h = next;
      }
      // AdaLayerNormContinuous: scale first, then shift
      const [scale, shift] = linear(act, this.normOut).unsqueeze(1).chunk(2, -1) as [Tensor, Tensor];
      return linear(this.modulate(h.slice(1, l), shift, scale), this.projOut);
    });
  }

  /** Frees the converted parameters, the frequency table and, when the model loaded them, the mapped weights. */
  override dispose(): void {
    super.dispose();
    this.timestepFreqs.dispose();
    this.doubleBlocks.length = 0;
    this.singleBlocks.length = 0;
  }
}

/** The first item's position ids as numbers (4 per token). */
function positionList(ids: PositionIds, what: string): Int32Array {
  if (ids instanceof Int32Array) {
    if (ids.length % FLUX2_POSITION_AXES !== 0) throw new RangeError(`${NAME}: ${what} must hold ${FLUX2_POSITION_AXES} values per token, got ${ids.length}`);
    return ids;
  }
  const first = ids.ndim === 3 ? ids.select(0, 0) : ids;
  if (first.ndim !== 2 || first.size(1) !== FLUX2_POSITION_AXES)
    throw new RangeError(`${NAME}: ${what} must be [N, ${FLUX2_POSITION_AXES}] or [B, N, ${FLUX2_POSITION_AXES}], got [${ids.shape}]`);
  const values = first.toArray();
  if (first !== ids) first.dispose();
  return Int32Array.from(values);
}

function positionCount(ids: PositionIds, what: string): number {
  if (ids instanceof Int32Array) return ids.length / FLUX2_POSITION_AXES;
  if ((ids.ndim !== 2 && ids.ndim !== 3) || ids.size(-1) !== FLUX2_POSITION_AXES)
    throw new RangeError(`${NAME}: ${what} must be [N, ${FLUX2_POSITION_AXES}] or [B, N, ${FLUX2_POSITION_AXES}], got [${ids.shape}]`);
  return ids.size(-2);
}
