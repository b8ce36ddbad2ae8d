// The weights of one model component: a sharded checkpoint (*.safetensors.index.json) or the
// folder's .safetensors files, all memory-mapped; tensors are views, never copies.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { keep, type Tensor } from '../engine/tensor.js';
import { SafetensorsFile, type TensorInfo } from './safetensors.js';

/** A component's weights or an index that does not match its shards. */
export class WeightsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WeightsError';
  }
}

/** Standard file names, preferred when a folder also holds variants (fp16, ema, ...). */
const STANDARD_NAMES = ['diffusion_pytorch_model', 'model'];

/** Named tensors of one component, memory-mapped from one or more safetensors files. */
export class WeightSet {
  /** the files, in the order they were opened */
  readonly files: readonly SafetensorsFile[];
  /** __metadata__ of the files merged (the first file that sets a key wins) */
  readonly metadata: Readonly<Record<string, string>>;
  private readonly where = new Map<string, SafetensorsFile>();
  private readonly views = new Map<string, Tensor>();
  private disposed = false;

  /** @internal use openWeights / openWeightFile */
  constructor(files: SafetensorsFile[], assignment?: Map<string, SafetensorsFile>) {
    this.files = files;
    const meta: Record<string, string> = {};
    for (const f of files) for (const [k, v] of Object.entries(f.metadata)) if (!(k in meta)) meta[k] = v;
    this.metadata = Object.freeze(meta);
    if (assignment) {
      this.where = assignment;
      return;
    }
    for (const f of files)
      for (const name of f.names()) {
        const other = this.where.get(name);
        if (other) throw new WeightsError(`tensor '${name}' is stored twice: in ${other.path} and in ${f.path}`);
        this.where.set(name, f);
      }
  }

  names(): string[] {
    return [...this.where.keys()];
  }

  has(name: string): boolean {
    return this.where.has(name);
  }

  /** The file that holds name. */
  fileOf(name: string): SafetensorsFile {
    const f = this.where.get(name);
    if (!f) throw new WeightsError(`no tensor '${name}' in ${this.describe()}`);
    return f;
  }

  info(name: string): TensorInfo {
    return this.fileOf(name).info(name);
  }

  /**
   * The tensor as stored (dtype kept), a view of the mapped file. The WeightSet owns it: the same
   * handle is returned on every call, scopes never free it, and dispose() releases it. Callers
   * must not dispose it (a disposed view is recreated on the next call).
   */
  get(name: string): Tensor {
    if (this.disposed) throw new WeightsError(`weights of ${this.describe()} were disposed`);
    const cached = this.views.get(name);
    if (cached && !cached.disposed) return cached;
    const t = keep(this.fileOf(name).tensor(name));
    this.views.set(name, t);
    return t;
  }

  /** Total bytes of all tensors. */
  totalBytes(): number {
    let n = 0;
    for (const name of this.where.keys()) n += this.info(name).byteLength;
    return n;
  }

  /** Releases every view and unmaps every file. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const t of this.views.values()) t.dispose();
    this.views.clear();
    for (const f of this.files) f.dispose();
  }

  private describe(): string {
    return this.files.length === 1 ? this.files[0]!.path : `${this.files.length} files (${this.files.map((f) => basename(f.path)).join(', ')})`;
  }
}

function openAll(paths: string[]): SafetensorsFile[] {
  const files: SafetensorsFile[] = [];
  try {
    for (const p of paths) files.push(SafetensorsFile.open(p));
  } catch (err) {
    for (const f of files) f.dispose();
    throw err;
  }
  return files;
}

/** A shard file name from an index: a plain name inside the folder. */
function checkShardName(index: string, name: string): void {
  if (name === '' || name.includes('/') || name.includes('\\') || name === '.' || name === '..')
    throw new WeightsError(`${index}: shard '${name}' must be a file name inside the folder`);
}

function openIndexed(dir: string, indexPath: string): WeightSet {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(indexPath, 'utf8'));
  } catch (err) {
    throw new WeightsError(`${indexPath}: cannot read the index: ${(err as Error).message}`);
  }
  const weightMap = (parsed as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap))
    throw new WeightsError(`${indexPath}: 'weight_map' must be an object of tensor name -> shard file`);
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    if (typeof shard !== 'string') throw new WeightsError(`${indexPath}: shard of tensor '${name}' must be a file name`);
    checkShardName(indexPath, shard);
    const list = byShard.get(shard) ?? [];
    list.push(name);
    byShard.set(shard, list);
  }
  for (const shard of byShard.keys())
    if (!existsSync(join(dir, shard)))
      throw new WeightsError(`${indexPath}: shard ${shard} (holding '${byShard.get(shard)![0]}' and ${byShard.get(shard)!.length - 1} more) is missing from ${dir}`);
  const shards = [...byShard.keys()];
  const files = openAll(shards.map((s) => join(dir, s)));
  try {
    const assignment = new Map<string, SafetensorsFile>();
    shards.forEach((shard, i) => {
      const f = files[i]!;
      const expected = byShard.get(shard)!;
      for (const name of expected) {
        if (!f.has(name)) throw new WeightsError(`${indexPath}: tensor '${name}' is assigned to ${shard}, but that shard does not contain it`);
        assignment.set(name, f);
      }
      if (f.names().length !== expected.length) {
        const want = new Set(expected);
        const extra = f.names().find((n) => !want.has(n));
        throw new WeightsError(`${indexPath}: shard ${shard} holds tensor '${extra}' that the index does not assign to it`);
      }
    });
    return new WeightSet(files, assignment);
  } catch (err) {
    for (const f of files) f.dispose();
    throw err;
  }
}

/** The index file of a folder, if any (the standard name wins over variants). */
function findIndex(dir: string, entries: string[]): string | undefined {
  const indexes = entries.filter((e) => e.endsWith('.safetensors.index.json')).sort();
  if (indexes.length <= 1) return indexes[0];
  const standard = STANDARD_NAMES.map((n) => `${n}.safetensors.index.json`).find((n) => indexes.includes(n));
  if (standard) return standard;
  throw new WeightsError(`${dir} holds several checkpoint indexes (${indexes.join(', ')}); keep one`);
}

/**
 * Opens the weights of a component folder: its *.safetensors.index.json when there is one (every
 * shard must exist and hold exactly the tensors the index assigns it), else its .safetensors files
 * (the standard diffusion_pytorch_model / model file when present, else all of them).
 */
export async function openWeights(dir: string): Promise<WeightSet> {
  let entries: string[];
  try {
    if (!statSync(dir).isDirectory()) throw new WeightsError(`${dir} is not a folder`);
    entries = readdirSync(dir);
  } catch (err) {
    if (err instanceof WeightsError) throw err;
    throw new WeightsError(`cannot read the weights folder ${dir}: ${(err as Error).message}`);
  }
  const index = findIndex(dir, entries);
  if (index) return openIndexed(dir, join(dir, index));
  const files = entries.filter((e) => e.endsWith('.safetensors') && statSync(join(dir, e)).isFile()).sort();
  if (files.length === 0) {
    const bin = entries.filter((e) => e.endsWith('.bin') || e.endsWith('.pt') || e.endsWith('.ckpt'));
    throw new WeightsError(
      `no .safetensors weights in ${dir}` + (bin.length ? ` (found ${bin.join(', ')}: only safetensors weights are supported)` : ''),
    );
  }
  const standard = STANDARD_NAMES.map((n) => `${n}.safetensors`).find((n) => files.includes(n));
  return weightSetOf(standard ? [join(dir, standard)] : files.map((f) => join(dir, f)));
}

/** Opens one .safetensors file as a WeightSet. */
export async function openWeightFile(path: string): Promise<WeightSet> {
  return weightSetOf([path]);
}

function weightSetOf(paths: string[]): WeightSet {
  const files = openAll(paths);
  try {
    return new WeightSet(files);
  } catch (err) {
    for (const f of files) f.dispose();
    throw err;
  }
}
