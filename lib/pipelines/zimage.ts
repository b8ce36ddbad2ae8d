// ZImagePipeline (diffusers pipeline_z_image.py): text-to-image with Z-Image-Turbo / Z-Image. Stages:
// each prompt in the Qwen3 chat template -> Qwen3 hidden_states[-2], only the real tokens kept ->
// seeded latent noise [B, 16, H/8, W/8] -> flow-match Euler over sigmas linspace(1, 1/n, n) shifted
// by the scheduler's shift, the transformer fed t = (1000 - timestep) / 1000 and its output negated
// -> optional CFG (guidance_scale > 0: pred = pos + g (pos - neg), optional norm clipping and
// truncation) -> AutoencoderKL decode of latents / scaling_factor + shift_factor -> images in [0, 1].
import { add, mul, neg, square, sub, sum } from '../engine/ops/basic.js';
import { type Device, disposeAll, keep, resetPeakMemory, scope, stack, type Tensor, tensor } from '../engine/index.js';
import type { FlowMatchEulerDiscreteSchedulerConfig } from '../io/configs.js';
import { expectConfig, readComponentConfig } from '../io/diffusers.js';
import { encodingsToTensors, tokenizeQwenChatPrompts } from '../io/prompt-tokens.js';
import { loadTokenizer, type TextTokenizer } from '../io/tokenizer.js';
import { promptLengths } from '../models/t5/umt5.js';
import { Qwen3TextEncoder } from '../models/qwen3/encoder.js';
import { AutoencoderKL } from '../models/vae/autoencoder-kl.js';
import { ZImageTransformer2DModel } from '../models/zimage/transformer.js';
import { calculateShift, FlowMatchEulerDiscreteScheduler } from '../schedulers/flow-match-euler.js';
import {
  checkRequestLatents, generateResult, itemSeeds, loadModels, pixelsToUnitRange, precisionName, requestOutputType, requestPrompts, requestSampling, requestSeeds,
  requestSize, requireComponents, RunStages, type RunParams, runParamsOf, samplingDefaults, seededNoise, TextEncoderSlot, toRgbImages,
} from './common.js';
import { type PipelineLoadContext, registerPipeline } from './load.js';
import { type GenerateRequest, type GenerateResult, type Pipeline, type PipelineDefaults, type PipelineInfo, RequestError, type RgbImage } from './types.js';

/** Token length prompts are padded/truncated to (the pipeline's max_sequence_length). */
export const ZIMAGE_MAX_SEQUENCE_LENGTH = 512;
/** The Qwen3 hidden state the pipeline conditions on: the second-to-last layer's output. */
const HIDDEN_STATE_INDEX = -2;

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
  return samplingDefaults(base, pipelineRaw, {
    width: 'width', height: 'height', num_inference_steps: 'numInferenceSteps', guidance_scale: 'guidanceScale',
    negative_prompt: 'negativePrompt', cfg_normalization: 'cfgNormalization', cfg_truncation: 'cfgTruncation',
  });
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

/** What run() computes: a fully resolved request. */
export interface ZImageRunParams extends RunParams {
  cfgNormalization: number;
  cfgTruncation: number;
  /** initial noise [B, 16, H/8, W/8] instead of seeded noise */
  latents?: Tensor;
}

export interface ZImageRunResult {
  /** final latents [B, 16, H/8, W/8] */
  latents: Tensor;
  /** decoded images [B, H, W, 3] in [0, 1] (when decode is set) */
  images: Tensor | null;
  timings: Record<string, number>;
}

export class ZImagePipeline implements Pipeline {
  private disposed = false;

  private constructor(
    readonly info: PipelineInfo,
    readonly sampling: ZImageSampling,
    private readonly device: Device,
    private readonly tokenizer: TextTokenizer,
    private readonly textEncoder: TextEncoderSlot<Qwen3TextEncoder>,
    private readonly transformer: ZImageTransformer2DModel,
    private readonly vae: AutoencoderKL,
    private readonly schedulerConfig: FlowMatchEulerDiscreteSchedulerConfig,
  ) {}

  static async load(ctx: PipelineLoadContext): Promise<ZImagePipeline> {
    const { modelDir, componentPaths, device } = ctx;
    const dirs = await requireComponents(ctx, 'ZImagePipeline');
    const schedulerConfig = expectConfig(await readComponentConfig(modelDir, 'scheduler', componentPaths), 'FlowMatchEulerDiscreteScheduler');
    new FlowMatchEulerDiscreteScheduler(schedulerConfig); // validates the configuration now rather than at the first request
    expectConfig(await readComponentConfig(modelDir, 'text_encoder', componentPaths), 'Qwen3Model', 'Qwen3ForCausalLM');
    expectConfig(await readComponentConfig(modelDir, 'transformer', componentPaths), 'ZImageTransformer2DModel');
    expectConfig(await readComponentConfig(modelDir, 'vae', componentPaths), 'AutoencoderKL');
    const sampling = zimageDefaults(ctx.modelPath, ctx.index.raw);
    const tokenizer = await loadTokenizer(dirs.tokenizer);
    // kept loaded between requests only on an accelerator without text-encoder offload
    const keepTextEncoder = device !== 'cpu' && !ctx.textEncoderCpuOffload;
    return loadModels(async (own) => {
      const transformer = own(await ZImageTransformer2DModel.load(dirs.transformer, { device }));
      const vae = own(await AutoencoderKL.load(dirs.vae, { device }));
      if (vae.structure.latentChannels !== transformer.inChannels)
        throw new Error(`${modelDir}: the VAE has ${vae.structure.latentChannels} latent channels, the transformer takes ${transformer.inChannels}`);
      const textEncoder = own(
        await TextEncoderSlot.open(() => Qwen3TextEncoder.load(dirs.text_encoder, { device, maxHiddenState: HIDDEN_STATE_INDEX }), keepTextEncoder),
      );
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
      return new ZImagePipeline(info, sampling, device, tokenizer, textEncoder, transformer, vae, schedulerConfig);
    });
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
    const prompts = requestPrompts(req);
    if (req.images && req.images.length > 0) throw new RequestError('ZImagePipeline is text-to-image: it takes no input images', 'images');
    const multiple = 2 * this.vae.scaleFactor;
    const { width, height } = requestSize(req, this.sampling, multiple, multiple);
    if (req.numFrames !== undefined && req.numFrames !== 1) throw new RequestError(`ZImagePipeline makes images: num_frames must be 1, got ${req.numFrames}`, 'num_frames');
    const sampling = requestSampling(req, this.sampling);
    const seeds = requestSeeds(req, sampling.seed, prompts.length * sampling.numOutputs);
    checkRequestLatents(req.latents, this.latentShape(prompts.length * sampling.numOutputs, height, width));
    const outputType = requestOutputType(req);
    return { ...req, prompt: prompts, width, height, numFrames: 1, fps: 0, ...sampling, seeds, outputType };
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
    return this.textEncoder.use((encoder) =>
      scope(() => {
        const encodings = tokenizeQwenChatPrompts(this.tokenizer, prompts, { maxLength: ZIMAGE_MAX_SEQUENCE_LENGTH, enableThinking: true });
        const { inputIds, attentionMask } = encodingsToTensors(encodings, this.device);
        return encodeZImagePrompt(encoder, inputIds, attentionMask);
      }),
    );
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
    const stages = new RunStages(p);
    const doCfg = p.guidanceScale > 0;
    const batch = p.prompts.length * p.numOutputs;
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
      await stages.done('encode_prompt', t0);
      stages.checkAbort();

      // 2. latents: the given ones (copied) or seeded noise
      t0 = performance.now();
      const given = p.latents;
      latents = keep(
        given
          ? scope(() => given.toDevice(this.device).to('float32').clone())
          : seededNoise(this.latentShape(batch, p.height, p.width), itemSeeds(p, batch), this.device),
      );
      await stages.done('prepare_latents', t0);

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
        stages.checkAbort();
        const stepStart = performance.now();
        const t = stepped[i] as number;
        const tNorm = Math.fround(Math.fround(1000 - t) / 1000);
        // cfg_truncation: no guidance on steps past the truncation point
        const guidance = doCfg && !(tNorm > p.cfgTruncation) ? p.guidanceScale : 0;
        const x: Tensor = latents;
        const next = scope(() => scheduler.step(neg(this.predict(x, t, cond, guidance > 0 ? uncond : null, guidance, p.cfgNormalization)), t, x));
        latents = keep(next);
        x.dispose();
        await stages.stepDone(i, next, stepStart, (l) => this.previewImages(l));
      }
      stages.time('denoise', t0);

      // 4. decoding
      if (p.decode) {
        stages.checkAbort();
        t0 = performance.now();
        images = keep(this.decodeToImages(latents));
        await stages.done('decode', t0);
      }
      const result = { latents, images, timings: stages.timings };
      latents = null;
      images = null;
      return result;
    } finally {
      disposeAll([embeds, latents, images]);
    }
  }

  /** VAE decode of pipeline latents -> images [B, H, W, 3] in [0, 1]. */
  decodeToImages(latents: Tensor): Tensor {
    return scope(() => pixelsToUnitRange(this.vae.decode(this.vae.denormalizeLatents(latents))));
  }

  private previewImages(latents: Tensor): RgbImage[] {
    return scope(() => toRgbImages(this.decodeToImages(latents)));
  }

  async generate(request: GenerateRequest): Promise<GenerateResult> {
    const req = this.validate(request);
    resetPeakMemory();
    const result = await this.run({ ...runParamsOf(req), cfgNormalization: this.sampling.cfgNormalization, cfgTruncation: this.sampling.cfgTruncation });
    return generateResult(req, this.device, { latents: result.latents, decoded: result.images, timings: result.timings });
  }

  private checkLive(): void {
    if (this.disposed) throw new Error('ZImagePipeline was disposed');
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.textEncoder.dispose();
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

registerPipeline('ZImagePipeline', (ctx) => ZImagePipeline.load(ctx));
