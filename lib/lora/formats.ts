// LoRA key formats: which layer of this project's denoisers each tensor of a LoRA file belongs to,
// and with which rank and alpha.
//
// Accepted, per key (any mix in one file):
// * diffusers / PEFT: `<module>.lora_A.weight` [rank, in] and `<module>.lora_B.weight` [out, rank],
//   module names with or without `transformer.` (and `base_model.model.`) in front; alpha from the
//   PEFT config the diffusers writer stores in the header (`__metadata__.lora_adapter_metadata`,
//   `transformer.lora_alpha` / `alpha_pattern` / `use_rslora`), else alpha = rank.
// * kohya / ComfyUI: `<module>.lora_down.weight`, `.lora_up.weight` (also `.lora.down/.lora.up`)
//   and an optional scalar `<module>.alpha` (missing: alpha = rank), with `diffusion_model.`
//   prefixes and dotted names, or `lora_unet_` prefixes with the module path's dots written as
//   underscores. Underscores are ambiguous (`to_q` vs `to.q`), so those names are matched against
//   the model's real modules, never split by rule.
// * module names of the diffusers models (blocks.0.attn1.to_q) or of the original checkpoints:
//   Wan (blocks.N.self_attn.q, cross_attn.*, ffn.0/ffn.2, head.head, time_embedding.*, ...),
//   Z-Image (attention.out, and the fused attention.qkv split over to_q/to_k/to_v), FLUX.2
//   (double_blocks.N.img_attn.qkv, single_blocks.N.linear1, ...).
// A key that fits none of these, names a layer the model lacks, or whose shape does not fit is an
// error naming the key: nothing is applied from a file that does not match completely.
import type { DType } from '../engine/dtype.js';
import { keep, scope, type Tensor } from '../engine/tensor.js';
import { concat } from '../engine/ops/basic.js';
import { LoraError } from './request.js';

export { LoraError };

/** The tensors and header metadata of one LoRA file, held in memory. */
export interface LoraStateDict {
  /** where it came from (for messages) */
  source: string;
  tensors: ReadonlyMap<string, Tensor>;
  metadata: Readonly<Record<string, string>>;
}

/** The 2-D weights a LoRA may change: module name (the parameter without `.weight`) -> [out, in]. */
export interface LoraTargetLayout {
  /** the model, for messages (e.g. WanTransformer3DModel) */
  model: string;
  modules: ReadonlyMap<string, readonly [number, number]>;
}

/** What one layer of the model receives from one LoRA: W += scale * up @ down. */
export interface LoraLayerDelta {
  /** the model module (its parameter is `${module}.weight`) */
  module: string;
  /** B [out, rank]: the file's up tensor, a row block of it (fused projections) or its halves swapped */
  up: Tensor;
  /** A [rank, in] */
  down: Tensor;
  rank: number;
  alpha: number;
  /** alpha / rank (alpha / sqrt(rank) for rsLoRA); the strength multiplies it */
  scale: number;
  /** the file's key of the down tensor (for messages) */
  key: string;
}

export type LoraKeyStyle = 'peft' | 'kohya';
export type LoraNaming = 'diffusers' | 'original';

/** A LoRA file matched against one model: one delta per model layer it changes. */
export interface ResolvedLora {
  /** lora_A/lora_B pairs, lora_down/lora_up pairs, or both */
  styles: LoraKeyStyle[];
  /** whether the file used the diffusers module names, the original checkpoint's, or both */
  namings: LoraNaming[];
  layers: LoraLayerDelta[];
  /** frees the tensors made for this resolution (views and reordered copies; the file's tensors stay) */
  dispose(): void;
}

// ------------------------------------------------------------------------------------------ keys

type Part = 'down' | 'up' | 'alpha';

interface ParsedKey {
  key: string;
  /** module path as the file writes it, prefixes and suffix removed */
  path: string;
  /** the path writes dots as underscores (kohya `lora_unet_` keys) */
  underscored: boolean;
  part: Part;
  style: LoraKeyStyle | null;
}

/** Suffixes of plain LoRA tensors, longest first. */
const SUFFIXES: ReadonlyArray<[suffix: string, part: Part, style: LoraKeyStyle | null]> = [
  ['.lora_A.weight', 'down', 'peft'],
  ['.lora_B.weight', 'up', 'peft'],
  ['.lora_down.weight', 'down', 'kohya'],
  ['.lora_up.weight', 'up', 'kohya'],
  ['.lora.down.weight', 'down', 'kohya'],
  ['.lora.up.weight', 'up', 'kohya'],
  ['.alpha', 'alpha', null],
];

/** Tensors of adapter kinds other than plain LoRA, recognised to say so. */
const OTHER_KINDS: ReadonlyArray<[RegExp, string]> = [
  [/\.(dora_scale|lora_magnitude_vector)(\.weight)?$/, 'DoRA'],
  [/\.lora_mid\.weight$/, 'LoCon (lora_mid)'],
  [/\.hada_(w|t)\d_[ab]$/, 'LoHa'],
  [/\.lokr_(w|t)\d(_[ab])?$/, 'LoKr'],
  [/\.diff(_b)?$/, 'full weight difference (diff / diff_b)'],
  [/\.lora_B\.bias$|\.lora_up\.bias$/, 'LoRA bias'],
];

/** Prefixes naming the denoiser (stripped); the second element says whether the path is underscored. */
const DENOISER_PREFIXES: ReadonlyArray<[string, boolean]> = [
  ['transformer.', false],
  ['model.diffusion_model.', false],
  ['diffusion_model.', false],
  ['lora_unet__', true],
  ['lora_unet_', true],
  ['lora_transformer_', true],
];

/** Prefixes of LoRA weights for other components. */
const OTHER_COMPONENTS = /^(text_encoder(_\d)?|text_encoders|te\d?|lora_te\d?|unet_te|vae|image_encoder)[._]/;

function parseKey(key: string): ParsedKey {
  for (const [re, kind] of OTHER_KINDS)
    if (re.test(key)) throw new LoraError(`key '${key}' is a ${kind} tensor: only plain LoRA (A/B or down/up pairs with an optional alpha) can be applied`, key);
  let rest = key.startsWith('base_model.model.') ? key.slice('base_model.model.'.length) : key;
  if (OTHER_COMPONENTS.test(rest)) throw new LoraError(`key '${key}' belongs to a text encoder or another component: only the denoiser takes LoRA weights here`, key);
  let underscored = false;
  for (const [prefix, u] of DENOISER_PREFIXES) {
    if (rest.startsWith(prefix)) {
      rest = rest.slice(prefix.length);
      underscored = u;
      break;
    }
  }
  for (const [suffix, part, style] of SUFFIXES) {
    if (rest.endsWith(suffix) && rest.length > suffix.length) {
      return { key, path: rest.slice(0, -suffix.length), underscored, part, style };
    }
  }
  throw new LoraError(`key '${key}' is not a LoRA tensor (expected <module>.lora_A.weight / .lora_B.weight, .lora_down.weight / .lora_up.weight or .alpha)`, key);
}

// ------------------------------------------------------------------------------------------ module names

/** How a file's module maps onto one model module: whole, one of `parts` equal row blocks of B, or B with its two halves swapped. */
type Rows = { kind: 'all' } | { kind: 'part'; index: number; parts: number } | { kind: 'swap_halves' };

interface Target {
  module: string;
  rows: Rows;
}

interface NameMatch {
  targets: Target[];
  naming: LoraNaming;
}

/** Original-checkpoint names of single diffusers modules: [pattern over the diffusers name, original name]. */
const ORIGINAL_NAMES: ReadonlyArray<[RegExp, string]> = [
  // Wan2.1 (diffusers scripts/convert_wan_to_diffusers.py, inverted)
  [/^blocks\.(\d+)\.attn1\.to_([qkv])$/, 'blocks.$1.self_attn.$2'],
  [/^blocks\.(\d+)\.attn1\.to_out\.0$/, 'blocks.$1.self_attn.o'],
  [/^blocks\.(\d+)\.attn2\.to_([qkv])$/, 'blocks.$1.cross_attn.$2'],
  [/^blocks\.(\d+)\.attn2\.to_out\.0$/, 'blocks.$1.cross_attn.o'],
  [/^blocks\.(\d+)\.attn2\.add_k_proj$/, 'blocks.$1.cross_attn.k_img'],
  [/^blocks\.(\d+)\.attn2\.add_v_proj$/, 'blocks.$1.cross_attn.v_img'],
  [/^blocks\.(\d+)\.ffn\.net\.0\.proj$/, 'blocks.$1.ffn.0'],
  [/^blocks\.(\d+)\.ffn\.net\.2$/, 'blocks.$1.ffn.2'],
  [/^condition_embedder\.time_embedder\.linear_1$/, 'time_embedding.0'],
  [/^condition_embedder\.time_embedder\.linear_2$/, 'time_embedding.2'],
  [/^condition_embedder\.text_embedder\.linear_1$/, 'text_embedding.0'],
  [/^condition_embedder\.text_embedder\.linear_2$/, 'text_embedding.2'],
  [/^condition_embedder\.time_proj$/, 'time_projection.1'],
  [/^proj_out$/, 'head.head'],
  // Z-Image (the original checkpoint calls the attention output `out`)
  [/^((?:layers|noise_refiner|context_refiner)\.\d+)\.attention\.to_out\.0$/, '$1.attention.out'],
  // FLUX.2 (BFL checkpoint names)
  [/^transformer_blocks\.(\d+)\.attn\.to_out\.0$/, 'double_blocks.$1.img_attn.proj'],
  [/^transformer_blocks\.(\d+)\.attn\.to_add_out$/, 'double_blocks.$1.txt_attn.proj'],
  [/^transformer_blocks\.(\d+)\.ff\.linear_in$/, 'double_blocks.$1.img_mlp.0'],
  [/^transformer_blocks\.(\d+)\.ff\.linear_out$/, 'double_blocks.$1.img_mlp.2'],
  [/^transformer_blocks\.(\d+)\.ff_context\.linear_in$/, 'double_blocks.$1.txt_mlp.0'],
  [/^transformer_blocks\.(\d+)\.ff_context\.linear_out$/, 'double_blocks.$1.txt_mlp.2'],
  [/^single_transformer_blocks\.(\d+)\.attn\.to_qkv_mlp_proj$/, 'single_blocks.$1.linear1'],
  [/^single_transformer_blocks\.(\d+)\.attn\.to_out$/, 'single_blocks.$1.linear2'],
  [/^(double_stream_modulation_(?:img|txt)|single_stream_modulation)\.linear$/, '$1.lin'],
  [/^context_embedder$/, 'txt_in'],
  [/^x_embedder$/, 'img_in'],
  [/^time_guidance_embed\.timestep_embedder\.linear_1$/, 'time_in.in_layer'],
  [/^time_guidance_embed\.timestep_embedder\.linear_2$/, 'time_in.out_layer'],
  [/^proj_out$/, 'final_layer.linear'],
];

/** Original modules whose one weight is several diffusers modules stacked by rows (q, k, v). */
const FUSED_ORIGINALS: ReadonlyArray<[first: RegExp, members: (m: RegExpExecArray) => string[], original: string]> = [
  [/^((?:layers|noise_refiner|context_refiner)\.\d+)\.attention\.to_q$/, (m) => ['to_q', 'to_k', 'to_v'].map((p) => `${m[1]}.attention.${p}`), '$1.attention.qkv'],
  [/^transformer_blocks\.(\d+)\.attn\.to_q$/, (m) => ['to_q', 'to_k', 'to_v'].map((p) => `transformer_blocks.${m[1]}.attn.${p}`), 'double_blocks.$1.img_attn.qkv'],
  [/^transformer_blocks\.(\d+)\.attn\.add_q_proj$/, (m) => ['add_q_proj', 'add_k_proj', 'add_v_proj'].map((p) => `transformer_blocks.${m[1]}.attn.${p}`), 'double_blocks.$1.txt_attn.qkv'],
];

/**
 * Original modules whose rows are a diffusers module's with the two halves exchanged: the BFL final
 * layer computes (shift, scale), diffusers' norm_out (scale, shift).
 */
const SWAPPED_ORIGINALS: ReadonlyArray<[RegExp, string]> = [[/^norm_out\.linear$/, 'final_layer.adaLN_modulation.1']];

interface ModuleIndex {
  dotted: Map<string, NameMatch>;
  /** underscored names; null marks a name two different modules share */
  underscored: Map<string, NameMatch | null>;
}

const indexCache = new WeakMap<LoraTargetLayout, ModuleIndex>();

function moduleIndex(layout: LoraTargetLayout): ModuleIndex {
  const cached = indexCache.get(layout);
  if (cached) return cached;
  const dotted = new Map<string, NameMatch>();
  const add = (name: string, match: NameMatch) => {
    if (!dotted.has(name)) dotted.set(name, match);
  };
  for (const m of layout.modules.keys()) add(m, { targets: [{ module: m, rows: { kind: 'all' } }], naming: 'diffusers' });
  for (const m of layout.modules.keys()) {
    for (const [re, original] of ORIGINAL_NAMES)
      if (re.test(m)) add(m.replace(re, original), { targets: [{ module: m, rows: { kind: 'all' } }], naming: 'original' });
    for (const [re, original] of SWAPPED_ORIGINALS)
      if (re.test(m) && (layout.modules.get(m)![0] % 2 === 0)) add(m.replace(re, original), { targets: [{ module: m, rows: { kind: 'swap_halves' } }], naming: 'original' });
    for (const [re, members, original] of FUSED_ORIGINALS) {
      const hit = re.exec(m);
      if (!hit) continue;
      const names = members(hit);
      const shapes = names.map((n) => layout.modules.get(n));
      const first = shapes[0]!;
      if (shapes.every((s) => s && s[0] === first[0] && s[1] === first[1]))
        add(m.replace(re, original), { targets: names.map((module, index) => ({ module, rows: { kind: 'part', index, parts: names.length } })), naming: 'original' });
    }
  }
  const underscored = new Map<string, NameMatch | null>();
  for (const [name, match] of dotted) {
    const u = name.replace(/\./g, '_');
    const prev = underscored.get(u);
    if (prev === undefined) underscored.set(u, match);
    else if (prev !== null && !sameTargets(prev, match)) underscored.set(u, null);
  }
  const index = { dotted, underscored };
  indexCache.set(layout, index);
  return index;
}

function sameTargets(a: NameMatch, b: NameMatch): boolean {
  return a.targets.length === b.targets.length && a.targets.every((t, i) => t.module === b.targets[i]!.module && JSON.stringify(t.rows) === JSON.stringify(b.targets[i]!.rows));
}

function lookup(index: ModuleIndex, p: ParsedKey, model: string): NameMatch {
  if (!p.underscored) {
    const hit = index.dotted.get(p.path);
    if (hit) return hit;
    throw new LoraError(`key '${p.key}' names the layer '${p.path}', which ${model} does not have (a LoRA for another model?)`, p.key);
  }
  const hit = index.underscored.get(p.path);
  if (hit) return hit;
  if (hit === null) throw new LoraError(`key '${p.key}': '${p.path}' fits more than one layer of ${model} once underscores are read as dots`, p.key);
  throw new LoraError(`key '${p.key}' names the layer '${p.path}', which ${model} does not have (a LoRA for another model?)`, p.key);
}

// ------------------------------------------------------------------------------------------ alpha from PEFT metadata

interface PeftConfig {
  loraAlpha: number | null;
  alphaPattern: Record<string, number>;
  rslora: boolean;
}

/** The PEFT LoraConfig the diffusers writer stores as `lora_adapter_metadata` (keys prefixed `transformer.` or bare). */
function peftConfig(sd: LoraStateDict): PeftConfig | null {
  const raw = sd.metadata.lora_adapter_metadata;
  if (raw === undefined) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (err) {
    throw new LoraError(`${sd.source}: the header's lora_adapter_metadata is not valid JSON (${(err as Error).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
    throw new LoraError(`${sd.source}: the header's lora_adapter_metadata must be a JSON object`);
  const o = parsed as Record<string, unknown>;
  const field = (name: string): unknown => (`transformer.${name}` in o ? o[`transformer.${name}`] : o[name]);
  if (field('use_dora') === true) throw new LoraError(`${sd.source}: the adapter is DoRA (use_dora): only plain LoRA can be applied`);
  const alpha = field('lora_alpha');
  if (alpha !== undefined && alpha !== null && !(typeof alpha === 'number' && Number.isFinite(alpha)))
    throw new LoraError(`${sd.source}: lora_adapter_metadata lora_alpha must be a number, got ${JSON.stringify(alpha)}`);
  const pattern = field('alpha_pattern');
  const alphaPattern: Record<string, number> = {};
  if (pattern && typeof pattern === 'object' && !Array.isArray(pattern)) {
    for (const [k, v] of Object.entries(pattern as Record<string, unknown>)) {
      if (typeof v !== 'number' || !Number.isFinite(v)) throw new LoraError(`${sd.source}: lora_adapter_metadata alpha_pattern['${k}'] must be a number`);
      alphaPattern[k] = v;
    }
  }
  return { loraAlpha: typeof alpha === 'number' ? alpha : null, alphaPattern, rslora: field('use_rslora') === true };
}

/** PEFT's pattern rule: a pattern key applies to a module whose name is it or ends with `.<key>` (keys are regular expressions). */
function patternAlpha(pattern: Record<string, number>, module: string): number | undefined {
  for (const [k, v] of Object.entries(pattern)) {
    let hit: boolean;
    try {
      hit = new RegExp(`^(.*\\.)?(${k})$`).test(module);
    } catch {
      hit = module === k || module.endsWith(`.${k}`);
    }
    if (hit) return v;
  }
  return undefined;
}

// ------------------------------------------------------------------------------------------ resolution

const FLOAT_DTYPES: readonly DType[] = ['float32', 'bfloat16', 'float16'];

interface Group {
  path: string;
  underscored: boolean;
  match: NameMatch;
  down?: ParsedKey;
  up?: ParsedKey;
  alpha?: ParsedKey;
  style: LoraKeyStyle | null;
}

function shapeText(s: readonly number[]): string {
  return `[${s.join(', ')}]`;
}

/**
 * Matches a LoRA file against a model's layers. Throws LoraError naming the first offending key (in
 * file order) for a key of no known kind, a layer the model lacks, a tensor of the wrong rank, dtype
 * or shape, a down without its up (or the reverse), an alpha that is not one finite number, or two
 * keys changing the same layer.
 */
export function resolveLora(sd: LoraStateDict, layout: LoraTargetLayout): ResolvedLora {
  if (sd.tensors.size === 0) throw new LoraError(`${sd.source} holds no tensors`);
  const index = moduleIndex(layout);
  const groups = new Map<string, Group>();
  for (const [key, t] of sd.tensors) {
    const p = parseKey(key);
    const id = `${p.underscored ? 'u' : 'd'}:${p.path}`;
    let g = groups.get(id);
    if (!g) {
      g = { path: p.path, underscored: p.underscored, match: lookup(index, p, layout.model), style: null };
      groups.set(id, g);
    }
    if (g[p.part]) throw new LoraError(`key '${key}' repeats the ${p.part} tensor of '${p.path}' (also '${g[p.part]!.key}')`, key);
    g[p.part] = p;
    if (p.style) {
      if (g.style && g.style !== p.style) throw new LoraError(`key '${key}' mixes lora_A/lora_B and lora_down/lora_up names for '${p.path}'`, key);
      g.style = p.style;
    }
    if (p.part === 'alpha') {
      if (t.numel !== 1 || !FLOAT_DTYPES.includes(t.dtype)) throw new LoraError(`key '${key}': alpha must be one floating-point number, got ${t.dtype} ${shapeText(t.shape)}`, key);
      const a = t.item();
      if (!Number.isFinite(a)) throw new LoraError(`key '${key}': alpha is ${a}`, key);
      continue;
    }
    if (!FLOAT_DTYPES.includes(t.dtype)) throw new LoraError(`key '${key}' is ${t.dtype}: LoRA weights must be float32, bfloat16 or float16`, key);
    // 2-D for linear layers; a conv layer's LoRA (a patch embedding) has kernel dims: down
    // [rank, in, k...] flattens onto the model's [out, in * k...] view, up is [out, rank, 1...]
    const convUp = p.part === 'up' && t.ndim > 2 && t.shape.slice(2).every((d) => d === 1);
    if (t.ndim < 2 || (t.ndim > 2 && p.part === 'up' && !convUp))
      throw new LoraError(`key '${key}' has shape ${shapeText(t.shape)}: LoRA ${p.part} weights are 2-D`, key);
    const target = layout.modules.get(g.match.targets[0]!.module)!;
    const parts = g.match.targets.length;
    const inputs = t.shape.slice(1).reduce((a, b) => a * b, 1);
    if (p.part === 'down' && inputs !== target[1])
      throw new LoraError(`key '${key}' has shape ${shapeText(t.shape)}, but ${g.match.targets[0]!.module} takes ${target[1]} inputs (a LoRA for another model size?)`, key);
    if (p.part === 'up' && t.shape[0] !== target[0] * parts)
      throw new LoraError(`key '${key}' has shape ${shapeText(t.shape)}, but ${g.match.targets.map((x) => x.module).join(' + ')} ${parts > 1 ? 'have' : 'has'} ${target[0] * parts} outputs (a LoRA for another model size?)`, key);
  }

  const cfg = peftConfig(sd);
  const layers: LoraLayerDelta[] = [];
  const made: Tensor[] = [];
  const owner = new Map<string, string>();
  const styles = new Set<LoraKeyStyle>();
  const namings = new Set<LoraNaming>();
  try {
    for (const g of groups.values()) {
      const anyKey = (g.down ?? g.up ?? g.alpha)!.key;
      if (!g.down || !g.up) {
        const missing = !g.down ? 'down (lora_A / lora_down)' : 'up (lora_B / lora_up)';
        throw new LoraError(`key '${anyKey}' has no matching ${missing} tensor for '${g.path}'`, anyKey);
      }
      const storedDown = sd.tensors.get(g.down.key)!;
      const storedUp = sd.tensors.get(g.up.key)!;
      const rank = storedDown.shape[0]!;
      if (rank === 0 || storedUp.shape[1] !== rank)
        throw new LoraError(`key '${g.up.key}' has shape ${shapeText(storedUp.shape)}, but '${g.down.key}' has rank ${rank} (shape ${shapeText(storedDown.shape)})`, g.up.key);
      const as2d = (t: Tensor, cols: number) => (t.ndim === 2 ? t : made[made.push(keep(t.reshape(t.size(0), cols))) - 1]!);
      const down = as2d(storedDown, storedDown.numel / rank);
      const up = as2d(storedUp, rank);
      const alpha = g.alpha
        ? sd.tensors.get(g.alpha.key)!.item()
        : g.style === 'peft' && cfg
          ? (patternAlpha(cfg.alphaPattern, g.path) ?? cfg.loraAlpha ?? rank)
          : rank;
      const scale = cfg?.rslora && !g.alpha ? alpha / Math.sqrt(rank) : alpha / rank;
      styles.add(g.style!);
      namings.add(g.match.naming);
      for (const target of g.match.targets) {
        const prev = owner.get(target.module);
        if (prev !== undefined) throw new LoraError(`key '${g.down.key}' changes ${target.module}, which '${prev}' already changes`, g.down.key);
        owner.set(target.module, g.down.key);
        const rows = layout.modules.get(target.module)![0];
        let targetUp = up;
        if (target.rows.kind === 'part') {
          targetUp = keep(up.slice(0, target.rows.index * rows, (target.rows.index + 1) * rows));
          made.push(targetUp);
        } else if (target.rows.kind === 'swap_halves') {
          const half = rows / 2;
          targetUp = keep(scope(() => concat([up.slice(0, half, rows), up.slice(0, 0, half)], 0)));
          made.push(targetUp);
        }
        layers.push({ module: target.module, up: targetUp, down, rank, alpha, scale, key: g.down.key });
      }
    }
  } catch (err) {
    for (const t of made) t.dispose();
    throw err;
  }
  return {
    styles: [...styles],
    namings: [...namings],
    layers,
    dispose() {
      for (const t of made) t.dispose();
      made.length = 0;
    },
  };
}

/** The layout of a model that exposes parameterNames() / parameter(): its 2-D `.weight` parameters. */
export function targetLayout(model: string, source: { parameterNames(): string[]; parameter(name: string): Tensor }): LoraTargetLayout {
  const modules = new Map<string, readonly [number, number]>();
  for (const name of source.parameterNames()) {
    if (!name.endsWith('.weight')) continue;
    const t = source.parameter(name);
    if (t.ndim === 2) modules.set(name.slice(0, -'.weight'.length), [t.shape[0]!, t.shape[1]!]);
  }
  return { model, modules };
}
