// Writing built-in demo models: deterministic random tensors for a list of (name, shape) scaled like
// a trained network, safetensors files (sharded with a diffusers index when asked), and the whole
// diffusers folder (model_index.json, scheduler, tokenizer, components), so demo folders look
// exactly like real checkpoints to the loaders.
import { copyFile, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DType } from '../../engine/dtype.js';
import { mul } from '../../engine/ops/basic.js';
import { disposeAll, elementSize, full, randn, scope, type Tensor } from '../../engine/tensor.js';
import { writeSafetensors } from '../../io/safetensors.js';

export type TensorShapes = Array<[name: string, shape: number[]]>;

/** How one tensor is initialised: 'one'/'zero' constants, or normal noise of this standard deviation. */
export type Init = 'one' | 'zero' | number;

/** 1/sqrt(fan_in): the standard deviation that keeps a layer's outputs at the scale of its inputs. */
export function fanInStd(shape: number[]): number {
  return 1 / Math.sqrt(shape.slice(1).reduce((a, b) => a * b, 1));
}

/**
 * The default initialisation: 1-D weights (norm gains) 1 and norm biases 0, other biases 0.02,
 * matrices, tables and conv kernels 1/sqrt(fan_in).
 */
export function defaultInit(name: string, shape: number[]): Init {
  if (shape.length === 1 && name.endsWith('.weight')) return 'one';
  if (/(^|[._])(norm[^.]*|layernorm|group_norm)\.bias$/.test(name)) return 'zero';
  if (name.endsWith('.bias')) return 0.02;
  return fanInStd(shape);
}

/** Random tensors for every (name, shape), initialised by `init`; tensor i draws from the Philox stream of seedBase + i. */
export function randomWeights(
  shapes: TensorShapes,
  seedBase: number,
  dtype: DType,
  init: (name: string, shape: number[]) => Init = defaultInit,
): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  shapes.forEach(([name, shape], i) => {
    const how = init(name, shape);
    out[name] = scope(() => {
      if (how === 'one') return full(shape, 1, { dtype });
      if (how === 'zero') return full(shape, 0, { dtype });
      return mul(randn(shape, { seed: seedBase + i }), how).to(dtype);
    });
  });
  return out;
}

export async function writeJson(path: string, value: unknown): Promise<void> {
  await writeFile(path, `${JSON.stringify(value, null, 2)}\n`);
}

/** Writes the safetensors of one component as <stem>.safetensors, or `shards` files plus <stem>.safetensors.index.json. */
export async function writeComponentWeights(dir: string, stem: string, tensors: Record<string, Tensor>, shards = 1): Promise<void> {
  if (shards === 1) {
    writeSafetensors(join(dir, `${stem}.safetensors`), tensors, { format: 'pt' });
    return;
  }
  const names = Object.keys(tensors);
  const per = Math.ceil(names.length / shards);
  const weightMap: Record<string, string> = {};
  let totalSize = 0;
  for (let s = 0; s < shards; ++s) {
    const file = `${stem}-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const part: Record<string, Tensor> = {};
    for (const name of names.slice(s * per, (s + 1) * per)) {
      const t = tensors[name]!;
      part[name] = t;
      weightMap[name] = file;
      totalSize += t.numel * elementSize(t.dtype);
    }
    writeSafetensors(join(dir, file), part, { format: 'pt' });
  }
  await writeJson(join(dir, `${stem}.safetensors.index.json`), { metadata: { total_size: totalSize }, weight_map: weightMap });
}

/** One weighted component of a demo folder. */
export interface DemoComponent {
  name: string;
  config: Record<string, unknown>;
  shapes: TensorShapes;
  dtype: DType;
  /** the safetensors file stem: model (transformers) or diffusion_pytorch_model (diffusers) */
  stem: string;
  /** safetensors files (default 1, without an index) */
  shards?: number;
  /** how each tensor is initialised (default defaultInit) */
  init?: (name: string, shape: number[]) => Init;
  /** tensors beyond the random ones, given the next unused seed */
  extra?: (seed: number) => Record<string, Tensor>;
}

export interface DemoFolder {
  modelIndex: Record<string, unknown>;
  scheduler: Record<string, unknown>;
  /** the folder the tokenizer files are copied from, and which of them (default all) */
  tokenizer: { dir: string; files?: string[] };
  components: DemoComponent[];
}

/**
 * Writes a demo model folder into dir: model_index.json, scheduler/scheduler_config.json, the
 * tokenizer files, and per component its config.json and random weights (component k's seeds start
 * at 1 + 100000 k).
 */
export async function writeDemoFolder(dir: string, folder: DemoFolder): Promise<void> {
  const sub = async (name: string) => {
    const d = join(dir, name);
    await mkdir(d, { recursive: true });
    return d;
  };
  await mkdir(dir, { recursive: true });
  await writeJson(join(dir, 'model_index.json'), folder.modelIndex);
  await writeJson(join(await sub('scheduler'), 'scheduler_config.json'), folder.scheduler);
  const tokenizerDir = await sub('tokenizer');
  const from = folder.tokenizer.dir;
  for (const f of folder.tokenizer.files ?? (await readdir(from))) await copyFile(join(from, f), join(tokenizerDir, f));

  let seedBase = 1;
  for (const c of folder.components) {
    const d = await sub(c.name);
    await writeJson(join(d, 'config.json'), c.config);
    const tensors = { ...randomWeights(c.shapes, seedBase, c.dtype, c.init), ...(c.extra?.(seedBase + c.shapes.length) ?? {}) };
    try {
      await writeComponentWeights(d, c.stem, tensors, c.shards);
    } finally {
      disposeAll(tensors);
    }
    seedBase += 100_000;
  }
}
