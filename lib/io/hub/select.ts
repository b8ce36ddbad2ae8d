// Which files of a diffusers repo a pipeline needs, following diffusers' DiffusionPipeline.download:
// model_index.json, the folders of the components it names (weights and config.json from weight folders),
// a few root-level configs; safetensors preferred over pickle formats, non-variant weights over variants
// (fp16...), and no flax/onnx/tf files. A snapshot diffusers downloaded therefore counts as complete here.
import type { RemoteFile } from './client.js';
import { HubError } from './errors.js';

export const MODEL_INDEX = 'model_index.json';

/** Root-level files diffusers also fetches (configs, and a transformers component saved flat at the root). */
const ROOT_FILES = new Set([
  MODEL_INDEX,
  'config.json',
  'scheduler_config.json',
  'chat_template.jinja',
  'generation_config.json',
  'processor_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
]);

/** Weight formats of other frameworks (flax, onnx, tensorflow, rust, gguf, openvino/coreml) never fetched. */
const FOREIGN_FORMAT = /\.(msgpack|onnx|onnx_data|pb|h5|ot|gguf|tflite|mlmodel)(\.index\.json)?$/;
const PICKLE_FORMAT = /\.(bin|pt|pth|ckpt|pkl)(\.index\.json)?$/;
/** `name.safetensors`, `name-00001-of-00003.safetensors` and `name.safetensors.index.json`, but no variant tag. */
const PLAIN_SAFETENSORS = /^[^.]+\.safetensors(\.index\.json)?$/;
const SAFETENSORS_WEIGHTS = /\.safetensors$/;
/** Safetensors weights and index files, variants (`.fp16.safetensors`, `.safetensors.index.fp16.json`) included. */
const SAFETENSORS_RELATED = /\.safetensors$|\.safetensors\.index(\.[^.]+)?\.json$/;

/** Names of the components in model_index.json that have files (entries like [null, null] are absent). */
export function pipelineComponents(modelIndex: unknown): string[] {
  if (!modelIndex || typeof modelIndex !== 'object' || Array.isArray(modelIndex))
    throw new HubError('not_a_pipeline', `${MODEL_INDEX} is not a JSON object`);
  const names: string[] = [];
  for (const [key, value] of Object.entries(modelIndex as Record<string, unknown>)) {
    if (key.startsWith('_') || !Array.isArray(value)) continue;
    if (value.length === 2 && value.every((v) => typeof v === 'string')) names.push(key);
  }
  if (names.length === 0) throw new HubError('not_a_pipeline', `${MODEL_INDEX} names no components`);
  return names;
}

function dirOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i < 0 ? '' : path.slice(0, i);
}

function baseOf(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** The subset of `files` the pipeline described by `modelIndex` needs, in listing order. */
export function selectPipelineFiles(files: RemoteFile[], modelIndex: unknown): RemoteFile[] {
  const components = new Set(pipelineComponents(modelIndex));
  const inComponent = (p: string) => p.includes('/') && components.has(p.slice(0, p.indexOf('/')));

  // Per folder: does it hold safetensors weights, and does it hold plain (non-variant) ones?
  const hasSafetensors = new Set<string>();
  const hasPlainSafetensors = new Set<string>();
  for (const f of files) {
    if (!SAFETENSORS_WEIGHTS.test(f.path)) continue;
    hasSafetensors.add(dirOf(f.path));
    if (PLAIN_SAFETENSORS.test(baseOf(f.path))) hasPlainSafetensors.add(dirOf(f.path));
  }

  // Folders holding weights get their weights and config.json only (as diffusers fetches them); other
  // component folders (tokenizers, schedulers) get every file.
  const isWeights = (base: string) => SAFETENSORS_RELATED.test(base) || PICKLE_FORMAT.test(base) || FOREIGN_FORMAT.test(base);
  const weightDirs = new Set(files.filter((f) => isWeights(baseOf(f.path))).map((f) => dirOf(f.path)));

  return files.filter((f) => {
    const dir = dirOf(f.path);
    const base = baseOf(f.path);
    if (dir === '') return ROOT_FILES.has(base);
    if (!inComponent(f.path)) return false;
    if (weightDirs.has(dir) && !isWeights(base)) return base === 'config.json';
    if (FOREIGN_FORMAT.test(base)) return false;
    if (PICKLE_FORMAT.test(base) && hasSafetensors.has(dir)) return false;
    if (SAFETENSORS_RELATED.test(base) && hasPlainSafetensors.has(dir) && !PLAIN_SAFETENSORS.test(base)) return false;
    return true;
  });
}
