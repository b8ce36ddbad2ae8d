// What the pipelines share around their model-specific stages: the component folders and models of a
// load, the `_sampling_defaults` of model_index.json, validation of the request fields every pipeline
// has, a text encoder kept loaded or loaded per use, seeded noise, the timings / progress reports /
// cancellation checks of a run, float [0, 1] -> 8-bit RGB, and the GenerateResult of a run.
import { affine, clamp, stack } from '../engine/ops/basic.js';
import { type Device, memoryStats, randn, scope, type Tensor } from '../engine/tensor.js';
import { resolveComponentDirs } from '../io/diffusers.js';
import type { PipelineLoadContext } from './load.js';
import {
  type GenerateRequest, type GenerateResult, type PipelineDefaults, type Progress, RequestError, type RgbImage, type Stage,
} from './types.js';

const MAX_SIDE = 4096;
const MAX_STEPS = 1000;
const MAX_OUTPUTS = 10;

// ---------------------------------------------------------------------------------------
// Loading

/** The components every pipeline here needs, each a folder. */
export type PipelineComponents = Record<'tokenizer' | 'text_encoder' | 'transformer' | 'vae' | 'scheduler', string>;

/** The folders of the tokenizer, text encoder, transformer, VAE and scheduler (overrides applied); throws when one is missing. */
export async function requireComponents(ctx: PipelineLoadContext, pipelineClass: string): Promise<PipelineComponents> {
  const dirs = await resolveComponentDirs(ctx.modelDir, ctx.componentPaths);
  for (const c of ['tokenizer', 'text_encoder', 'transformer', 'vae', 'scheduler'])
    if (!dirs[c]) throw new Error(`${ctx.modelDir}: ${pipelineClass} needs a '${c}' component`);
  return dirs as PipelineComponents;
}

interface Disposable {
  dispose(): void;
}

/** Runs `load`, which passes each model it loads through `own`; when it fails, the models owned so far are disposed. */
export async function loadModels<T>(load: (own: <M extends Disposable>(model: M) => M) => Promise<T>): Promise<T> {
  const loaded: Disposable[] = [];
  try {
    return await load((model) => {
      loaded.push(model);
      return model;
    });
  } catch (err) {
    for (const m of loaded) m.dispose();
    throw err;
  }
}

/** PipelineInfo's precision name of a weight dtype. */
export function precisionName(dtype: string): string {
  return dtype === 'bfloat16' ? 'bf16' : dtype === 'float16' ? 'fp16' : 'fp32';
}

/**
 * `base` with the overrides of model_index.json's `_sampling_defaults` (underscore keys are metadata
 * diffusers ignores; the demo models use it to stay fast), `fields` mapping each accepted key to its
 * field. A fresh object.
 */
export function samplingDefaults<T extends PipelineDefaults>(base: T, pipelineRaw: Record<string, unknown>, fields: Record<string, keyof T>): T {
  const merged: T = { ...base };
  const o = pipelineRaw._sampling_defaults;
  if (o === undefined) return merged;
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new Error('model_index.json: _sampling_defaults must be an object');
  for (const [key, value] of Object.entries(o)) {
    const field = fields[key];
    if (!field) throw new Error(`model_index.json: _sampling_defaults.${key} is not a sampling default (${Object.keys(fields).join(', ')})`);
    const isText = field === 'negativePrompt';
    if (isText ? typeof value !== 'string' : typeof value !== 'number' || !Number.isFinite(value))
      throw new Error(`model_index.json: _sampling_defaults.${key} must be a ${isText ? 'string' : 'number'}`);
    (merged as Record<keyof T, unknown>)[field] = value;
  }
  return merged;
}

/**
 * A text encoder kept loaded between requests (on an accelerator without text-encoder offload), or
 * loaded for each prompt encoding and released right after it (on the CPU, or with offload).
 */
export class TextEncoderSlot<E extends Disposable> {
  private constructor(
    private readonly load: () => Promise<E>,
    private kept: E | null,
  ) {}

  /** Loads the encoder now when it is to be kept. */
  static async open<E extends Disposable>(load: () => Promise<E>, keep: boolean): Promise<TextEncoderSlot<E>> {
    return new TextEncoderSlot(load, keep ? await load() : null);
  }

  /** Runs fn with the encoder: the kept one, or one loaded for this call and released after it. */
  async use<T>(fn: (encoder: E) => T): Promise<T> {
    const kept = this.kept;
    const encoder = kept ?? (await this.load());
    try {
      return fn(encoder);
    } finally {
      if (!kept) encoder.dispose();
    }
  }

  dispose(): void {
    this.kept?.dispose();
    this.kept = null;
  }
}

// ---------------------------------------------------------------------------------------
// Request validation (each throws a RequestError naming the field)

/** The prompt as a non-empty list of strings. */
export function requestPrompts(req: GenerateRequest): string[] {
  const prompts = typeof req.prompt === 'string' ? [req.prompt] : req.prompt;
  if (!Array.isArray(prompts) || prompts.length === 0 || prompts.some((p) => typeof p !== 'string'))
    throw new RequestError('prompt must be a string or a non-empty list of strings', 'prompt');
  return prompts;
}

/** v (or dflt when v is not given), which must be an integer in [min, max]. */
export function requestInt(v: number | undefined, dflt: number, name: string, min: number, max: number): number {
  const x = v ?? dflt;
  if (!Number.isInteger(x) || x < min || x > max) throw new RequestError(`${name} must be an integer in [${min}, ${max}], got ${v}`, name);
  return x;
}

/** Width and height (defaulting to dflt's), each at least min and a multiple of `multiple`. */
export function requestSize(req: GenerateRequest, dflt: { width: number; height: number }, min: number, multiple: number): { width: number; height: number } {
  const width = requestInt(req.width, dflt.width, 'width', min, MAX_SIDE);
  const height = requestInt(req.height, dflt.height, 'height', min, MAX_SIDE);
  if (width % multiple !== 0 || height % multiple !== 0)
    throw new RequestError(`width and height must be multiples of ${multiple}, got ${width}x${height}`, 'size');
  return { width, height };
}

/** Steps, guidance scale, outputs per prompt, seed and negative prompt, defaulting to the model's. */
export function requestSampling(
  req: GenerateRequest,
  d: PipelineDefaults,
): { numInferenceSteps: number; guidanceScale: number; numOutputs: number; seed: number; negativePrompt: string } {
  const numInferenceSteps = requestInt(req.numInferenceSteps, d.numInferenceSteps, 'num_inference_steps', 1, MAX_STEPS);
  const guidanceScale = req.guidanceScale ?? d.guidanceScale;
  if (typeof guidanceScale !== 'number' || !Number.isFinite(guidanceScale) || guidanceScale < 0 || guidanceScale > 100)
    throw new RequestError(`guidance_scale must be a number in [0, 100], got ${req.guidanceScale}`, 'guidance_scale');
  const numOutputs = requestInt(req.numOutputs, 1, 'n', 1, MAX_OUTPUTS);
  const seed = requestInt(req.seed, 42, 'seed', 0, Number.MAX_SAFE_INTEGER);
  const negativePrompt = req.negativePrompt ?? d.negativePrompt;
  if (typeof negativePrompt !== 'string') throw new RequestError('negative_prompt must be a string', 'negative_prompt');
  return { numInferenceSteps, guidanceScale, numOutputs, seed, negativePrompt };
}

/**
 * The seeds of the request's `items` output items: req.seeds when given (each an integer in
 * [0, 2^53 - 1], one per item), else seed, seed + 1, ... (item j draws from the stream of seed + j).
 */
export function requestSeeds(req: GenerateRequest, seed: number, items: number): number[] {
  const seeds = req.seeds;
  if (seeds === undefined) return Array.from({ length: items }, (_, j) => seed + j);
  if (!Array.isArray(seeds) || seeds.length !== items)
    throw new RequestError(`seeds must be a list of ${items} seeds (one per output: prompts x n), got ${Array.isArray(seeds) ? seeds.length : typeof seeds}`, 'seeds');
  const bad = seeds.findIndex((s) => !Number.isInteger(s) || s < 0 || s > Number.MAX_SAFE_INTEGER);
  if (bad >= 0) throw new RequestError(`seeds[${bad}] must be an integer in [0, ${Number.MAX_SAFE_INTEGER}], got ${seeds[bad]}`, 'seeds');
  return [...seeds];
}

/** Throws unless the given initial latents (if any) have the expected shape. */
export function checkRequestLatents(latents: Tensor | undefined, expected: number[]): void {
  if (latents && (latents.ndim !== expected.length || latents.shape.some((s, i) => s !== expected[i])))
    throw new RequestError(`latents must be [${expected}] for this request, got [${latents.shape}]`, 'latents');
}

/** The output type ('rgb' when not given). */
export function requestOutputType(req: GenerateRequest): NonNullable<GenerateRequest['outputType']> {
  const outputType = req.outputType ?? 'rgb';
  if (!['rgb', 'float', 'latent'].includes(outputType)) throw new RequestError(`output_type must be rgb, float or latent, got ${outputType}`, 'output_type');
  return outputType;
}

// ---------------------------------------------------------------------------------------
// Running

/** What every pipeline's run() computes from: a fully resolved request. */
export interface RunParams {
  prompts: string[];
  negativePrompt: string;
  width: number;
  height: number;
  numInferenceSteps: number;
  guidanceScale: number;
  numOutputs: number;
  seed: number;
  /** the seed of each output item's noise (prompts x numOutputs); default seed, seed + 1, ... */
  seeds?: number[];
  /** initial noise in the pipeline's latent shape instead of seeded noise */
  latents?: Tensor;
  /** stop after denoising (no VAE decode) */
  decode: boolean;
  onProgress?: (p: Progress) => void | Promise<void>;
  /** receives the latents after every scheduler step (a tensor the caller may keep until the next step) */
  onStepLatents?: (step: number, latents: Tensor) => void;
  signal?: AbortSignal;
}

/** The RunParams of a request that validate() resolved. */
export function runParamsOf(req: GenerateRequest): RunParams {
  return {
    prompts: req.prompt as string[],
    negativePrompt: req.negativePrompt as string,
    width: req.width as number,
    height: req.height as number,
    numInferenceSteps: req.numInferenceSteps as number,
    guidanceScale: req.guidanceScale as number,
    numOutputs: req.numOutputs as number,
    seed: req.seed as number,
    ...(req.seeds ? { seeds: req.seeds } : {}),
    ...(req.latents ? { latents: req.latents } : {}),
    decode: (req.outputType ?? 'rgb') !== 'latent',
    ...(req.onProgress ? { onProgress: req.onProgress } : {}),
    ...(req.signal ? { signal: req.signal } : {}),
  };
}

/** The noise seed of each of a run's `batch` output items: p.seeds, or seed, seed + 1, ... */
export function itemSeeds(p: Pick<RunParams, 'seed' | 'seeds'>, batch: number): number[] {
  if (p.seeds && p.seeds.length !== batch) throw new RequestError(`seeds must be a list of ${batch} seeds, got ${p.seeds.length}`, 'seeds');
  return p.seeds ?? Array.from({ length: batch }, (_, j) => p.seed + j);
}

/** Seeded noise [B, ...]: item j draws from the Philox stream of seeds[j] (B = seeds.length). */
export function seededNoise(shape: number[], seeds: number[], device: Device): Tensor {
  const [b, ...rest] = shape as [number, ...number[]];
  if (b !== seeds.length) throw new Error(`seededNoise: ${seeds.length} seeds for a batch of ${b}`);
  return scope(() => stack(seeds.map((seed) => randn(rest, { seed, device })), 0));
}

/**
 * The bookkeeping of one run: how long each stage took, the progress reports (awaited) after each
 * stage and denoising step, and the cancellation check at step boundaries.
 */
export class RunStages {
  readonly timings: Record<string, number> = {};
  /** throws when the run is to stop (an AbortError when the signal fired) */
  readonly checkAbort: () => void;

  constructor(
    private readonly p: Pick<RunParams, 'numInferenceSteps' | 'onProgress' | 'onStepLatents' | 'signal'>,
    checkAbort?: () => void,
  ) {
    this.checkAbort = checkAbort ?? (() => p.signal?.throwIfAborted());
  }

  /** Records how long `stage` took since `since` (a performance.now() reading). */
  time(stage: Stage, since: number): void {
    this.timings[stage] = performance.now() - since;
  }

  /** Reports that `stage` finished. */
  async report(stage: Stage): Promise<void> {
    if (this.p.onProgress) await this.p.onProgress({ stage, step: 0, totalSteps: this.p.numInferenceSteps, stepMs: 0 });
  }

  /** time() and report(). */
  async done(stage: Stage, since: number): Promise<void> {
    this.time(stage, since);
    await this.report(stage);
  }

  /**
   * Denoising step i (0-based), begun at `since`, produced `latents` (output items along dim 0): hands
   * them to onStepLatents and reports the step, with a preview of any range of items.
   */
  async stepDone(i: number, latents: Tensor, since: number, preview: (latents: Tensor) => RgbImage[]): Promise<void> {
    this.p.onStepLatents?.(i, latents);
    if (this.p.onProgress)
      await this.p.onProgress({
        stage: 'denoise',
        step: i + 1,
        totalSteps: this.p.numInferenceSteps,
        stepMs: performance.now() - since,
        preview: (from = 0, count = latents.size(0) - from) => {
          const items = latents.size(0);
          if (!Number.isInteger(from) || !Number.isInteger(count) || from < 0 || count < 1 || from + count > items)
            throw new Error(`preview: items [${from}, ${from + count}) are outside the batch of ${items}`);
          if (from === 0 && count === items) return preview(latents);
          return scope(() => preview(latents.slice(0, from, from + count).contiguous()));
        },
      });
  }
}

// ---------------------------------------------------------------------------------------
// Outputs

/** Decoded pixels [B, 3, ...] of about [-1, 1] -> [B, ..., 3] in [0, 1] (the image processor's postprocess). */
export function pixelsToUnitRange(decoded: Tensor): Tensor {
  const spatial = Array.from({ length: decoded.ndim - 2 }, (_, i) => i + 2);
  return clamp(affine(decoded, 0.5, 0.5), 0, 1).permute(0, ...spatial, 1).contiguous();
}

/** [B, F, H, W, 3] floats in [0, 1] -> per output, its frames as 8-bit RGB (x * 255 rounded, as diffusers' numpy_to_pil). */
export function toRgbFrames(video: Tensor): RgbImage[][] {
  const [b, f, h, w] = video.shape as [number, number, number, number];
  // the float -> uint8 cast truncates, so add 0.5 first
  const bytes = scope(() => affine(video, 255, 0.5).to('uint8').contiguous().data() as Uint8Array);
  const frame = h * w * 3;
  return Array.from({ length: b }, (_, i) =>
    Array.from({ length: f }, (_, j) => ({ width: w, height: h, data: bytes.slice((i * f + j) * frame, (i * f + j + 1) * frame) })),
  );
}

/** [B, H, W, 3] floats in [0, 1] -> one 8-bit RGB image per item. */
export function toRgbImages(images: Tensor): RgbImage[] {
  return scope(() => toRgbFrames(images.unsqueeze(1)).map((frames) => frames[0]!));
}

/**
 * The GenerateResult of a validated request's run: 8-bit outputs of the decoded floats ([B, H, W, 3]
 * images or [B, F, H, W, 3] videos; none when not decoded), the stage timings and the peak memory.
 * With outputType 'rgb' the run's tensors are freed; otherwise they belong to the result.
 */
export function generateResult(
  req: GenerateRequest,
  device: Device,
  run: { latents: Tensor; decoded: Tensor | null; timings: Record<string, number> },
): GenerateResult {
  const decoded = run.decoded;
  const stats = memoryStats();
  const peak = device === 'cpu' ? stats.hostPeakBytes : stats.devicePeakBytes;
  const out: GenerateResult = {
    outputs: decoded ? (decoded.ndim === 4 ? toRgbImages(decoded).map((img) => [img]) : toRgbFrames(decoded)) : [],
    width: req.width as number,
    height: req.height as number,
    numFrames: req.numFrames as number,
    fps: req.fps as number,
    seed: req.seed as number,
    timings: run.timings,
    peakMemoryMb: peak / (1024 * 1024),
  };
  if ((req.outputType ?? 'rgb') === 'rgb') {
    run.latents.dispose();
    decoded?.dispose();
  } else {
    out.latents = run.latents;
    if (decoded) out.floatOutput = decoded;
  }
  return out;
}
