// WanPipeline (diffusers pipeline_wan.py): text-to-video with Wan2.1. Stages: prompt encoding with
// UMT5 (the upstream default negative prompt when none is given) -> seeded latent noise -> flow
// UniPC denoising with classifier-free guidance -> Wan VAE decoding -> frames in [0, 1].
import { add, concat, mul, sub } from '../engine/ops/basic.js';
import { type Device, disposeAll, empty, keep, resetPeakMemory, scope, type Tensor, tensor } from '../engine/tensor.js';
import { expectConfig, readComponentConfig } from '../io/diffusers.js';
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
import {
  checkRequestLatents, generateResult, itemSeeds, loadModels, pixelsToUnitRange, precisionName, requestInt, requestOutputType, requestPrompts,
  requestSampling, requestSeeds, requestSize, requireComponents, RunStages, type RunParams, runParamsOf, samplingDefaults, seededNoise, TextEncoderSlot,
  toRgbFrames,
} from './common.js';
import { type PipelineLoadContext, registerPipeline } from './load.js';
import { type GenerateRequest, type GenerateResult, type Pipeline, type PipelineDefaults, type PipelineInfo, RequestError, type RgbImage } from './types.js';

/** SGLang's default negative prompt for Wan2.1 T2V (WanT2V_1_3B_SamplingParams / WanT2V_14B_SamplingParams). */
export const WAN_DEFAULT_NEGATIVE_PROMPT =
  'Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, overall gray, ' +
  'worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, poorly drawn hands, poorly drawn ' +
  'faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, messy background, three legs, many people in ' +
  'the background, walking backwards';

/** Token length every prompt embedding is padded to (the pipeline's max_sequence_length). */
export const WAN_MAX_SEQUENCE_LENGTH = 512;

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
  return samplingDefaults(transformer.innerDim >= 5120 ? DEFAULTS_14B : DEFAULTS_1_3B, pipelineRaw, {
    width: 'width', height: 'height', num_frames: 'numFrames', fps: 'fps',
    num_inference_steps: 'numInferenceSteps', guidance_scale: 'guidanceScale', negative_prompt: 'negativePrompt',
  });
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

/** What run() computes: a fully resolved request. */
export interface WanRunParams extends RunParams {
  numFrames: number;
  /** initial noise [B, 16, F', h, w] instead of seeded noise */
  latents?: Tensor;
}

export interface WanRunResult {
  /** final latents [B, 16, F', h, w] in the normalised latent space */
  latents: Tensor;
  /** decoded video [B, F, H, W, 3] in [0, 1] (when decode is set) */
  video: Tensor | null;
  timings: Record<string, number>;
}

export class WanPipeline implements Pipeline {
  private readonly vaeScaleTemporal: number;
  private readonly vaeScaleSpatial: number;
  /** this rank's groups when the pipeline runs on several ranks (null: alone) */
  private readonly parallel: ParallelGroups | null;
  private readonly sequenceParallel: SequenceParallel | null;
  private disposed = false;

  private constructor(
    readonly info: PipelineInfo,
    private readonly device: Device,
    private readonly tokenizer: TextTokenizer,
    private readonly textEncoder: TextEncoderSlot<UMT5Encoder>,
    private readonly transformer: WanTransformer3DModel,
    private readonly vae: WanVae,
    private readonly schedulerConfig: UniPCMultistepSchedulerConfig,
    parallel: ParallelGroups | null,
  ) {
    this.vaeScaleTemporal = vae.config.scale_factor_temporal ?? 4;
    this.vaeScaleSpatial = vae.config.scale_factor_spatial ?? 8;
    this.parallel = parallel;
    this.sequenceParallel = parallel?.sequenceParallel ?? null;
  }

  static async load(ctx: PipelineLoadContext): Promise<WanPipeline> {
    const { modelDir, componentPaths, device } = ctx;
    const dirs = await requireComponents(ctx, 'WanPipeline');
    if (ctx.index.pipelineConfig.boundary_ratio != null || ctx.index.components.transformer_2)
      throw new Error(`${modelDir}: two-expert Wan2.2 models (boundary_ratio / transformer_2) are not supported`);
    if (ctx.index.pipelineConfig.expand_timesteps === true) throw new Error(`${modelDir}: expand_timesteps (Wan2.2 TI2V) is not supported`);
    const scheduler = await readComponentConfig(modelDir, 'scheduler', componentPaths);
    const schedulerConfig = expectConfig(scheduler, 'UniPCMultistepScheduler');
    new UniPCMultistepScheduler(schedulerConfig); // validates the configuration now rather than at the first request
    expectConfig(await readComponentConfig(modelDir, 'text_encoder', componentPaths), 'UMT5EncoderModel');
    const tokenizer = await loadTokenizer(dirs.tokenizer);
    // on several ranks only rank 0 encodes prompts (and shares the embeddings)
    const parallel = ctx.parallel;
    const encodesPrompts = !parallel || parallel.world.rank === 0;
    // kept loaded between requests only on an accelerator without text-encoder offload
    const keepTextEncoder = device !== 'cpu' && !ctx.textEncoderCpuOffload && encodesPrompts;
    return loadModels(async (own) => {
      const transformer = own(await WanTransformer3DModel.load(dirs.transformer, { device }));
      if (parallel) checkHeads(parallel.config, transformer.config.num_attention_heads);
      const vae = own(await WanVae.load(dirs.vae, { device }));
      const textEncoder = own(await TextEncoderSlot.open(() => UMT5Encoder.load(dirs.text_encoder, { device }), keepTextEncoder));
      const info: PipelineInfo = {
        modelPath: ctx.modelPath,
        pipelineClass: 'WanPipeline',
        pipelineName: 'WanPipeline',
        taskType: 'T2V',
        defaults: defaultsFor(transformer, ctx.index.raw),
        ditPrecision: precisionName(transformer.weightDtype),
        vaePrecision: precisionName(await storedDtype(dirs.vae, 'decoder.conv_in.weight')),
        device,
        maxInputImages: 0,
        loraTargets: ['transformer'],
      };
      return new WanPipeline(info, device, tokenizer, textEncoder, transformer, vae, schedulerConfig, parallel);
    });
  }

  /** The denoiser (LoRA and parallel code work on it). */
  get dit(): WanTransformer3DModel {
    return this.transformer;
  }

  validate(req: GenerateRequest): GenerateRequest {
    const d = this.info.defaults;
    const prompts = requestPrompts(req);
    if (req.images && req.images.length > 0) throw new RequestError('WanPipeline is text-to-video: it takes no input images', 'images');
    const { width, height } = requestSize(req, d, 16, this.vaeScaleSpatial * this.transformer.config.patch_size[1]);
    const maxLatentFrames = this.transformer.config.rope_max_seq_len;
    const numFrames = requestInt(req.numFrames, d.numFrames, 'num_frames', 1, 1 + this.vaeScaleTemporal * (maxLatentFrames - 1));
    if ((numFrames - 1) % this.vaeScaleTemporal !== 0)
      throw new RequestError(`num_frames must be ${this.vaeScaleTemporal}k+1 (1, 5, 9, ..., 81, ...), got ${numFrames}`, 'num_frames');
    const fps = requestInt(req.fps, d.fps, 'fps', 1, 240);
    const sampling = requestSampling(req, d);
    const seeds = requestSeeds(req, sampling.seed, prompts.length * sampling.numOutputs);
    checkRequestLatents(req.latents, this.latentShape(prompts.length * sampling.numOutputs, numFrames, height, width));
    const outputType = requestOutputType(req);
    return { ...req, prompt: prompts, width, height, numFrames, fps, ...sampling, seeds, outputType };
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
    return this.textEncoder.use((encoder) =>
      scope(() => {
        const { inputIds, attentionMask } = encodingsToTensors(tokenizeWanPrompts(this.tokenizer, prompts, WAN_MAX_SEQUENCE_LENGTH), this.device);
        return encoder.encodePrompt(inputIds, attentionMask, WAN_MAX_SEQUENCE_LENGTH);
      }),
    );
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
    const stages = new RunStages(p, () => this.checkAbort(p.signal));
    const doCfg = p.guidanceScale > 1.0;
    const batch = p.prompts.length * p.numOutputs;
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
      await stages.done('encode_prompt', t0);
      stages.checkAbort();

      // 2. latents: the given ones (copied) or seeded noise
      t0 = performance.now();
      const given = p.latents;
      latents = keep(
        given
          ? scope(() => given.toDevice(this.device).to('float32').clone())
          : seededNoise(this.latentShape(batch, p.numFrames, p.height, p.width), itemSeeds(p, batch), this.device),
      );
      await stages.done('prepare_latents', t0);

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
        stages.checkAbort();
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
        await stages.stepDone(i, next, stepStart, (l) => this.previewFrames(l));
      }
      stages.time('denoise', t0);

      // 4. decoding (on rank 0 only when on several ranks)
      if (p.decode) {
        stages.checkAbort();
        if (!this.parallel || this.parallel.world.rank === 0) {
          t0 = performance.now();
          video = keep(this.decodeToVideo(latents));
          stages.time('decode', t0);
        }
        await stages.report('decode');
      }
      const result = { latents, video, timings: stages.timings };
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
    return scope(() => pixelsToUnitRange(this.vae.decode(this.vae.denormalizeLatents(latents))));
  }

  private previewFrames(latents: Tensor): RgbImage[] {
    return scope(() => toRgbFrames(this.decodeToVideo(latents.slice(0, 0, 1)))[0] ?? []);
  }

  async generate(request: GenerateRequest): Promise<GenerateResult> {
    const req = this.validate(request);
    resetPeakMemory();
    const result = await this.run({ ...runParamsOf(req), numFrames: req.numFrames as number });
    return generateResult(req, this.device, { latents: result.latents, decoded: result.video, timings: result.timings });
  }

  private checkLive(): void {
    if (this.disposed) throw new Error('WanPipeline was disposed');
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.textEncoder.dispose();
    this.transformer.dispose();
    this.vae.dispose();
  }
}

registerPipeline('WanPipeline', (ctx) => WanPipeline.load(ctx), { parallel: true });
