// UMT5EncoderModel (transformers modeling_umt5.py), the text encoder of Wan: T5 encoder blocks
// (RMS layer norm without mean or bias, unscaled attention with a learned relative position bias,
// gated-GELU feed-forward) where, unlike T5, every layer has its own relative position bias table.
import { add, mul, pad, stack } from '../../engine/ops/basic.js';
import { attention, linear } from '../../engine/ops/linalg.js';
import { embedding, rmsNorm } from '../../engine/ops/nn.js';
import { scope, type Tensor, tensor } from '../../engine/tensor.js';
import type { T5EncoderConfig } from '../../io/configs.js';
import type { WeightSet } from '../../io/weights.js';
import { loadFromFolder } from '../component-config.js';
import { ModelParams, type ParamOptions, type WeightSource } from '../weights.js';

const NAME = 'UMT5EncoderModel';

/**
 * The bucket of a relative position (memory - query) for bidirectional attention, exactly as
 * UMT5Attention._relative_position_bucket computes it: half the buckets for each sign, exact
 * buckets below max_exact, logarithmic ones up to max_distance. The log ratio is a float32
 * computation in the reference, reproduced here with float32 rounding so that the bucket
 * boundaries (truncation of the ratio) land where the reference puts them.
 */
export function relativePositionBucket(relativePosition: number, numBuckets: number, maxDistance: number): number {
  const half = Math.floor(numBuckets / 2);
  let bucket = relativePosition > 0 ? half : 0;
  const n = Math.abs(relativePosition);
  const maxExact = Math.floor(half / 2);
  if (n < maxExact) return bucket + n;
  const f = Math.fround;
  const logRatio = f(f(f(Math.log(f(n / maxExact))) / f(Math.log(maxDistance / maxExact))) * (half - maxExact));
  bucket += Math.min(maxExact + Math.trunc(logRatio), half - 1);
  return bucket;
}

/** int32 [L, L] bucket ids for query i, key j (relative position j - i). */
function relativeBucketIds(length: number, cfg: T5EncoderConfig, device: Tensor['device']): Tensor {
  const byOffset = new Int32Array(2 * length - 1);
  for (let rel = -(length - 1); rel < length; ++rel)
    byOffset[rel + length - 1] = relativePositionBucket(rel, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance);
  const ids = new Int32Array(length * length);
  for (let i = 0; i < length; ++i) ids.set(byOffset.subarray(length - 1 - i, 2 * length - 1 - i), i * length);
  return tensor(ids, [length, length], { dtype: 'int32', device });
}

interface UMT5Layer {
  attnNorm: Tensor;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  o: Tensor;
  relativeAttentionBias: Tensor;
  ffNorm: Tensor;
  wi0: Tensor | null;
  wi1: Tensor | null;
  wi: Tensor | null;
  wo: Tensor;
}

export type UMT5LoadOptions = ParamOptions;

export class UMT5Encoder {
  readonly config: T5EncoderConfig;
  private readonly params: ModelParams;
  private readonly weights: WeightSet | null;
  private readonly shared: Tensor;
  private readonly layers: UMT5Layer[] = [];
  private readonly finalNorm: Tensor;

  /** Builds the encoder over weights (owned and disposed by the encoder when `owns` is given). */
  constructor(weights: WeightSource, config: T5EncoderConfig, opts: UMT5LoadOptions = {}, owns: WeightSet | null = null) {
    const act = config.dense_act_fn;
    if (act !== 'gelu_new' && act !== 'gelu_pytorch_tanh' && act !== 'relu')
      throw new Error(`${NAME}: dense_act_fn '${act}' is not supported (gelu_new, gelu_pytorch_tanh, relu)`);
    this.config = config;
    this.weights = owns;
    const p = (this.params = new ModelParams(NAME, weights, opts));
    const { vocab_size: vocab, d_model: dm, d_kv: dkv, d_ff: dff, num_heads: h } = config;
    const inner = h * dkv;
    // the encoder's embed_tokens is tied to `shared`; checkpoints store one or both names
    this.shared = p.has('shared.weight') ? p.matrix('shared.weight', [vocab, dm]) : p.matrix('encoder.embed_tokens.weight', [vocab, dm]);
    if (p.has('shared.weight') && p.has('encoder.embed_tokens.weight')) p.matrix('encoder.embed_tokens.weight', [vocab, dm]);
    for (let i = 0; i < config.num_layers; ++i) {
      const l = `encoder.block.${i}.layer`;
      const ff = `${l}.1.DenseReluDense`;
      this.layers.push({
        attnNorm: p.vector(`${l}.0.layer_norm.weight`, [dm]),
        q: p.matrix(`${l}.0.SelfAttention.q.weight`, [inner, dm]),
        k: p.matrix(`${l}.0.SelfAttention.k.weight`, [inner, dm]),
        v: p.matrix(`${l}.0.SelfAttention.v.weight`, [inner, dm]),
        o: p.matrix(`${l}.0.SelfAttention.o.weight`, [dm, inner]),
        relativeAttentionBias: p.vector(`${l}.0.SelfAttention.relative_attention_bias.weight`, [config.relative_attention_num_buckets, h]),
        ffNorm: p.vector(`${l}.1.layer_norm.weight`, [dm]),
        wi0: config.is_gated_act ? p.matrix(`${ff}.wi_0.weight`, [dff, dm]) : null,
        wi1: config.is_gated_act ? p.matrix(`${ff}.wi_1.weight`, [dff, dm]) : null,
        wi: config.is_gated_act ? null : p.matrix(`${ff}.wi.weight`, [dff, dm]),
        wo: p.matrix(`${ff}.wo.weight`, [dm, dff]),
      });
    }
    this.finalNorm = p.vector('encoder.final_layer_norm.weight', [dm]);
    p.checkAllUsed();
  }

  /** Loads a transformers UMT5EncoderModel folder (config.json + safetensors, memory-mapped). */
  static load(dir: string, opts: UMT5LoadOptions = {}): Promise<UMT5Encoder> {
    return loadFromFolder(dir, NAME, (weights, config) => new UMT5Encoder(weights, config, opts, weights));
  }

  /** Relative position bias of one layer: [1, H, L, L] float32. */
  private positionBias(layer: UMT5Layer, bucketIds: Tensor): Tensor {
    const values = embedding(layer.relativeAttentionBias, bucketIds).to('float32'); // [L, L, H]
    return values.permute(2, 0, 1).unsqueeze(0).contiguous();
  }

  private selfAttention(x: Tensor, layer: UMT5Layer, bucketIds: Tensor, kvLens: Tensor): Tensor {
    const [b, l] = x.shape as [number, number];
    const { num_heads: h, d_kv: d } = this.config;
    const heads = (t: Tensor) => t.view(b, l, h, d).permute(0, 2, 1, 3);
    const q = heads(linear(x, layer.q));
    const k = heads(linear(x, layer.k));
    const v = heads(linear(x, layer.v));
    // T5 does not scale the logits by 1/sqrt(d): the scale is folded into the initialisation
    const out = attention(q, k, v, { scale: 1, bias: this.positionBias(layer, bucketIds), kvLens });
    return linear(out.transpose(1, 2).reshape(b, l, h * d), layer.o);
  }

  private feedForward(x: Tensor, layer: UMT5Layer): Tensor {
    const act = this.config.dense_act_fn === 'relu' ? 'relu' : 'gelu_tanh';
    if (layer.wi0 && layer.wi1) return linear(mul(linear(x, layer.wi0, null, act), linear(x, layer.wi1)), layer.wo);
    return linear(linear(x, layer.wi as Tensor, null, act), layer.wo);
  }

  /**
   * last_hidden_state [B, L, d_model] for token ids [B, L] whose real tokens are the first
   * seqLens[b] of each row (right padding, the tokenizer's layout); padded keys are masked.
   */
  forward(inputIds: Tensor, seqLens: number[]): Tensor {
    const [b, l] = inputIds.shape as [number, number];
    if (inputIds.ndim !== 2) throw new RangeError(`input_ids must be [batch, length], got [${inputIds.shape}]`);
    if (seqLens.length !== b || seqLens.some((n) => !Number.isInteger(n) || n < 1 || n > l))
      throw new RangeError(`seqLens [${seqLens}] must give 1..${l} real tokens for each of the ${b} rows`);
    const eps = this.config.layer_norm_epsilon;
    return scope(() => {
      const kvLens = tensor(Int32Array.from(seqLens), [b], { dtype: 'int32', device: inputIds.device });
      const bucketIds = relativeBucketIds(l, this.config, inputIds.device);
      let x = embedding(this.shared, inputIds).to('float32');
      for (const layer of this.layers) {
        x = scope(() => {
          const h = add(x, this.selfAttention(rmsNorm(x, layer.attnNorm, eps), layer, bucketIds, kvLens));
          return add(h, this.feedForward(rmsNorm(h, layer.ffNorm, eps), layer));
        });
      }
      return rmsNorm(x, this.finalNorm, eps);
    });
  }

  /**
   * Wan's prompt embeddings (WanPipeline._get_t5_prompt_embeds): the encoder output of each row cut
   * to its real tokens and zero-padded to maxSequenceLength. Positions past a row's real tokens do
   * not influence its real tokens (their keys are masked and the bias depends only on relative
   * position), so the encoder runs on the longest real prefix only: exact, and much shorter than
   * the padded 512 tokens.
   */
  encodePrompt(inputIds: Tensor, attentionMask: Tensor, maxSequenceLength: number): Tensor {
    const [b, l] = inputIds.shape as [number, number];
    const seqLens = promptLengths(attentionMask, b, l);
    const longest = Math.max(...seqLens);
    if (longest > maxSequenceLength) throw new RangeError(`a prompt has ${longest} tokens, more than max_sequence_length ${maxSequenceLength}`);
    return scope(() => {
      const hidden = this.forward(inputIds.slice(1, 0, longest).contiguous(), seqLens);
      // pad() order is torch's: [last dim lo, hi, second-last lo, hi]
      const rows = seqLens.map((n, i) => pad(hidden.select(0, i).slice(0, 0, n), [0, 0, 0, maxSequenceLength - n]));
      return stack(rows, 0);
    });
  }

  /** Frees the converted parameters and, when the encoder loaded them, the mapped weights. */
  dispose(): void {
    this.params.dispose();
    this.weights?.dispose();
    this.layers.length = 0;
  }
}

/** Real-token counts of a right-padded attention mask [B, L] (ones, then zeros). */
export function promptLengths(attentionMask: Tensor, batch: number, length: number): number[] {
  if (attentionMask.ndim !== 2 || attentionMask.size(0) !== batch || attentionMask.size(1) !== length)
    throw new RangeError(`attention_mask must be [${batch}, ${length}], got [${attentionMask.shape}]`);
  const m = attentionMask.toArray();
  const lens: number[] = [];
  for (let b = 0; b < batch; ++b) {
    const row = m.slice(b * length, (b + 1) * length);
    const n = row.findIndex((v) => v === 0);
    const len = n === -1 ? length : n;
    if (row.slice(len).some((v) => v !== 0) || row.slice(0, len).some((v) => v !== 1))
      throw new RangeError(`attention_mask row ${b} must be right-padded: ones for the real tokens, then zeros`);
    if (len === 0) throw new RangeError(`attention_mask row ${b} has no real token`);
    lens.push(len);
  }
  return lens;
}
