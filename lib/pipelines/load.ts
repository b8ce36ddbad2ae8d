// loadPipeline: a local diffusers folder, a Hugging Face repo id or a built-in `demo:<family>` model
// -> the Pipeline implementation registered for model_index.json's _class_name.
import { mkdir, rename, rm } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { empty, type Device } from '../engine/tensor.js';
import { type ComponentOverrides, type ModelIndex, readModelIndex } from '../io/diffusers.js';
import { type DownloadProgress, type ModelDownloadOptions, resolveModelPath } from '../io/hub/index.js';
import type { ParallelGroups } from '../parallel/groups.js';
import type { Pipeline } from './types.js';

export type DeviceChoice = 'cpu' | 'cuda' | 'auto' | `cuda:${number}`;

export interface LoadPipelineOptions extends Omit<ModelDownloadOptions, 'onProgress'> {
  /** where to compute; 'auto' takes CUDA when a device is usable, else the CPU (default) */
  device?: DeviceChoice;
  /** local folders replacing component subfolders, keyed by component (text_encoder, vae, ...) */
  componentPaths?: ComponentOverrides;
  /** release the text encoder after each prompt encoding (always done on the CPU) */
  textEncoderCpuOffload?: boolean;
  /** download progress of hub models */
  onProgress?: (p: DownloadProgress) => void;
  /**
   * This process is one rank of several running the pipeline in lockstep (lib/parallel); only
   * pipelines registered with `parallel: true` accept a world of more than one rank.
   */
  parallel?: ParallelGroups | null;
}

/** What a pipeline factory receives: the resolved folder and options. */
export interface PipelineLoadContext {
  /** local diffusers folder */
  modelDir: string;
  /** what the user passed (a path, a repo id or demo:<family>), reported as the model path */
  modelPath: string;
  index: ModelIndex;
  device: Device;
  componentPaths: ComponentOverrides;
  textEncoderCpuOffload: boolean;
  /** the rank's parallel groups (null: a single process) */
  parallel: ParallelGroups | null;
}

export type PipelineFactory = (ctx: PipelineLoadContext) => Promise<Pipeline>;

/** Writes a complete demo model folder (model_index.json and every component) into dir. */
export type DemoGenerator = (dir: string) => Promise<void>;

interface DemoModel {
  /** bumped when the generated content changes, so stale caches are regenerated */
  version: number;
  generate: DemoGenerator;
}

export interface PipelineCapabilities {
  /** runs as several ranks (sequence parallelism / CFG-parallel) */
  parallel?: boolean;
}

const factories = new Map<string, PipelineFactory>();
const capabilities = new Map<string, PipelineCapabilities>();
const demos = new Map<string, DemoModel>();

/** Registers the implementation of a diffusers pipeline class (model_index.json _class_name). */
export function registerPipeline(className: string, factory: PipelineFactory, caps: PipelineCapabilities = {}): void {
  if (factories.has(className)) throw new Error(`a pipeline for ${className} is already registered`);
  factories.set(className, factory);
  capabilities.set(className, caps);
}

/** Registers the generator of the built-in `demo:<family>` model. */
export function registerDemo(family: string, version: number, generate: DemoGenerator): void {
  if (demos.has(family)) throw new Error(`a demo model '${family}' is already registered`);
  demos.set(family, { version, generate });
}

/** The folder demo models are generated into: ND_DEMO_CACHE or ~/.cache/node-diffusion/demo. */
export function demoCacheDir(): string {
  return resolve(process.env.ND_DEMO_CACHE || join(homedir(), '.cache', 'node-diffusion', 'demo'));
}

let demoSerial = 0;

/**
 * The folder of `demo:<family>`, generated on first use. Generation writes into a private
 * temporary folder that is renamed into place, so concurrent processes and interrupted runs never
 * leave a partial model behind.
 */
export async function demoModelDir(id: string): Promise<string> {
  await import('./all.js');
  const family = id.slice('demo:'.length);
  const demo = demos.get(family);
  if (!demo) throw new Error(`unknown demo model '${id}' (available: ${[...demos.keys()].map((f) => `demo:${f}`).join(', ') || 'none'})`);
  const root = demoCacheDir();
  const dir = join(root, `${family}-v${demo.version}`);
  try {
    await readModelIndex(dir);
    return dir;
  } catch {
    // absent or incomplete: generate it
  }
  await mkdir(root, { recursive: true });
  const tmp = join(root, `.${family}-v${demo.version}.${process.pid}.${++demoSerial}.tmp`);
  await rm(tmp, { recursive: true, force: true });
  try {
    await demo.generate(tmp);
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    // another process may have completed the same folder first
    try {
      await readModelIndex(dir);
      return dir;
    } catch {
      throw err;
    }
  }
  return dir;
}

/** 'auto' -> CUDA when tensors can be created there, else the CPU. */
export function resolveDevice(choice: DeviceChoice = 'cpu'): Device {
  if (choice !== 'auto') {
    if (choice !== 'cpu' && !/^cuda(:\d+)?$/.test(choice)) throw new Error(`unknown device '${choice}' (cpu, cuda, cuda:N or auto)`);
    return choice;
  }
  try {
    empty([1], { device: 'cuda' }).dispose();
    return 'cuda';
  } catch {
    return 'cpu';
  }
}

/**
 * Loads the pipeline of a model: a local diffusers folder, a Hugging Face repo id (downloaded into
 * the hub cache when missing) or `demo:<family>`.
 */
export async function loadPipeline(modelPathOrId: string, opts: LoadPipelineOptions = {}): Promise<Pipeline> {
  await import('./all.js');
  const { device, componentPaths, textEncoderCpuOffload, onProgress, parallel, ...hub } = opts;
  const resolvedDevice = resolveDevice(device);
  const modelDir = modelPathOrId.startsWith('demo:')
    ? await demoModelDir(modelPathOrId)
    : await resolveModelPath(modelPathOrId, { ...hub, ...(onProgress ? { onProgress } : {}) });
  const index = await readModelIndex(modelDir);
  const factory = factories.get(index.className);
  if (!factory)
    throw new Error(
      `${join(modelDir, 'model_index.json')}: pipeline class ${index.className} is not supported (supported: ${[...factories.keys()].join(', ')})`,
    );
  if (parallel && parallel.config.worldSize > 1 && !capabilities.get(index.className)?.parallel)
    throw new Error(`${index.className} does not run on several ranks (--num-gpus ${parallel.config.worldSize}); serve it with --num-gpus 1`);
  return factory({
    modelDir,
    modelPath: modelPathOrId,
    index,
    device: resolvedDevice,
    componentPaths: componentPaths ?? {},
    textEncoderCpuOffload: textEncoderCpuOffload ?? false,
    parallel: parallel ?? null,
  });
}
