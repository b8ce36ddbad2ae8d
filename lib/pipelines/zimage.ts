// ZImagePipeline (diffusers pipeline_z_image.py): text-to-image with Z-Image-Turbo / Z-Image. Stages:
// each prompt in the Qwen3 chat template -> Qwen3 hidden_states[-2], only the real tokens kept ->
// seeded latent noise [B, 16, H/8, W/8] -> flow-match Euler over sigmas linspace(1, 1/n, n) shifted
// by the scheduler's shift, the transformer fed t = (1000 - timestep) / 1000 and its output negated
// -> optional CFG (guidance_scale > 0: pred = pos + g (pos - neg), optional norm clipping and
// truncation) -> AutoencoderKL decode of latents / scaling_factor + shift_factor -> images in [0, 1].
import { add, affine, clamp, mul, neg, square, sub, sum } from '../engine/ops/basic.js';
import { type Device, disposeAll, keep, memoryStats, randn, resetPeakMemory, scope, stack, type Tensor, tensor } from '../engine/index.js';
import type { FlowMatchEulerDiscreteSchedulerConfig } from '../io/configs.js';
import { expectConfig, readComponentConfig, resolveComponentDirs } from '../io/diffusers.js';
import { encodingsToTensors, tokenizeQwenChatPrompts } from '../io/prompt-tokens.js';
import { loadTokenizer, type TextTokenizer } from '../io/tokenizer.js';
import { promptLengths } from '../models/t5/umt5.js';
import { Qwen3TextEncoder } from '../models/qwen3/encoder.js';
import { AutoencoderKL } from '../models/vae/autoencoder-kl.js';
import { ZImageTransformer2DModel } from '../models/zimage/transformer.js';
import { calculateShift, FlowMatchEulerDiscreteScheduler } from '../schedulers/flow-match-euler.js';
import { type PipelineLoadContext, registerPipeline } from './load.js';
import {
  type GenerateRequest, type GenerateResult, type Pipeline, type PipelineDefaults, type PipelineInfo, type Progress,
  RequestError, type RgbImage,
} from './types.js';
import { toRgbFrames } from './wan.js';

/** Token length prompts are padded/truncated to (the pipeline's max_sequence_length). */
export const ZIMAGE_MAX_SEQUENCE_LENGTH = 512;
/** The Qwen3 hidden state the pipeline conditions on: the second-to-last layer's output. */
const HIDDEN_STATE_INDEX = -2;

const MAX_SIDE = 4096;
const MAX_STEPS = 1000;
const MAX_OUTPUTS = 10;

/** Sampling settings that depend on the model (Turbo or the base Z-Image), not on the request. */
export interface ZImageSampling extends PipelineDefaults {
  /** CFG renormalisation: clip ||pred|| to this factor times ||pos|| (0: off) */
  cfgNormalization: number;
  /** CFG only on steps whose (1000 - t) / 1000 is at most this (1: every step) */
  cfgTruncation: number;
}

/** Z-Image-Turbo (SGLang / the model card): 1024x1024, 9 steps, no CFG. */
export const ZIMAGE_TURBO_DEFAULTS: ZImageSampling = {
  width: 1024,
  height: 1024,
  numFrames: 1,
  fps: 0,
  numInferenceSteps: 9,
  guidanceScale: 0,
  negativePrompt: '',
  cfgNormalization: 0,
  cfgTruncation: 1,
};

/** The base Z-Image (SGLang): 50 steps, CFG 5 with renormalisation, negative prompt " ". */
export const ZIMAGE_BASE_DEFAULTS: ZImageSampling = {
  ...ZIMAGE_TURBO_DEFAULTS,
  numInferenceSteps: 50,
  guidanceScale: 5,
  negativePrompt: ' ',
  cfgNormalization: 1,
};

/**
 * The defaults of a model: the base Z-Image's when its path or id names "Z-Image" not followed by
 * "Turbo" (Tongyi-MAI/Z-Image; SGLang also tells the two apart by model id), else Turbo's; a model folder may
 * override them with `_sampling_defaults` in model_index.json (underscore keys are metadata that
 * diffusers ignores), as the demo model does to stay fast.
 */
export function zimageDefaults(modelPath: string, pipelineRaw: Record<string, unknown>): ZImageSampling {
  const base = /z[-_]image(?![-_ ]?turbo)/i.test(modelPath) ? ZIMAGE_BASE_DEFAULTS : ZIMAGE_TURBO_DEFAULTS;
  const o = pipelineRaw._sampling_defaults;
  if (o === undefined) return { ...base };
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new Error('model_index.json: _sampling_defaults must be an object');
  const merged: ZImageSampling = { ...base };
  const fields: Record<string, keyof ZImageSampling> = {
    width: 'width', height: 'height', num_inference_steps: 'numInferenceSteps', guidance_scale: 'guidanceScale',
    negative_prompt: 'negativePrompt', cfg_normalization: 'cfgNormalization', cfg_truncation: 'cfgTruncation',
  };
  for (const [key, value] of Object.entries(o)) {
    const field = fields[key];
    if (!field) throw new Error(`model_index.json: _sampling_defaults.${key} is not a sampling default (${Object.keys(fields).join(', ')})`);
    const isText = field === 'negativePrompt';
    if (isText ? typeof value !== 'string' : typeof value !== 'number' || !Number.isFinite(value))
      throw new Error(`model_index.json: _sampling_defaults.${key} must be a ${isText ? 'string' : 'number'}`);
    (merged as unknown as Record<string, unknown>)[field] = value;
  }
  return merged;
}

/**
 * get_default_z_image_sigmas: torch.linspace(1, 1/n, n) in float32, with torch's CPU arithmetic
 * (step = (end - start) / (n - 1) in float32; the first half counted up from start, the second down
 * from end, each value a single rounding of start + step * i).
 */
export function zimageDefaultSigmas(n: number): number[] {
  const f = Math.fround;
  const start = 1;
  const end = f(1 / n);
  if (n === 1) return [start];
  const step = f(f(end - start) / (n - 1));
  const half = Math.floor(n / 2);
  return Array.from({ length: n }, (_, i) => (i < half ? f(start + step * i) : f(end - step * (n - 1 - i))));
}

function precisionName(dtype: string): string {
  return dtype === 'bfloat16' ? 'bf16' : dtype === 'float16' ? 'fp16' : 'fp32';
}

/** What run() computes: a fully resolved request. */
export interface ZImageRunParams {
  prompts: string[];
  negativePrompt: string;
  width: number;
  height: number;
  numInferenceSteps: number;
  guidanceScale: number;
  cfgNormalization: number;
  cfgTruncation: number;
  numOutputs: number;
  seed: number;
  /** initial noise [B, 16, H/8, W/8] instead of seeded noise */
  latents?: Tensor;
  /** stop after denoising (no VAE decode) */
  decode: boolean;
  onProgress?: (p: Progress) => void | Promise<void>;
  /** receives the latents after every scheduler step (a tensor the caller may keep until the next step) */
  onStepLatents?: (step: number, latents: Tensor) => void;
  signal?: AbortSignal;
}

export interface ZImageRunResult {
  /** final latents [B, 16, H/8, W/8] */
  latents: Tensor;
  /** decoded images [B, H, W, 3] in [0, 1] (when decode is set) */
  images: Tensor | null;
  timings: Record<string, number>;
}

export class ZImagePipeline implements Pipeline {
  readonly info: PipelineInfo;
  readonly sampling: ZImageSampling;
  private readonly device: Device;
  private readonly textEncoderDir: string;
  /** kept loaded between requests only on an accelerator without text-encoder offload */
  private textEncoder: Qwen3TextEncoder | null;
  private readonly keepTextEncoder: boolean;
  private disposed = false;

  private constructor(
    info: PipelineInfo,
    sampling: ZImageSampling,
    device: Device,
    private readonly tokenizer: TextTokenizer,
    textEncoderDir: string,
    textEncoder: Qwen3TextEncoder | null,
    private readonly transformer: ZImageTransformer2DModel,
    private readonly vae: AutoencoderKL,
    private readonly schedulerConfig: FlowMatchEulerDiscreteSchedulerConfig,
  ) {
    this.info = info;
    this.sampling = sampling;
    this.device = device;
    this.textEncoderDir = textEncoderDir;
    this.textEncoder = textEncoder;
    this.keepTextEncoder = textEncoder !== null;
  }

  static async load(ctx: PipelineLoadContext): Promise<ZImagePipeline> {
    const { modelDir, componentPaths, device } = ctx;
    const dirs = await resolveComponentDirs(modelDir, componentPaths);
    for (const c of ['tokenizer', 'text_encoder', 'transformer', 'vae', 'scheduler'])
      if (!dirs[c]) throw new Error(`${modelDir}: ZImagePipeline needs a '${c}' component`);
    const schedulerConfig = expectConfig(await readComponentConfig(modelDir, 'scheduler', componentPaths), 'FlowMatchEulerDiscreteScheduler');
    new FlowMatchEulerDiscreteScheduler(schedulerConfig); // validates the configuration now rather than at the first request
    expectConfig(await readComponentConfig(modelDir, 'text_encoder', componentPaths), 'Qwen3Model', 'Qwen3ForCausalLM');
    expectConfig(await readComponentConfig(modelDir, 'transformer', componentPaths), 'ZImageTransformer2DModel');
    expectConfig(await readComponentConfig(modelDir, 'vae', componentPaths), 'AutoencoderKL');
    const sampling = zimageDefaults(ctx.modelPath, ctx.index.raw);
    const tokenizer = await loadTokenizer(dirs.tokenizer!);
    const keepTextEncoder = device !== 'cpu' && !ctx.textEncoderCpuOffload;
    const loaded: Array<{ dispose(): void }> = [];
    try {
      const transformer = await ZImageTransformer2DModel.load(dirs.transformer!, { device });
      loaded.push(transformer);
      const vae = await AutoencoderKL.load(dirs.vae!, { device });
      loaded.push(vae);
      if (vae.structure.latentChannels !== transformer.inChannels)
        throw new Error(`${modelDir}: the VAE has ${vae.structure.latentChannels} latent channels, the transformer takes ${transformer.inChannels}`);
      const textEncoder = keepTextEncoder ? await Qwen3TextEncoder.load(dirs.text_encoder!, { device, maxHiddenState: HIDDEN_STATE_INDEX }) : null;
      if (textEncoder) loaded.push(textEncoder);
      const { cfgNormalization: _n, cfgTruncation: _t, ...defaults } = sampling;
      const info: PipelineInfo = {
        modelPath: ctx.modelPath,
        pipelineClass: 'ZImagePipeline',
        pipelineName: 'ZImagePipeline',
        taskType: 'T2I',
        defaults,
        ditPrecision: precisionName(transformer.weightDtype),
        vaePrecision: precisionName(vae.weightDtype),
        device,
        maxInputImages: 0,
        loraTargets: ['transformer'],
      };
      return new ZImagePipeline(info, sampling, device, tokenizer, dirs.text_encoder!, textEncoder, transformer, vae, schedulerConfig);
    } catch (err) {
      for (const m of loaded) m.dispose();
      throw err;
    }
  }

  /** The denoiser (LoRA and parallel code work on it). */
  get dit(): ZImageTransformer2DModel {
    return this.transformer;
  }

  /** Pixels per latent (the VAE's 8). Sizes must be multiples of twice this (a 2x2 patch per token). */
  get vaeScaleFactor(): number {
    return this.vae.scaleFactor;
  }

  validate(req: GenerateRequest): GenerateRequest {
    const d = this.sampling;
    const prompts = typeof req.prompt === 'string' ? [req.prompt] : req.prompt;
    if (!Array.isArray(prompts) || prompts.length === 0 || prompts.some((p) => typeof p !== 'string'))
      throw new RequestError('prompt must be a string or a non-empty list of strings', 'prompt');
    if (req.images && req.images.length > 0) throw new RequestError('ZImagePipeline is text-to-image: it takes no input images', 'images');
    const int = (v: number | undefined, dflt: number, name: string, min: number, max: number): number => {
      const x = v ?? dflt;
      if (!Number.isInteger(x) || x < min || x > max) throw new RequestError(`${name} must be an integer in [${min}, ${max}], got ${v}`, name);
      return x;
    };
    const multiple = 2 * this.vae.scaleFactor;
    const width = int(req.width, d.width, 'width', multiple, MAX_SIDE);
    const height = int(req.height, d.height, 'height', multiple, MAX_SIDE);
    if (width % multiple !== 0 || height % multiple !== 0)
      throw new RequestError(`width and height must be multiples of ${multiple}, got ${width}x${height}`, 'size');
    if (req.numFrames !== undefined && req.numFrames !== 1) throw new RequestError(`ZImagePipeline makes images: num_frames must be 1, got ${req.numFrames}`, 'num_frames');
    const steps = int(req.numInferenceSteps, d.numInferenceSteps, 'num_inference_steps', 1, MAX_STEPS);
    const guidanceScale = req.guidanceScale ?? d.guidanceScale;
    if (typeof guidanceScale !== 'number' || !Number.isFinite(guidanceScale) || guidanceScale < 0 || guidanceScale > 100)
      throw new RequestError(`guidance_scale must be a number in [0, 100], got ${req.guidanceScale}`, 'guidance_scale');
    const numOutputs = int(req.numOutputs, 1, 'n', 1, MAX_OUTPUTS);
    const seed = int(req.seed, 42, 'seed', 0, Number.MAX_SAFE_INTEGER);
    const negativePrompt = req.negativePrompt ?? d.negativePrompt;
    if (typeof negativePrompt !== 'string') throw new RequestError('negative_prompt must be a string', 'negative_prompt');
    if (req.latents) {
      const expected = this.latentShape(prompts.length * numOutputs, height, width);
      if (req.latents.ndim !== 4 || req.latents.shape.some((s, i) => s !== expected[i]))
        throw new RequestError(`latents must be [${expected}] for this request, got [${req.latents.shape}]`, 'latents');
    }
    const outputType = req.outputType ?? 'rgb';
    if (!['rgb', 'float', 'latent'].includes(outputType)) throw new RequestError(`output_type must be rgb, float or latent, got ${outputType}`, 'output_type');
    return { ...req, prompt: prompts, width, height, numFrames: 1, fps: 0, numInferenceSteps: steps, guidanceScale, numOutputs, seed, negativePrompt, outputType };
  }

  /** [B, 16, 2 (H / 16), 2 (W / 16)] (prepare_latents) */
  latentShape(batch: number, height: number, width: number): number[] {
    const f = 2 * this.vae.scaleFactor;
    return [batch, this.transformer.inChannels, 2 * Math.floor(height / f), 2 * Math.floor(width / f)];
  }

  /**
   * Prompt embeddings (ZImagePipeline._encode_prompt): per prompt, Qwen3 hidden_states[-2] at its real
   * tokens, [L_i, hidden]. The encoder runs on the longest real prefix of the batch only: attention is
   * causal, so padding never reaches a real token.
   */
  async encodePrompts(prompts: string[]): Promise<Tensor[]> {
    const encoder = this.textEncoder ?? (await Qwen3TextEncoder.load(this.textEncoderDir, { device: this.device, maxHiddenState: HIDDEN_STATE_INDEX }));
    try {
      return scope(() => {
        const encodings = tokenizeQwenChatPrompts(this.tokenizer, prompts, { maxLength: ZIMAGE_MAX_SEQUENCE_LENGTH, enableThinking: true });
        const { inputIds, attentionMask } = encodingsToTensors(encodings, this.device);
        return encodeZImagePrompt(encoder, inputIds, attentionMask);
      });
    } finally {
      if (!this.keepTextEncoder) encoder.dispose();
    }
  }

  /** Seeded noise: output j draws from the Philox stream of seed + j. */
  private noise(shape: number[], seed: number): Tensor {
    const [b, ...rest] = shape as [number, ...number[]];
    return scope(() => stack(Array.from({ length: b }, (_, j) => randn(rest, { seed: seed + j, device: this.device })), 0));
  }

  /**
   * One denoiser evaluation for the whole batch: the model output per item (CFG: the prompt and the
   * negative prompt in one batch of 2B, then pos + g (pos - neg) and the optional norm clipping),
   * stacked to [B, 16, h, w]. The caller negates it before the scheduler step.
   */
  private predict(latents: Tensor, t: number, cond: Tensor[], uncond: Tensor[] | null, guidance: number, cfgNormalization: number): Tensor {
    const batch = latents.size(0);
    const items = Array.from({ length: batch }, (_, i) => latents.select(0, i).unsqueeze(1)); // [16, 1, h, w]
    const tNorm = Math.fround(Math.fround(1000 - t) / 1000);
    if (!uncond) {
      const out = this.transformer.forward(items, tensor(new Array<number>(batch).fill(tNorm), [batch], { device: this.device }), cond);
      return stack(out.map((o) => o.squeeze(1)), 0);
    }
    const out = this.transformer.forward([...items, ...items], tensor(new Array<number>(2 * batch).fill(tNorm), [2 * batch], { device: this.device }), [...cond, ...uncond]);
    const preds = Array.from({ length: batch }, (_, j) => {
      const pos = out[j]!.squeeze(1);
      const negOut = out[batch + j]!.squeeze(1);
      let pred = add(pos, mul(sub(pos, negOut), guidance));
      if (cfgNormalization > 0) {
        const posNorm = l2Norm(pos);
        const predNorm = l2Norm(pred);
        const maxNorm = posNorm * cfgNormalization;
        if (predNorm > maxNorm) pred = mul(pred, maxNorm / predNorm);
      }
      return pred;
    });
    return stack(preds, 0);
  }

  async run(p: ZImageRunParams): Promise<ZImageRunResult> {
    this.checkLive();
    const timings: Record<string, number> = {};
    const report = async (pr: Progress) => {
      if (p.onProgress) await p.onProgress(pr);
    };
    const doCfg = p.guidanceScale > 0;
    const batch = p.prompts.length * p.numOutputs;
    const totalSteps = p.numInferenceSteps;
    let embeds: Tensor[] = [];
    let latents: Tensor | null = null;
    let images: Tensor | null = null;
    try {
      // 1. prompt encoding (the negative prompts in the same encoder batch), repeated per output
      let t0 = performance.now();
      const n = p.prompts.length;
      const texts = doCfg ? [...p.prompts, ...p.prompts.map(() => p.negativePrompt)] : p.prompts;
      embeds = keep(await this.encodePrompts(texts));
      const perOutput = (from: number) => Array.from({ length: n * p.numOutputs }, (_, i) => embeds[from + Math.floor(i / p.numOutputs)]!);
      const cond = perOutput(0);
      const uncond = doCfg ? perOutput(n) : null;
      timings.encode_prompt = performance.now() - t0;
      await report({ stage: 'encode_prompt', step: 0, totalSteps, stepMs: 0 });
      p.signal?.throwIfAborted();

      // 2. latents: the given ones (copied) or seeded noise
      t0 = performance.now();
      const given = p.latents;
      latents = keep(
        given ? scope(() => given.toDevice(this.device).to('float32').clone()) : this.noise(this.latentShape(batch, p.height, p.width), p.seed),
      );
      timings.prepare_latents = performance.now() - t0;
      await report({ stage: 'prepare_latents', step: 0, totalSteps, stepMs: 0 });

      // 3. denoising
      t0 = performance.now();
      const scheduler = new FlowMatchEulerDiscreteScheduler(this.schedulerConfig);
      const [, , lh, lw] = latents.shape as [number, number, number, number];
      // the reference passes mu = calculate_shift(image tokens); it only matters with use_dynamic_shifting
      const mu = calculateShift((lh / 2) * (lw / 2), this.schedulerConfig);
      scheduler.setTimesteps(null, { sigmas: zimageDefaultSigmas(p.numInferenceSteps), mu });
      scheduler.setBeginIndex(0);
      const stepped = scheduler.timesteps;
      for (let i = 0; i < stepped.length; ++i) {
        p.signal?.throwIfAborted();
        const stepStart = performance.now();
        const t = stepped[i] as number;
        const tNorm = Math.fround(Math.fround(1000 - t) / 1000);
        // cfg_truncation: no guidance on steps past the truncation point
        const guidance = doCfg && !(tNorm > p.cfgTruncation) ? p.guidanceScale : 0;
        const x: Tensor = latents;
        const next = scope(() => scheduler.step(neg(this.predict(x, t, cond, guidance > 0 ? uncond : null, guidance, p.cfgNormalization)), t, x));
        latents = keep(next);
        x.dispose();
        p.onStepLatents?.(i, next);
        await report({
          stage: 'denoise',
          step: i + 1,
          totalSteps,
          stepMs: performance.now() - stepStart,
          preview: () => this.previewImages(next),
        });
      }
      timings.denoise = performance.now() - t0;

      // 4. decoding
      if (p.decode) {
        p.signal?.throwIfAborted();
        t0 = performance.now();
        images = keep(this.decodeToImages(latents));
        timings.decode = performance.now() - t0;
        await report({ stage: 'decode', step: 0, totalSteps, stepMs: 0 });
      }
      const result = { latents, images, timings };
      latents = null;
      images = null;
      return result;
    } finally {
      disposeAll([embeds, latents, images]);
    }
  }

  /** VAE decode of pipeline latents -> images [B, H, W, 3] in [0, 1] (the image processor's postprocess). */
  decodeToImages(latents: Tensor): Tensor {
    return scope(() => {
      const decoded = this.vae.decode(this.vae.denormalizeLatents(latents)); // [B, 3, H, W], about [-1, 1]
      return clamp(affine(decoded, 0.5, 0.5), 0, 1).permute(0, 2, 3, 1).contiguous();
    });
  }

  private previewImages(latents: Tensor): RgbImage[] {
    return scope(() => toRgbImages(this.decodeToImages(latents)));
  }

  async generate(request: GenerateRequest): Promise<GenerateResult> {
    const req = this.validate(request);
    resetPeakMemory();
    const outputType = req.outputType ?? 'rgb';
    const result = await this.run({
      prompts: req.prompt as string[],
      negativePrompt: req.negativePrompt as string,
      width: req.width as number,
      height: req.height as number,
      numInferenceSteps: req.numInferenceSteps as number,
      guidanceScale: req.guidanceScale as number,
      cfgNormalization: this.sampling.cfgNormalization,
      cfgTruncation: this.sampling.cfgTruncation,
      numOutputs: req.numOutputs as number,
      seed: req.seed as number,
      ...(req.latents ? { latents: req.latents } : {}),
      decode: outputType !== 'latent',
      ...(req.onProgress ? { onProgress: req.onProgress } : {}),
      ...(req.signal ? { signal: req.signal } : {}),
    });
    const stats = memoryStats();
    const peak = this.device === 'cpu' ? stats.hostPeakBytes : stats.devicePeakBytes;
    const out: GenerateResult = {
      outputs: result.images ? toRgbImages(result.images).map((img) => [img]) : [],
      width: req.width as number,
      height: req.height as number,
      numFrames: 1,
      fps: 0,
      seed: req.seed as number,
      timings: result.timings,
      peakMemoryMb: peak / (1024 * 1024),
    };
    if (outputType === 'rgb') {
      result.latents.dispose();
      result.images?.dispose();
    } else {
      out.latents = result.latents;
      if (result.images) out.floatOutput = result.images;
    }
    return out;
  }

  private checkLive(): void {
    if (this.disposed) throw new Error('ZImagePipeline was disposed');
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.textEncoder?.dispose();
    this.textEncoder = null;
    this.transformer.dispose();
    this.vae.dispose();
  }
}

/**
 * The prompt embeddings ZImagePipeline._encode_prompt returns for token ids [B, L] and their
 * attention mask: hidden_states[-2] of each row at its real tokens, [L_b, hidden] per row. Runs the
 * encoder on the longest real prefix only (causal attention: padding never reaches a real token).
 */
export function encodeZImagePrompt(encoder: Qwen3TextEncoder, inputIds: Tensor, attentionMask: Tensor): Tensor[] {
  const [b, l] = inputIds.shape as [number, number];
  const lens = promptLengths(attentionMask, b, l);
  const longest = Math.max(...lens);
  return scope(() => {
    const [hidden] = encoder.hiddenStates(inputIds.slice(1, 0, longest).contiguous(), lens, [HIDDEN_STATE_INDEX]) as [Tensor];
    return lens.map((n, i) => hidden.select(0, i).slice(0, 0, n).contiguous());
  });
}

/** torch.linalg.vector_norm over all elements (float32 accumulation, as the reference). */
function l2Norm(x: Tensor): number {
  return scope(() => Math.sqrt(sum(square(x.reshape(-1)), 0).item()));
}

/** [B, H, W, 3] floats in [0, 1] -> one 8-bit RGB image per item. */
export function toRgbImages(images: Tensor): RgbImage[] {
  return scope(() => toRgbFrames(images.unsqueeze(1)).map((frames) => frames[0]!));
}

registerPipeline('ZImagePipeline', (ctx) => ZImagePipeline.load(ctx));
