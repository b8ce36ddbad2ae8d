// Flux2KleinPipeline (diffusers pipeline_flux2_klein.py): text-to-image and image editing with
// FLUX.2-klein. Stages: each prompt in the Qwen3 chat template (enable_thinking=False), padded to 512
// tokens -> Qwen3 hidden states of layers 9, 18, 27 concatenated per token ([B, 512, 3 hidden], padded
// rows kept) -> reference images (0..4) prepared as the reference pipeline does, VAE-encoded (mode),
// 2x2-patchified, batch-norm normalised and packed into tokens at t = 10, 20, ... -> seeded noise
// [B, 128, H/16, W/16] packed into tokens -> flow-match Euler over sigmas linspace(1, 1/n, n) shifted
// by the empirical resolution-dependent mu, the transformer fed [noise tokens, reference tokens] and
// only the noise tokens kept -> CFG with the empty prompt when guidance_scale > 1 on a model that is
// not step-distilled -> un-pack, de-normalise, un-patchify, AutoencoderKLFlux2 decode -> [0, 1].
import { add, concat, mul, stack, sub } from '../engine/ops/basic.js';
import { type Device, disposeAll, keep, resetPeakMemory, scope, type Tensor, tensor } from '../engine/tensor.js';
import type { FlowMatchEulerDiscreteSchedulerConfig } from '../io/configs.js';
import { expectConfig, readComponentConfig } from '../io/diffusers.js';
import { encodingsToTensors, tokenizeQwenChatPrompts } from '../io/prompt-tokens.js';
import { loadTokenizer, type TextTokenizer } from '../io/tokenizer.js';
import { Flux2Transformer2DModel, type PositionIds } from '../models/flux2/transformer.js';
import { concatIds, latentIds, packLatents, referenceIds, textIds, unpackLatents } from '../models/flux2/tokens.js';
import { Qwen3TextEncoder } from '../models/qwen3/encoder.js';
import { promptLengths } from '../models/t5/umt5.js';
import { AutoencoderKLFlux2, unpatchifyLatents } from '../models/vae/autoencoder-kl-flux2.js';
import { linspace } from '../schedulers/common.js';
import { FlowMatchEulerDiscreteScheduler } from '../schedulers/flow-match-euler.js';
import {
  checkRequestLatents, generateResult, itemSeeds, loadModels, pixelsToUnitRange, precisionName, requestOutputType, requestPrompts, requestSampling, requestSeeds,
  requestSize, requireComponents, RunStages, type RunParams, runParamsOf, samplingDefaults, seededNoise, TextEncoderSlot, toRgbImages,
} from './common.js';
import { checkReferenceImage, imageToTensor, prepareReferenceImage, referenceImageSize } from './flux2-reference-images.js';
import { type PipelineLoadContext, registerPipeline } from './load.js';
import { type GenerateRequest, type GenerateResult, type Pipeline, type PipelineDefaults, type PipelineInfo, RequestError, type RgbImage } from './types.js';

/** Token length prompts are padded/truncated to (the pipeline's max_sequence_length). */
export const FLUX2_MAX_SEQUENCE_LENGTH = 512;
/** The Qwen3 hidden states the pipeline stacks (text_encoder_out_layers). */
export const FLUX2_TEXT_ENCODER_OUT_LAYERS: readonly number[] = [9, 18, 27];
/** Reference images one edit may use (FLUX.2 [klein]: up to 4). */
export const FLUX2_MAX_REFERENCE_IMAGES = 4;

/** The step-distilled FLUX.2-klein 4B / 9B (is_distilled): 1024x1024, 4 steps, no CFG. */
export const FLUX2_KLEIN_DEFAULTS: PipelineDefaults = {
  width: 1024,
  height: 1024,
  numFrames: 1,
  fps: 0,
  numInferenceSteps: 4,
  guidanceScale: 1,
  negativePrompt: '',
};

/** The undistilled klein base models: the reference pipeline's 50 steps and CFG 4 (negative prompt ""). */
export const FLUX2_KLEIN_BASE_DEFAULTS: PipelineDefaults = { ...FLUX2_KLEIN_DEFAULTS, numInferenceSteps: 50, guidanceScale: 4 };

/** What a model folder may set for this pipeline in model_index.json (underscore keys diffusers ignores). */
export interface Flux2KleinSettings {
  defaults: PipelineDefaults;
  isDistilled: boolean;
  /** the hidden states stacked into prompt embeddings */
  textEncoderOutLayers: number[];
}

/**
 * The settings of a model folder: is_distilled from model_index.json picks the defaults (distilled:
 * 4 steps without CFG; base: 50 steps, CFG 4); `_sampling_defaults` overrides them (as the demo model
 * does to stay small), `_text_encoder_out_layers` the stacked hidden states (the pipeline's
 * text_encoder_out_layers argument; default 9, 18, 27), for text encoders shallower than the real one.
 */
export function flux2KleinSettings(pipelineRaw: Record<string, unknown>): Flux2KleinSettings {
  const distilled = pipelineRaw.is_distilled;
  if (distilled !== undefined && typeof distilled !== 'boolean') throw new Error('model_index.json: is_distilled must be a boolean');
  const isDistilled = distilled ?? false;
  const defaults = samplingDefaults(isDistilled ? FLUX2_KLEIN_DEFAULTS : FLUX2_KLEIN_BASE_DEFAULTS, pipelineRaw, {
    width: 'width', height: 'height', num_inference_steps: 'numInferenceSteps', guidance_scale: 'guidanceScale', negative_prompt: 'negativePrompt',
  });
  const layers = pipelineRaw._text_encoder_out_layers ?? FLUX2_TEXT_ENCODER_OUT_LAYERS;
  if (!Array.isArray(layers) || layers.length === 0 || !layers.every((k) => Number.isSafeInteger(k) && k >= 0))
    throw new Error('model_index.json: _text_encoder_out_layers must be a non-empty list of hidden-state indices');
  return { defaults, isDistilled, textEncoderOutLayers: [...(layers as number[])] };
}

/**
 * compute_empirical_mu: the time shift of FLUX.2 for image_seq_len packed noise tokens and n steps
 * (two linear fits in the token count, interpolated in the step count up to 4300 tokens).
 */
export function computeEmpiricalMu(imageSeqLen: number, numSteps: number): number {
  const a1 = 8.73809524e-5;
  const b1 = 1.89833333;
  const a2 = 0.00016927;
  const b2 = 0.45666666;
  if (imageSeqLen > 4300) return a2 * imageSeqLen + b2;
  const m200 = a2 * imageSeqLen + b2;
  const m10 = a1 * imageSeqLen + b1;
  const a = (m200 - m10) / 190.0;
  const b = m200 - 200.0 * a;
  return a * numSteps + b;
}

/** The sigmas the pipeline passes: numpy linspace(1, 1/n, n) (float64; the scheduler rounds them to float32). */
export function flux2DefaultSigmas(n: number): number[] {
  return linspace(1, 1 / n, n);
}

/**
 * Prompt embeddings (Flux2KleinPipeline._get_qwen3_prompt_embeds) for token ids [B, L] and their
 * attention mask: the hidden states of `layers` stacked per token, [B, L, layers x hidden]; padded
 * rows are computed (causally attending to the real tokens only) and kept.
 */
export function encodeFlux2Prompt(encoder: Qwen3TextEncoder, inputIds: Tensor, attentionMask: Tensor, layers: readonly number[]): Tensor {
  const [b, l] = inputIds.shape as [number, number];
  const lens = promptLengths(attentionMask, b, l);
  return scope(() => stack(encoder.hiddenStates(inputIds, lens, [...layers]), 2).reshape(b, l, -1));
}

/** What run() computes: a fully resolved request (the CFG negative prompt: the reference always uses ""). */
export interface Flux2KleinRunParams extends RunParams {
  /** reference images for editing (already checked), shared by every output */
  images: RgbImage[];
  /** initial noise [B, 128, H/16, W/16] instead of seeded noise */
  latents?: Tensor;
  /** receives the packed latents after every scheduler step (a tensor the caller may keep until the next step) */
  onStepLatents?: (step: number, latents: Tensor) => void;
}

export interface Flux2KleinRunResult {
  /** final packed latents [B, S, 128] */
  packedLatents: Tensor;
  /** what the VAE decodes (output_type='latent'): un-packed, de-normalised, un-patchified, [B, 32, H/8, W/8] */
  latents: Tensor;
  /** decoded images [B, H, W, 3] in [0, 1] (when decode is set) */
  images: Tensor | null;
  /** the packed reference tokens [1, R, 128] and their position ids (R x 4), when images were given */
  referenceLatents: Tensor | null;
  referenceIds: Int32Array;
  timings: Record<string, number>;
}

export class Flux2KleinPipeline implements Pipeline {
  private disposed = false;

  private constructor(
    readonly info: PipelineInfo,
    readonly settings: Flux2KleinSettings,
    private readonly device: Device,
    private readonly tokenizer: TextTokenizer,
    private readonly textEncoder: TextEncoderSlot<Qwen3TextEncoder>,
    private readonly transformer: Flux2Transformer2DModel,
    private readonly vae: AutoencoderKLFlux2,
    private readonly schedulerConfig: FlowMatchEulerDiscreteSchedulerConfig,
  ) {}

  static async load(ctx: PipelineLoadContext): Promise<Flux2KleinPipeline> {
    const { modelDir, componentPaths, device } = ctx;
    const dirs = await requireComponents(ctx, 'Flux2KleinPipeline');
    const schedulerConfig = expectConfig(await readComponentConfig(modelDir, 'scheduler', componentPaths), 'FlowMatchEulerDiscreteScheduler');
    if (!schedulerConfig.use_dynamic_shifting)
      throw new Error(`${modelDir}: Flux2KleinPipeline needs a scheduler with use_dynamic_shifting (it passes the empirical mu)`);
    new FlowMatchEulerDiscreteScheduler(schedulerConfig); // validates the configuration now rather than at the first request
    const teConfig = expectConfig(await readComponentConfig(modelDir, 'text_encoder', componentPaths), 'Qwen3Model', 'Qwen3ForCausalLM');
    const trConfig = expectConfig(await readComponentConfig(modelDir, 'transformer', componentPaths), 'Flux2Transformer2DModel');
    expectConfig(await readComponentConfig(modelDir, 'vae', componentPaths), 'AutoencoderKLFlux2');
    const settings = flux2KleinSettings(ctx.index.raw);
    const layers = settings.textEncoderOutLayers;
    const deepest = Math.max(...layers);
    if (deepest > teConfig.num_hidden_layers)
      throw new Error(`${modelDir}: the text encoder has ${teConfig.num_hidden_layers} layers, the pipeline reads hidden state ${deepest}`);
    if (layers.length * teConfig.hidden_size !== trConfig.joint_attention_dim)
      throw new Error(
        `${modelDir}: ${layers.length} stacked hidden states of width ${teConfig.hidden_size} make ${layers.length * teConfig.hidden_size} features, ` +
          `the transformer takes joint_attention_dim ${trConfig.joint_attention_dim}`,
      );
    const tokenizer = await loadTokenizer(dirs.tokenizer);
    // kept loaded between requests only on an accelerator without text-encoder offload
    const keepTextEncoder = device !== 'cpu' && !ctx.textEncoderCpuOffload;
    return loadModels(async (own) => {
      const transformer = own(await Flux2Transformer2DModel.load(dirs.transformer, { device }));
      const vae = own(await AutoencoderKLFlux2.load(dirs.vae, { device }));
      if (4 * vae.latentChannels !== transformer.inChannels || transformer.outChannels !== transformer.inChannels)
        throw new Error(
          `${modelDir}: the VAE's ${vae.latentChannels} latent channels patchify to ${4 * vae.latentChannels}, ` +
            `the transformer maps ${transformer.inChannels} -> ${transformer.outChannels} channels`,
        );
      const textEncoder = own(
        await TextEncoderSlot.open(() => Qwen3TextEncoder.load(dirs.text_encoder, { device, maxHiddenState: deepest }), keepTextEncoder),
      );
      const info: PipelineInfo = {
        modelPath: ctx.modelPath,
        pipelineClass: 'Flux2KleinPipeline',
        pipelineName: 'Flux2KleinPipeline',
        taskType: 'TI2I',
        defaults: settings.defaults,
        ditPrecision: precisionName(transformer.weightDtype),
        vaePrecision: precisionName(vae.weightDtype),
        device,
        maxInputImages: FLUX2_MAX_REFERENCE_IMAGES,
        loraTargets: ['transformer'],
      };
      return new Flux2KleinPipeline(info, settings, device, tokenizer, textEncoder, transformer, vae, schedulerConfig);
    });
  }

  /** The denoiser (LoRA and parallel code work on it). */
  get dit(): Flux2Transformer2DModel {
    return this.transformer;
  }

  /** Pixel sizes must be multiples of this: a 2x2 patch of VAE latents per token (vae_scale_factor x 2). */
  get sizeMultiple(): number {
    return 2 * this.vae.scaleFactor;
  }

  /** CFG runs when guidance_scale > 1 on a model that is not step-distilled (do_classifier_free_guidance). */
  usesCfg(guidanceScale: number): boolean {
    return guidanceScale > 1 && !this.settings.isDistilled;
  }

  validate(req: GenerateRequest): GenerateRequest {
    const d = this.settings.defaults;
    const prompts = requestPrompts(req);
    const images = req.images ?? [];
    if (images.length > FLUX2_MAX_REFERENCE_IMAGES)
      throw new RequestError(`FLUX.2-klein takes at most ${FLUX2_MAX_REFERENCE_IMAGES} reference images, got ${images.length}`, 'image');
    images.forEach((img, i) => checkReferenceImage(img, images.length > 1 ? `image[${i}]` : 'image'));
    const multiple = this.sizeMultiple;
    // editing without a size: the first reference image's prepared size (as the reference pipeline)
    const fromImage = images[0] ? referenceImageSize(images[0].width, images[0].height, multiple) : null;
    const { width, height } = requestSize(req, fromImage ?? d, multiple, multiple);
    if (req.numFrames !== undefined && req.numFrames !== 1) throw new RequestError(`Flux2KleinPipeline makes images: num_frames must be 1, got ${req.numFrames}`, 'num_frames');
    const sampling = requestSampling(req, d);
    const seeds = requestSeeds(req, sampling.seed, prompts.length * sampling.numOutputs);
    checkRequestLatents(req.latents, this.latentShape(prompts.length * sampling.numOutputs, height, width));
    const outputType = requestOutputType(req);
    return { ...req, prompt: prompts, images, width, height, numFrames: 1, fps: 0, ...sampling, seeds, outputType };
  }

  /** The initial latents before packing: [B, 128, H/16, W/16] (prepare_latents). */
  latentShape(batch: number, height: number, width: number): number[] {
    const f = this.sizeMultiple;
    return [batch, this.transformer.inChannels, Math.floor(height / f), Math.floor(width / f)];
  }

  /** Prompt embeddings [B, 512, layers x hidden] of the prompts (text ids are textIds(512)). */
  async encodePrompts(prompts: string[]): Promise<Tensor> {
    return this.textEncoder.use((encoder) =>
      scope(() => {
        const encodings = tokenizeQwenChatPrompts(this.tokenizer, prompts, { maxLength: FLUX2_MAX_SEQUENCE_LENGTH, enableThinking: false });
        const { inputIds, attentionMask } = encodingsToTensors(encodings, this.device);
        return encodeFlux2Prompt(encoder, inputIds, attentionMask, this.settings.textEncoderOutLayers);
      }),
    );
  }

  /** Prepared reference images (area limit, centre crop to multiples of 16) as [1, 3, H, W] in [-1, 1]. */
  preprocessReferenceImages(images: RgbImage[]): Tensor[] {
    return images.map((img) => imageToTensor(prepareReferenceImage(img, this.sizeMultiple), this.device));
  }

  /**
   * prepare_image_latents: each prepared image VAE-encoded (distribution mode), patchified and
   * normalised, packed and concatenated -> [1, R, 128], with the position ids (t = 10, 20, ...).
   */
  encodeReferenceImages(images: RgbImage[]): { latents: Tensor; ids: Int32Array } {
    const grids: Array<[number, number]> = [];
    const latents = scope(() => {
      const packed = this.preprocessReferenceImages(images).map((pixels) => {
        const z = this.vae.encodeToPatchified(pixels);
        grids.push([z.size(2), z.size(3)]);
        return packLatents(z);
      });
      return concat(packed, 1);
    });
    return { latents, ids: referenceIds(grids) };
  }

  async run(p: Flux2KleinRunParams): Promise<Flux2KleinRunResult> {
    this.checkLive();
    const stages = new RunStages(p);
    const doCfg = this.usesCfg(p.guidanceScale);
    const batch = p.prompts.length * p.numOutputs;
    const owned: Tensor[] = [];
    let latents: Tensor | null = null;
    try {
      // 1. prompt encoding (the negative prompt in the same encoder batch), repeated per output;
      //    CFG runs the prompt and negative branches as one transformer batch [cond..., uncond...]
      let t0 = performance.now();
      const n = p.prompts.length;
      const embeds = keep(await this.encodePrompts(doCfg ? [...p.prompts, p.negativePrompt] : p.prompts));
      owned.push(embeds);
      const promptOf = Array.from({ length: batch }, (_, i) => Math.floor(i / p.numOutputs));
      const context = keep(
        scope(() => {
          const pick = (i: number) => embeds.select(0, i);
          const items = promptOf.map(pick);
          if (doCfg) items.push(...promptOf.map(() => pick(n)));
          return stack(items, 0);
        }),
      );
      owned.push(context);
      await stages.done('encode_prompt', t0);
      stages.checkAbort();

      // 2. reference images -> packed reference tokens
      let reference: { latents: Tensor; ids: Int32Array } | null = null;
      if (p.images.length > 0) {
        t0 = performance.now();
        reference = this.encodeReferenceImages(p.images);
        owned.push(keep(reference.latents));
        await stages.done('encode_images', t0);
        stages.checkAbort();
      }

      // 3. latents: the given ones (copied) or seeded noise, packed to [B, S, 128]
      t0 = performance.now();
      const [, , lh, lw] = this.latentShape(batch, p.height, p.width) as [number, number, number, number];
      const given = p.latents;
      latents = keep(
        scope(() =>
          packLatents(given ? given.toDevice(this.device).to('float32') : seededNoise(this.latentShape(batch, p.height, p.width), itemSeeds(p, batch), this.device)),
        ),
      );
      const noiseIds = latentIds(lh, lw);
      const imgIds: PositionIds = reference ? concatIds([noiseIds, reference.ids]) : noiseIds;
      const rotary = keep(this.transformer.rotaryTables(textIds(FLUX2_MAX_SEQUENCE_LENGTH), imgIds, this.device));
      owned.push(rotary.cos, rotary.sin);
      await stages.done('prepare_latents', t0);

      // 4. denoising
      t0 = performance.now();
      const scheduler = new FlowMatchEulerDiscreteScheduler(this.schedulerConfig);
      const tokens = lh * lw;
      scheduler.setTimesteps(null, { sigmas: flux2DefaultSigmas(p.numInferenceSteps), mu: computeEmpiricalMu(tokens, p.numInferenceSteps) });
      scheduler.setBeginIndex(0);
      const txtIds = textIds(FLUX2_MAX_SEQUENCE_LENGTH);
      const stepped = scheduler.timesteps;
      for (let i = 0; i < stepped.length; ++i) {
        stages.checkAbort();
        const stepStart = performance.now();
        const t = stepped[i] as number;
        const x: Tensor = latents;
        const next = scope(() => {
          const items = doCfg ? 2 * batch : batch;
          let input = doCfg ? concat([x, x], 0) : x;
          if (reference) input = concat([input, reference.latents.expand(items, reference.latents.size(1), reference.latents.size(2))], 1);
          const timestep = tensor(new Array<number>(items).fill(Math.fround(t / 1000)), [items], { device: this.device });
          const out = this.transformer.forward(input, context, timestep, imgIds, txtIds, null, rotary).slice(1, 0, tokens);
          let noise = out;
          if (doCfg) {
            const cond = out.slice(0, 0, batch);
            const uncond = out.slice(0, batch);
            noise = add(uncond, mul(sub(cond, uncond), p.guidanceScale));
          }
          return scheduler.step(noise, t, x);
        });
        latents = keep(next);
        x.dispose();
        await stages.stepDone(i, next, stepStart, (packed) => this.previewImages(packed, lh, lw));
      }
      stages.time('denoise', t0);

      // 5. decoding
      const final: Tensor = latents;
      const decoderLatents = keep(scope(() => unpatchifyLatents(this.vae.denormalizePatchified(unpackLatents(final, lh, lw))).contiguous()));
      owned.push(decoderLatents);
      let images: Tensor | null = null;
      if (p.decode) {
        stages.checkAbort();
        t0 = performance.now();
        images = keep(this.decodeToImages(decoderLatents));
        owned.push(images);
        await stages.done('decode', t0);
      }
      const result: Flux2KleinRunResult = {
        packedLatents: final,
        latents: decoderLatents,
        images,
        referenceLatents: reference?.latents ?? null,
        referenceIds: reference?.ids ?? new Int32Array(0),
        timings: stages.timings,
      };
      // the result's tensors now belong to the caller
      latents = null;
      for (const t of [decoderLatents, images, reference?.latents]) if (t) owned.splice(owned.indexOf(t), 1);
      return result;
    } finally {
      disposeAll([owned, latents]);
    }
  }

  /** VAE decode of decoder latents [B, 32, H/8, W/8] -> images [B, H, W, 3] in [0, 1] (the image processor's postprocess). */
  decodeToImages(latents: Tensor): Tensor {
    return scope(() => pixelsToUnitRange(this.vae.decode(latents)));
  }

  private previewImages(packed: Tensor, h: number, w: number): RgbImage[] {
    return scope(() => toRgbImages(this.decodeToImages(unpatchifyLatents(this.vae.denormalizePatchified(unpackLatents(packed, h, w))))));
  }

  async generate(request: GenerateRequest): Promise<GenerateResult> {
    const req = this.validate(request);
    resetPeakMemory();
    const result = await this.run({ ...runParamsOf(req), images: req.images ?? [] });
    result.packedLatents.dispose();
    result.referenceLatents?.dispose();
    return generateResult(req, this.device, { latents: result.latents, decoded: result.images, timings: result.timings });
  }

  private checkLive(): void {
    if (this.disposed) throw new Error('Flux2KleinPipeline was disposed');
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.textEncoder.dispose();
    this.transformer.dispose();
    this.vae.dispose();
  }
}

registerPipeline('Flux2KleinPipeline', (ctx) => Flux2KleinPipeline.load(ctx));
