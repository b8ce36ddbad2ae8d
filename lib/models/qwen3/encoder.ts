// Qwen3 as a text encoder (transformers modeling_qwen3.py, Qwen3Model): token embeddings, decoder
// layers of grouped-query causal self-attention (per-head RMS norm on queries and keys, rotate-half
// RoPE) and a SwiGLU MLP, pre-norm residuals, a final RMS norm. Pipelines read intermediate hidden
// states (Z-Image: hidden_states[-2]; FLUX.2-klein: layers 9, 18, 27 stacked), so the encoder
// computes exactly the requested ones and stops after the last layer they need; layers after it need
// not even be loaded.
import { add, mul } from '../../engine/ops/basic.js';
import { attention, linear } from '../../engine/ops/linalg.js';
import { embedding, rmsNorm, rope } from '../../engine/ops/nn.js';
import { type Device, scope, type Tensor, tensor } from '../../engine/tensor.js';
import type { Qwen3Config } from '../../io/configs.js';
import type { WeightSet } from '../../io/weights.js';
import { loadFromFolder } from '../component-config.js';
import { ModelParams, type ParamOptions, type WeightSource } from '../weights.js';

const NAME = 'Qwen3Model';

interface Qwen3Layer {
  inputNorm: Tensor;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  o: Tensor;
  qBias: Tensor | null;
  kBias: Tensor | null;
  vBias: Tensor | null;
  oBias: Tensor | null;
  qNorm: Tensor;
  kNorm: Tensor;
  postNorm: Tensor;
  gate: Tensor;
  up: Tensor;
  down: Tensor;
}

export interface Qwen3LoadOptions extends ParamOptions {
  /**
   * The largest hidden_states index the caller will read (negative counts from the end, as in
   * Python: -2 is the output of the second-to-last layer). Decoder layers after it, and the final
   * norm unless it is the last index, are not loaded. Default: all.
   */
  maxHiddenState?: number;
}

function checkSupported(c: Qwen3Config): void {
  const fail = (msg: string) => {
    throw new Error(`${NAME}: ${msg}`);
  };
  if (c.hidden_act !== 'silu') fail(`hidden_act '${c.hidden_act}' is not supported (silu)`);
  if (c.rope_parameters.rope_type !== 'default') fail(`rope_type '${c.rope_parameters.rope_type}' is not supported (default)`);
  if (c.layer_types.some((t) => t !== 'full_attention')) fail('sliding-window attention layers are not supported');
  if (c.num_attention_heads % c.num_key_value_heads !== 0)
    fail(`num_attention_heads ${c.num_attention_heads} is not a multiple of num_key_value_heads ${c.num_key_value_heads}`);
  if (c.head_dim % 2 !== 0) fail(`head_dim must be even for rotary embeddings, got ${c.head_dim}`);
}

/**
 * cos/sin tables [L, head_dim / 2] of the default rotary embedding at positions 0..L-1, with the
 * reference's float32 arithmetic: inv_freq = 1 / theta^(2i / dim) and angle = position * inv_freq
 * are float32 values there (rotate-half uses the same angle for pair (i, i + dim/2)).
 */
export function qwen3RopeTables(length: number, headDim: number, theta: number, device: Device): { cos: Tensor; sin: Tensor } {
  const f = Math.fround;
  const half = headDim / 2;
  const invFreq = Float64Array.from({ length: half }, (_, i) => f(1 / f(theta ** f((2 * i) / headDim))));
  const c = new Float32Array(length * half);
  const s = new Float32Array(length * half);
  for (let p = 0; p < length; ++p)
    for (let i = 0; i < half; ++i) {
      const angle = f(p * (invFreq[i] as number));
      c[p * half + i] = Math.cos(angle);
      s[p * half + i] = Math.sin(angle);
    }
  return { cos: tensor(c, [length, half], { device }), sin: tensor(s, [length, half], { device }) };
}

/** Hides the tensors a partly loaded encoder leaves unread from the unused-weight check. */
function withoutNames(source: WeightSource, skip: (name: string) => boolean): WeightSource {
  return {
    get: (n) => source.get(n),
    has: (n) => source.has(n),
    info: (n) => source.info(n),
    names: () => source.names().filter((n) => !skip(n)),
  };
}

export class Qwen3TextEncoder {
  readonly config: Qwen3Config;
  /** decoder layers loaded (hidden states up to this index can be computed) */
  readonly loadedLayers: number;
  private readonly params: ModelParams;
  private readonly weights: WeightSet | null;
  private readonly embedTokens: Tensor;
  private readonly layers: Qwen3Layer[] = [];
  private readonly finalNorm: Tensor | null;

  /** Builds the encoder over weights (owned and disposed by the encoder when `owns` is given). */
  constructor(weights: WeightSource, config: Qwen3Config, opts: Qwen3LoadOptions = {}, owns: WeightSet | null = null) {
    checkSupported(config);
    this.config = config;
    this.weights = owns;
    const n = config.num_hidden_layers;
    const last = this.resolveIndex(opts.maxHiddenState ?? n, n);
    this.loadedLayers = last;
    // a Qwen3ForCausalLM checkpoint nests the model under 'model.' and may carry an lm_head
    const prefix = weights.has('model.embed_tokens.weight') ? 'model.' : '';
    const layerOf = (name: string) => {
      const m = name.startsWith(`${prefix}layers.`) ? /^(\d+)\./.exec(name.slice(prefix.length + 7)) : null;
      return m ? Number(m[1]) : -1;
    };
    const source = withoutNames(
      weights,
      (name) => name === 'lm_head.weight' || layerOf(name) >= last || (last < n && name === `${prefix}norm.weight`),
    );
    const p = (this.params = new ModelParams(NAME, source, opts));
    const { hidden_size: d, head_dim: hd, num_attention_heads: h, num_key_value_heads: hk, intermediate_size: ff } = config;
    this.embedTokens = p.matrix(`${prefix}embed_tokens.weight`, [config.vocab_size, d]);
    const bias = (name: string, size: number) => (config.attention_bias ? p.vector(name, [size]) : null);
    for (let i = 0; i < last; ++i) {
      const l = `${prefix}layers.${i}`;
      this.layers.push({
        inputNorm: p.vector(`${l}.input_layernorm.weight`, [d]),
        q: p.matrix(`${l}.self_attn.q_proj.weight`, [h * hd, d]),
        k: p.matrix(`${l}.self_attn.k_proj.weight`, [hk * hd, d]),
        v: p.matrix(`${l}.self_attn.v_proj.weight`, [hk * hd, d]),
        o: p.matrix(`${l}.self_attn.o_proj.weight`, [d, h * hd]),
        qBias: bias(`${l}.self_attn.q_proj.bias`, h * hd),
        kBias: bias(`${l}.self_attn.k_proj.bias`, hk * hd),
        vBias: bias(`${l}.self_attn.v_proj.bias`, hk * hd),
        oBias: bias(`${l}.self_attn.o_proj.bias`, d),
        qNorm: p.vector(`${l}.self_attn.q_norm.weight`, [hd]),
        kNorm: p.vector(`${l}.self_attn.k_norm.weight`, [hd]),
        postNorm: p.vector(`${l}.post_attention_layernorm.weight`, [d]),
        gate: p.matrix(`${l}.mlp.gate_proj.weight`, [ff, d]),
        up: p.matrix(`${l}.mlp.up_proj.weight`, [ff, d]),
        down: p.matrix(`${l}.mlp.down_proj.weight`, [d, ff]),
      });
    }
    this.finalNorm = last === n ? p.vector(`${prefix}norm.weight`, [d]) : null;
    p.checkAllUsed();
  }

  /** Loads a transformers Qwen3Model / Qwen3ForCausalLM folder (config.json + safetensors, memory-mapped). */
  static load(dir: string, opts: Qwen3LoadOptions = {}): Promise<Qwen3TextEncoder> {
    return loadFromFolder(dir, 'Qwen3Model', (weights, config) => new Qwen3TextEncoder(weights, config, opts, weights));
  }

  /** hidden_states index (negative counts from the end) -> 0..numLayers. */
  private resolveIndex(index: number, n = this.config.num_hidden_layers): number {
    const k = index < 0 ? index + n + 1 : index;
    if (!Number.isInteger(index) || k < 0 || k > n)
      throw new RangeError(`${NAME}: hidden_states index ${index} is out of range for ${n} layers (valid: ${-(n + 1)}..${n})`);
    return k;
  }

  private selfAttention(x: Tensor, layer: Qwen3Layer, rotary: { cos: Tensor; sin: Tensor }, kvLens: Tensor): Tensor {
    const [b, l] = x.shape as [number, number];
    const { num_attention_heads: h, num_key_value_heads: hk, head_dim: hd, rms_norm_eps: eps } = this.config;
    const q = rope(rmsNorm(linear(x, layer.q, layer.qBias).view(b, l, h, hd), layer.qNorm, eps), rotary.cos, rotary.sin, false);
    const k = rope(rmsNorm(linear(x, layer.k, layer.kBias).view(b, l, hk, hd), layer.kNorm, eps), rotary.cos, rotary.sin, false);
    const v = linear(x, layer.v, layer.vBias).view(b, l, hk, hd);
    // causal, and keys past each row's real tokens masked (the reference's causal + padding mask)
    const out = attention(q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3), { causal: true, kvLens });
    return linear(out.transpose(1, 2).reshape(b, l, h * hd), layer.o, layer.oBias);
  }

  private mlp(x: Tensor, layer: Qwen3Layer): Tensor {
    return linear(mul(linear(x, layer.gate, null, 'silu'), linear(x, layer.up)), layer.down);
  }

  /**
   * hidden_states of Qwen3Model(input_ids, attention_mask, output_hidden_states=True) at the given
   * indices (0: embeddings; k: output of decoder layer k; numLayers: the final-normed output;
   * negative indices count from the end), float32 [B, L, hidden]. Rows are right-padded: row b's
   * real tokens are its first seqLens[b]; every position attends causally to real tokens only, so
   * real rows never depend on padding. Only the layers up to the largest index run.
   */
  hiddenStates(inputIds: Tensor, seqLens: number[], indices: number[]): Tensor[] {
    if (inputIds.ndim !== 2) throw new RangeError(`${NAME}: input_ids must be [batch, length], got [${inputIds.shape}]`);
    const [b, l] = inputIds.shape as [number, number];
    if (seqLens.length !== b || seqLens.some((n) => !Number.isInteger(n) || n < 1 || n > l))
      throw new RangeError(`${NAME}: seqLens [${seqLens}] must give 1..${l} real tokens for each of the ${b} rows`);
    if (indices.length === 0) throw new RangeError(`${NAME}: no hidden_states index requested`);
    const wanted = indices.map((i) => this.resolveIndex(i));
    const last = Math.max(...wanted);
    if (last > this.loadedLayers)
      throw new RangeError(`${NAME}: hidden_states[${indices[wanted.indexOf(last)]}] needs ${last} layers, only ${this.loadedLayers} were loaded`);
    const n = this.config.num_hidden_layers;
    const eps = this.config.rms_norm_eps;
    return scope(() => {
      const device = inputIds.device;
      const kvLens = tensor(Int32Array.from(seqLens), [b], { dtype: 'int32', device });
      const rotary = qwen3RopeTables(l, this.config.head_dim, this.config.rope_theta, device);
      const states = new Map<number, Tensor>();
      let x = embedding(this.embedTokens, inputIds).to('float32');
      if (wanted.includes(0)) states.set(0, x);
      for (let k = 1; k <= last; ++k) {
        const layer = this.layers[k - 1]!;
        const prev = x;
        x = scope(() => {
          const h = add(prev, this.selfAttention(rmsNorm(prev, layer.inputNorm, eps), layer, rotary, kvLens));
          return add(h, this.mlp(rmsNorm(h, layer.postNorm, eps), layer));
        });
        if (!wanted.includes(k - 1)) prev.dispose();
        if (k < n && wanted.includes(k)) states.set(k, x);
      }
      if (last === n) states.set(n, rmsNorm(x, this.finalNorm as Tensor, eps));
      return wanted.map((k) => states.get(k) as Tensor);
    });
  }

  /** Frees the converted parameters and, when the encoder loaded them, the mapped weights. */
  dispose(): void {
    this.params.dispose();
    this.weights?.dispose();
    this.layers.length = 0;
  }
}
