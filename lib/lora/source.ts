// Where a LoRA comes from: a .safetensors file, a folder holding one, or a Hugging Face repo id;
// read once into memory (the file is not needed afterwards).
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

import { keep, type Tensor } from '../engine/tensor.js';
import { repoIdProblem } from '../io/hub/names.js';
import { SafetensorsError, SafetensorsFile } from '../io/safetensors.js';
import type { LoraStateDict } from './formats.js';
import { LoraError } from './request.js';

/** File names the LoRA writers use, in the order a folder is searched for them. */
export const ADAPTER_FILE_NAMES = ['pytorch_lora_weights.safetensors', 'adapter_model.safetensors', 'lora.safetensors'];

/**
 * The adapter file of a folder: a file with one of the usual names, else its only .safetensors
 * file. Throws LoraError when there is none or the choice is ambiguous.
 */
export async function adapterFileIn(dir: string): Promise<string> {
  const names: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (!e.name.endsWith('.safetensors')) continue;
    // a symlink counts when it points to a file (hub snapshots link to their blobs)
    if (e.isFile() || (e.isSymbolicLink() && (await stat(join(dir, e.name)).then((s) => s.isFile(), () => false)))) names.push(e.name);
  }
  names.sort();
  for (const preferred of ADAPTER_FILE_NAMES) if (names.includes(preferred)) return join(dir, preferred);
  if (names.length === 1) return join(dir, names[0]!);
  if (names.length === 0) throw new LoraError(`the folder ${dir} holds no .safetensors file`);
  throw new LoraError(`the folder ${dir} holds ${names.length} .safetensors files (${names.slice(0, 4).join(', ')}${names.length > 4 ? ', ...' : ''}): name the adapter file itself`);
}

/** Resolves a local path: a file as is, a folder to the adapter file inside; null when nothing exists there. */
export async function localLoraFile(path: string): Promise<string | null> {
  let st;
  try {
    st = await stat(path);
  } catch {
    return null;
  }
  if (st.isDirectory()) return adapterFileIn(path);
  if (!st.isFile()) throw new LoraError(`${path} is not a file or folder`);
  return path;
}

/** Whether a string that names no local path could be a hub repo id (org/name). */
export function looksLikeRepoId(s: string): boolean {
  return repoIdProblem(s) === null;
}

/** Reads every tensor of a LoRA safetensors file into memory. Throws LoraError for unreadable or malformed files. */
export function readLoraFile(file: string, source = file): LoraStateDict {
  let f: SafetensorsFile;
  try {
    f = SafetensorsFile.open(file);
  } catch (err) {
    if (err instanceof SafetensorsError) throw new LoraError(`${source} is not a readable safetensors file: ${err.message}`, err.tensor ?? null);
    throw new LoraError(`cannot read ${source}: ${(err as Error).message}`);
  }
  const tensors = new Map<string, Tensor>();
  try {
    for (const name of f.names()) {
      const view = f.tensor(name);
      try {
        tensors.set(name, keep(view.clone()));
      } finally {
        view.dispose();
      }
    }
    return { source, tensors, metadata: { ...f.metadata } };
  } catch (err) {
    for (const t of tensors.values()) t.dispose();
    throw err;
  } finally {
    f.dispose();
  }
}

/** Frees the tensors of a state dict. */
export function disposeStateDict(sd: LoraStateDict): void {
  for (const t of sd.tensors.values()) t.dispose();
}
