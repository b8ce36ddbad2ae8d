// WanPipeline (diffusers pipeline_wan.py): text-to-video with Wan2.1. Stages: prompt encoding with
// UMT5 (the upstream default negative prompt when none is given) -> seeded latent noise -> flow
// UniPC denoising with classifier-free guidance -> Wan VAE decoding -> frames in [0, 1].
import { add, affine, clamp, concat, mul, sub } from '../engine/ops/basic.js';
import { type Device, disposeAll, empty, keep, memoryStats, randn, resetPeakMemory, scope, type Tensor, tensor } from '../engine/tensor.js';
import { expectConfig, readComponentConfig, resolveComponentDirs } from '../io/diffusers.js';
import { encodingsToTensors, tokenizeWanPrompts } from '../io/prompt-tokens.js';
import { loadTokenizer, type TextTokenizer } from '../io/tokenizer.js';
import { openWeights } from '../io/weights.js';
import { UMT5Encoder } from '../models/t5/umt5.js';
import { WanTransformer3DModel } from '../models/wan/transformer.js';
import { WanVae } from '../models/wan/vae.js';
import { combineGuidance } from '../parallel/cfg.js';
import { checkHeads } from '../parallel/config.js';
import type { ParallelGroups } from '../parallel/groups.js';
import { stopTogether } from '../parallel/lockstep.js';
import type { SequenceParallel } from '../parallel/sequence.js';
import { UniPCMultistepScheduler } from '../schedulers/unipc.js';
import type { UniPCMultistepSchedulerConfig } from '../io/configs.js';
import { type PipelineLoadContext, registerPipeline } from './load.js';
import {
  type GenerateRequest, type GenerateResult, type Pipeline, type PipelineDefaults, type PipelineInfo, type Progress,
  RequestError, type RgbImage,
} from './types.js';

/** SGLang's default negative prompt for Wan2.1 T2V (WanT2V_1_3B_SamplingParams / WanT2V_14B_SamplingParams). */
export const WAN_DEFAULT_NEGATIVE_PROMPT =
  'Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, overall gray, ' +
  'worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, poorly drawn hands, poorly drawn ' +
  'faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, messy background, three legs, many people in ' +
  'the background, walking backwards';

/** Token length every prompt embedding is padded to (the pipeline's max_sequence_length). */
export const WAN_MAX_SEQUENCE_LENGTH = 512;

const MAX_SIDE = 4096;
const MAX_STEPS = 1000;
const MAX_OUTPUTS = 10;

/** Defaults of the 1.3B model (SGLang WanT2V_1_3B_SamplingParams); the 14B has its own. */
const DEFAULTS_1_3B: PipelineDefaults = {
  width: 832,
  height: 480,
  numFrames: 81,
  fps: 16,
  numInferenceSteps: 50,
  guidanceScale: 3.0,
  negativePrompt: WAN_DEFAULT_NEGATIVE_PROMPT,
};
const DEFAULTS_14B: PipelineDefaults = { ...DEFAULTS_1_3B, width: 1280, height: 720, guidanceScale: 5.0 };

/**
 * The request defaults of a model: the 14B's when the DiT has its width (5120 = 40 heads x 128; SGLang
 * tells the two apart by model id), else the 1.3B's; a model folder may override them with
 * `_sampling_defaults` in model_index.json (underscore keys are metadata that diffusers ignores), as
 * the demo model does to stay fast.
 */
function defaultsFor(transformer: WanTransformer3DModel, pipelineRaw: Record<string, unknown>): PipelineDefaults {
  const base = transformer.innerDim >= 5120 ? DEFAULTS_14B : DEFAULTS_1_3B;
  const o = pipelineRaw._sampling_defaults;
  if (o === undefined) return base;
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new Error('model_index.json: _sampling_defaults must be an object');
  const merged: PipelineDefaults = { ...base };
  const fields: Record<string, keyof PipelineDefaults> = {
    width: 'width', height: 'height', num_frames: 'numFrames', fps: 'fps',
    num_inference_steps: 'numInferenceSteps', guidance_scale: 'guidanceScale', negative_prompt: 'negativePrompt',
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

/** The stored dtype of one tensor of a component folder (read from the safetensors headers). */
async function storedDtype(dir: string, name: string): Promise<string> {
  const weights = await openWeights(dir);
  try {
    return weights.has(name) ? weights.info(name).dtype : 'float32';
  } finally {
    weights.dispose();
  }
}

function precisionName(dtype: string): string {
  return dtype === 'bfloat16' ? 'bf16' : dtype === 'float16' ? 'fp16' : 'fp32';
}

/** What run() computes: a fully resolved request. */
export interface WanRunParams {
  prompts: string[];
  negativePrompt: string;
  width: number;
  height: number;
  numFrames: number;
  numInferenceSteps: number;
  guidanceScale: number;
  numOutputs: number;
  seed: number;
  /** initial noise [B, 16, F', h, w] instead of seeded noise */
  latents?: Tensor;
  /** stop after denoising (no VAE decode) */
  decode: boolean;
  onProgress?: (p: Progress) => void | Promise<void>;
  /** receives the latents after every scheduler step (a view the caller may keep until the next step) */
  onStepLatents?: (step: number, latents: Tensor) => void;
  signal?: AbortSignal;
}

export interface WanRunResult {
  /** final latents [B, 16, F', h, w] in the normalised latent space */
  latents: Tensor;
  /** decoded video [B, F, H, W, 3] in [0, 1] (when decode is set) */
  video: Tensor | null;
  timings: Record<string, number>;
}

export class WanPipeline implements Pipeline {
  readonly info: PipelineInfo;
  private readonly device: Device;
  private readonly textEncoderDir: string;
  /** kept loaded between requests only on an accelerator without text-encoder offload */
  private textEncoder: UMT5Encoder | null;
  private readonly keepTextEncoder: boolean;
  private readonly vaeScaleTemporal: number;
  private readonly vaeScaleSpatial: number;
  /** this rank's groups when the pipeline runs on several ranks (null: alone) */
  private readonly parallel: ParallelGroups | null;
  private readonly sequenceParallel: SequenceParallel | null;
  private disposed = false;

  private constructor(
    info: PipelineInfo,
    device: Device,
    private readonly tokenizer: TextTokenizer,
    textEncoderDir: string,
    textEncoder: UMT5Encoder | null,
    private readonly transformer: WanTransformer3DModel,
    private readonly vae: WanVae,
    private readonly schedulerConfig: UniPCMultistepSchedulerConfig,
    parallel: ParallelGroups | null,
  ) {
    this.info = info;
    this.device = device;
    this.textEncoderDir = textEncoderDir;
    this.textEncoder = textEncoder;
    this.keepTextEncoder = textEncoder !== null;
    this.vaeScaleTemporal = vae.config.scale_factor_temporal ?? 4;
    this.vaeScaleSpatial = vae.config.scale_factor_spatial ?? 8;
    this.parallel = parallel;
    this.sequenceParallel = parallel?.sequenceParallel ?? null;
  }

  static async load(ctx: PipelineLoadContext): Promise<WanPipeline> {
    const { modelDir, componentPaths, device } = ctx;
    const dirs = await resolveComponentDirs(modelDir, componentPaths);
    for (const c of ['tokenizer', 'text_encoder', 'transformer', 'vae', 'scheduler'])
      if (!dirs[c]) throw new Error(`${modelDir}: WanPipeline needs a '${c}' component`);
    if (ctx.index.pipelineConfig.boundary_ratio != null || ctx.index.components.transformer_2)
      throw new Error(`${modelDir}: two-expert Wan2.2 models (boundary_ratio / transformer_2) are not supported`);
    if (ctx.index.pipelineConfig.expand_timesteps === true) throw new Error(`${modelDir}: expand_timesteps (Wan2.2 TI2V) is not supported`);
    const scheduler = await readComponentConfig(modelDir, 'scheduler', componentPaths);
    const schedulerConfig = expectConfig(scheduler, 'UniPCMultistepScheduler');
    new UniPCMultistepScheduler(schedulerConfig); // validates the configuration now rather than at the first request
    expectConfig(await readComponentConfig(modelDir, 'text_encoder', componentPaths), 'UMT5EncoderModel');
    const tokenizer = await loadTokenizer(dirs.tokenizer!);
    // on several ranks only rank 0 encodes prompts (and shares the embeddings)
    const parallel = ctx.parallel;
    const encodesPrompts = !parallel || parallel.world.rank === 0;
    const keepTextEncoder = device !== 'cpu' && !ctx.textEncoderCpuOffload && encodesPrompts;
    const loaded: Array<{ dispose(): void }> = [];
    try {
      const transformer = await WanTransformer3DModel.load(dirs.transformer!, { device });
      loaded.push(transformer);
      if (parallel) checkHeads(parallel.config, transformer.config.num_attention_heads);
      const vae = await WanVae.load(dirs.vae!, { device });
      loaded.push(vae);
      const textEncoder = keepTextEncoder ? await UMT5Encoder.load(dirs.text_encoder!, { device }) : null;
      if (textEncoder) loaded.push(textEncoder);
      const info: PipelineInfo = {
        modelPath: ctx.modelPath,
        pipelineClass: 'WanPipeline',
        pipelineName: 'WanPipeline',
        taskType: 'T2V',
        defaults: defaultsFor(transformer, ctx.index.raw),
        ditPrecision: precisionName(transformer.weightDtype),
        vaePrecision: precisionName(await storedDtype(dirs.vae!, 'decoder.conv_in.weight')),
        device,
        maxInputImages: 0,
        loraTargets: ['transformer'],
      };
      return new WanPipeline(info, device, tokenizer, dirs.text_encoder!, textEncoder, transformer, vae, schedulerConfig, parallel);
    } catch (err) {
      for (const m of loaded) m.dispose();
      throw err;
    }
  }

  /** The denoiser (LoRA and parallel code work on it). */
  get dit(): WanTransformer3DModel {
    return this.transformer;
  }

  validate(req: GenerateRequest): GenerateRequest {
    const d = this.info.defaults;
    const prompts = typeof req.prompt === 'string' ? [req.prompt] : req.prompt;
    if (!Array.isArray(prompts) || prompts.length === 0 || prompts.some((p) => typeof p !== 'string'))
      throw new RequestError('prompt must be a string or a non-empty list of strings', 'prompt');
    if (req.images && req.images.length > 0) throw new RequestError('WanPipeline is text-to-video: it takes no input images', 'images');
    const int = (v: number | undefined, dflt: number, name: string, min: number, max: number): number => {
      const x = v ?? dflt;
      if (!Number.isInteger(x) || x < min || x > max) throw new RequestError(`${name} must be an integer in [${min}, ${max}], got ${v}`, name);
      return x;
    };
    const width = int(req.width, d.width, 'width', 16, MAX_SIDE);
    const height = int(req.height, d.height, 'height', 16, MAX_SIDE);
    const multiple = this.vaeScaleSpatial * this.transformer.config.patch_size[1];
    if (width % multiple !== 0 || height % multiple !== 0)
      throw new RequestError(`width and height must be multiples of ${multiple}, got ${width}x${height}`, 'size');
    const maxLatentFrames = this.transformer.config.rope_max_seq_len;
    const numFrames = int(req.numFrames, d.numFrames, 'num_frames', 1, 1 + this.vaeScaleTemporal * (maxLatentFrames - 1));
    if ((numFrames - 1) % this.vaeScaleTemporal !== 0)
      throw new RequestError(`num_frames must be ${this.vaeScaleTemporal}k+1 (1, 5, 9, ..., 81, ...), got ${numFrames}`, 'num_frames');
    const fps = int(req.fps, d.fps, 'fps', 1, 240);
    const steps = int(req.numInferenceSteps, d.numInferenceSteps, 'num_inference_steps', 1, MAX_STEPS);
    const guidanceScale = req.guidanceScale ?? d.guidanceScale;
    if (typeof guidanceScale !== 'number' || !Number.isFinite(guidanceScale) || guidanceScale < 0 || guidanceScale > 100)
      throw new RequestError(`guidance_scale must be a number in [0, 100], got ${req.guidanceScale}`, 'guidance_scale');
    const numOutputs = int(req.numOutputs, 1, 'n', 1, MAX_OUTPUTS);
    const seed = int(req.seed, 42, 'seed', 0, Number.MAX_SAFE_INTEGER);
    const negativePrompt = req.negativePrompt ?? d.negativePrompt;
    if (typeof negativePrompt !== 'string') throw new RequestError('negative_prompt must be a string', 'negative_prompt');
    if (req.latents) {
      const expected = this.latentShape(prompts.length * numOutputs, numFrames, height, width);
      if (req.latents.ndim !== 5 || req.latents.shape.some((s, i) => s !== expected[i]))
        throw new RequestError(`latents must be [${expected}] for this request, got [${req.latents.shape}]`, 'latents');
    }
    const outputType = req.outputType ?? 'rgb';
    if (!['rgb', 'float', 'latent'].includes(outputType)) throw new RequestError(`output_type must be rgb, float or latent, got ${outputType}`, 'output_type');
    return { ...req, prompt: prompts, width, height, numFrames, fps, numInferenceSteps: steps, guidanceScale, numOutputs, seed, negativePrompt, outputType };
  }

  /** [B, z_dim, (F - 1) / 4 + 1, H / 8, W / 8] */
  latentShape(batch: number, numFrames: number, height: number, width: number): number[] {
    return [
      batch,
      this.transformer.config.in_channels,
      Math.floor((numFrames - 1) / this.vaeScaleTemporal) + 1,
      Math.floor(height / this.vaeScaleSpatial),
      Math.floor(width / this.vaeScaleSpatial),
    ];
  }

  /**
   * Prompt embeddings [prompts, 512, text_dim] (WanPipeline._get_t5_prompt_embeds): cleaned,
   * tokenized to 512 with '</s>', encoded, cut to the real tokens and zero-padded.
   */
  async encodePrompts(prompts: string[]): Promise<Tensor> {
    const encoder = this.textEncoder ?? (await UMT5Encoder.load(this.textEncoderDir, { device: this.device }));
    try {
      return scope(() => {
        const { inputIds, attentionMask } = encodingsToTensors(tokenizeWanPrompts(this.tokenizer, prompts, WAN_MAX_SEQUENCE_LENGTH), this.device);
        return encoder.encodePrompt(inputIds, attentionMask, WAN_MAX_SEQUENCE_LENGTH);
      });
    } finally {
      if (!this.keepTextEncoder) encoder.dispose();
    }
  }

  /**
   * encodePrompts on rank 0, its result broadcast to every rank (the other ranks never load the text
   * encoder); plain encodePrompts when alone.
   */
  private async promptEmbeddings(prompts: string[]): Promise<Tensor> {
    const world = this.parallel?.world;
    if (!world) return this.encodePrompts(prompts);
    const mine = world.rank === 0 ? await this.encodePrompts(prompts) : null;
    try {
      return scope(() => {
        const meta = world.broadcastValue(mine ? { shape: mine.shape, dtype: mine.dtype } : null, 0);
        if (!meta) throw new Error('rank 0 encoded no prompt embeddings');
        return world.broadcast(mine ?? empty(meta.shape, { dtype: meta.dtype, device: this.device }), 0);
      });
    } finally {
      mine?.dispose();
    }
  }

  /** Stops at a step boundary when the job was cancelled; on several ranks, all stop at the same one. */
  private checkAbort(signal: AbortSignal | undefined): void {
    if (this.parallel) stopTogether(this.parallel.world, signal);
    else signal?.throwIfAborted();
  }

  /** Seeded noise: output j draws from the Philox stream of seed + j. */
  private noise(shape: number[], seed: number): Tensor {
    const [b, ...rest] = shape as [number, ...number[]];
    return scope(() => concat(Array.from({ length: b }, (_, j) => randn([1, ...rest], { seed: seed + j, device: this.device })), 0));
  }

  /** Prompt rows repeated per output, in diffusers' order (each prompt's outputs together). */
  private static repeatRows(embeds: Tensor, from: number, count: number, times: number): Tensor {
    return scope(() => {
      const rows: Tensor[] = [];
      for (let i = from; i < from + count; ++i) for (let k = 0; k < times; ++k) rows.push(embeds.slice(0, i, i + 1));
      return concat(rows, 0);
    });
  }

  async run(p: WanRunParams): Promise<WanRunResult> {
    this.checkLive();
    const timings: Record<string, number> = {};
    const report = async (pr: Progress) => {
      if (p.onProgress) await p.onProgress(pr);
    };
    const doCfg = p.guidanceScale > 1.0;
    const batch = p.prompts.length * p.numOutputs;
    const totalSteps = p.numInferenceSteps;
    // tensors that live across stages; whatever is not returned is freed at the end
    let promptEmbeds: Tensor | null = null;
    let negativeEmbeds: Tensor | null = null;
    let latents: Tensor | null = null;
    let video: Tensor | null = null;
    const scheduler = new UniPCMultistepScheduler(this.schedulerConfig);
    try {
      // 1. prompt encoding (the negative prompts in the same encoder batch)
      let t0 = performance.now();
      const n = p.prompts.length;
      const texts = doCfg ? [...p.prompts, ...p.prompts.map(() => p.negativePrompt)] : p.prompts;
      const embeds = await this.promptEmbeddings(texts);
      try {
        promptEmbeds = keep(WanPipeline.repeatRows(embeds, 0, n, p.numOutputs));
        if (doCfg) negativeEmbeds = keep(WanPipeline.repeatRows(embeds, n, n, p.numOutputs));
      } finally {
        embeds.dispose();
      }
      timings.encode_prompt = performance.now() - t0;
      await report({ stage: 'encode_prompt', step: 0, totalSteps, stepMs: 0 });
      this.checkAbort(p.signal);

      // 2. latents: the given ones (copied) or seeded noise
      t0 = performance.now();
      const given = p.latents;
      latents = keep(
        given
          ? scope(() => given.toDevice(this.device).to('float32').clone())
          : this.noise(this.latentShape(batch, p.numFrames, p.height, p.width), p.seed),
      );
      timings.prepare_latents = performance.now() - t0;
      await report({ stage: 'prepare_latents', step: 0, totalSteps, stepMs: 0 });

      // 3. denoising: cond and uncond passes, guidance, one UniPC step
      t0 = performance.now();
      scheduler.setTimesteps(p.numInferenceSteps);
      scheduler.setBeginIndex(0);
      const cond = promptEmbeds;
      const uncond = negativeEmbeds;
      const sequenceParallel = this.sequenceParallel;
      // CFG-parallel: CFG rank 0 computes the conditional branch, CFG rank 1 the unconditional one
      const cfgParallel = this.parallel && this.parallel.config.cfgDegree === 2 ? this.parallel : null;
      for (let i = 0; i < scheduler.timesteps.length; ++i) {
        this.checkAbort(p.signal);
        const stepStart = performance.now();
        const t = scheduler.timesteps[i] as number;
        const x: Tensor = latents;
        const next = scope(() => {
          const timestep = tensor(new Array<number>(batch).fill(t), [batch], { dtype: 'int64', device: this.device });
          const predict = (embeds: Tensor) => this.transformer.forward(x, timestep, embeds, { sequenceParallel });
          if (uncond && cfgParallel) {
            const mine = predict(cfgParallel.place.cfgRank === 0 ? cond : uncond);
            return scheduler.step(combineGuidance(cfgParallel.cfg, mine, p.guidanceScale), t, x);
          }
          let noisePred = predict(cond);
          if (uncond) {
            const noiseUncond = predict(uncond);
            noisePred = add(noiseUncond, mul(sub(noisePred, noiseUncond), p.guidanceScale));
          }
          return scheduler.step(noisePred, t, x);
        });
        latents = keep(next);
        x.dispose();
        p.onStepLatents?.(i, next);
        await report({
          stage: 'denoise',
          step: i + 1,
          totalSteps,
          stepMs: performance.now() - stepStart,
          preview: () => this.previewFrames(next),
        });
      }
      timings.denoise = performance.now() - t0;

      // 4. decoding (on rank 0 only when on several ranks)
      if (p.decode) {
        this.checkAbort(p.signal);
        if (!this.parallel || this.parallel.world.rank === 0) {
          t0 = performance.now();
          video = keep(this.decodeToVideo(latents));
          timings.decode = performance.now() - t0;
        }
        await report({ stage: 'decode', step: 0, totalSteps, stepMs: 0 });
      }
      const result = { latents, video, timings };
      latents = null;
      video = null;
      return result;
    } finally {
      scheduler.dispose();
      disposeAll([promptEmbeds, negativeEmbeds, latents, video]);
    }
  }

  /** VAE decode of normalised latents -> video [B, F, H, W, 3] in [0, 1]. */
  private decodeToVideo(latents: Tensor): Tensor {
    return scope(() => {
      const decoded = this.vae.decode(this.vae.denormalizeLatents(latents)); // [B, 3, F, H, W] in [-1, 1]
      return clamp(affine(decoded, 0.5, 0.5), 0, 1).permute(0, 2, 3, 4, 1).contiguous();
    });
  }

  private previewFrames(latents: Tensor): RgbImage[] {
    return scope(() => toRgbFrames(this.decodeToVideo(latents.slice(0, 0, 1)))[0] ?? []);
  }

  async generate(request: GenerateRequest): Promise<GenerateResult> {
    const req = this.validate(request);
    resetPeakMemory();
    const prompts = req.prompt as string[];
    const outputType = req.outputType ?? 'rgb';
    const result = await this.run({
      prompts,
      negativePrompt: req.negativePrompt as string,
      width: req.width as number,
      height: req.height as number,
      numFrames: req.numFrames as number,
      numInferenceSteps: req.numInferenceSteps as number,
      guidanceScale: req.guidanceScale as number,
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
      outputs: result.video ? toRgbFrames(result.video) : [],
      width: req.width as number,
      height: req.height as number,
      numFrames: req.numFrames as number,
      fps: req.fps as number,
      seed: req.seed as number,
      timings: result.timings,
      peakMemoryMb: peak / (1024 * 1024),
    };
    if (outputType === 'rgb') {
      result.latents.dispose();
      result.video?.dispose();
    } else {
      out.latents = result.latents;
      if (result.video) out.floatOutput = result.video;
    }
    return out;
  }

  private checkLive(): void {
    if (this.disposed) throw new Error('WanPipeline was disposed');
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

registerPipeline('WanPipeline', (ctx) => WanPipeline.load(ctx), { parallel: true });
