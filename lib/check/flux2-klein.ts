// Flux2KleinPipeline checks: the stacked Qwen3 text encoding, transformer forwards (with and without
// reference tokens), the VAE both ways with the batch-norm normalisation, the scheduler tables with
// the empirical mu and stepping, and the full pipeline (CFG, no CFG, image editing), each computed
// with this project's code from the case's model folder.
import { disposeAll, type Tensor, tensor } from '../engine/tensor.js';
import { expectConfig, readComponentConfig } from '../io/diffusers.js';
import { Flux2Transformer2DModel } from '../models/flux2/transformer.js';
import { textIds } from '../models/flux2/tokens.js';
import { Qwen3TextEncoder } from '../models/qwen3/encoder.js';
import { AutoencoderKLFlux2 } from '../models/vae/autoencoder-kl-flux2.js';
import {
  computeEmpiricalMu, encodeFlux2Prompt, FLUX2_MAX_SEQUENCE_LENGTH, FLUX2_TEXT_ENCODER_OUT_LAYERS, flux2DefaultSigmas, Flux2KleinPipeline,
} from '../pipelines/flux2-klein.js';
import type { RgbImage } from '../pipelines/types.js';
import { FlowMatchEulerDiscreteScheduler } from '../schedulers/flow-match-euler.js';
import {
  checkMaxSequenceLength, isNumber, isPositiveInt, param, positiveIntParam, scheduleTablesCheck, stepSchedulerCheck, withComponent,
  withPipeline,
} from './common.js';
import { type CheckContext, registerCheck } from './registry.js';

const CLASS = 'Flux2KleinPipeline';
const sameList = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/** The check's text_encoder_out_layers, which must be the pipeline's. */
function outLayers(ctx: CheckContext): readonly number[] {
  const layers = ctx.check.params.text_encoder_out_layers;
  if (layers !== undefined && !(Array.isArray(layers) && sameList(layers as number[], FLUX2_TEXT_ENCODER_OUT_LAYERS)))
    throw new Error(`check '${ctx.check.name}': the pipeline stacks hidden states ${FLUX2_TEXT_ENCODER_OUT_LAYERS}, the check asks for ${JSON.stringify(layers)}`);
  return FLUX2_TEXT_ENCODER_OUT_LAYERS;
}

registerCheck(CLASS, 'text_encode', (ctx) => {
  const layers = outLayers(ctx);
  return withComponent(
    ctx,
    'text_encoder',
    (dir) => Qwen3TextEncoder.load(dir, { device: ctx.device, maxHiddenState: Math.max(...layers) }),
    (encoder) => {
      const ids = ctx.inputTensor('input_ids').toDevice(ctx.device);
      const mask = ctx.inputTensor('attention_mask').toDevice(ctx.device);
      const [b, l] = ids.shape as [number, number];
      const promptEmbeds = encodeFlux2Prompt(encoder, ids, mask, layers);
      const one = textIds(l);
      const all = new BigInt64Array(b * one.length);
      for (let i = 0; i < b; ++i) all.set(BigInt64Array.from(one, (v) => BigInt(v)), i * one.length);
      return { prompt_embeds: promptEmbeds, text_ids: tensor(all, [b, l, 4]) };
    },
  );
});

registerCheck(CLASS, 'transformer', (ctx) =>
  withComponent(
    ctx,
    'transformer',
    (dir) => Flux2Transformer2DModel.load(dir, { device: ctx.device }),
    (model) => {
      const sample = model.forward(
        ctx.inputTensor('hidden_states').toDevice(ctx.device),
        ctx.inputTensor('encoder_hidden_states').toDevice(ctx.device),
        ctx.inputTensor('timestep').toDevice(ctx.device),
        ctx.inputTensor('img_ids'),
        ctx.inputTensor('txt_ids'),
      );
      return { sample };
    },
  ),
);

registerCheck(CLASS, 'vae_decode', (ctx) =>
  withComponent(
    ctx,
    'vae',
    (dir) => AutoencoderKLFlux2.load(dir, { device: ctx.device }),
    (vae) => ({ sample: vae.decode(ctx.inputTensor('latents').toDevice(ctx.device)) }),
  ),
);

registerCheck(CLASS, 'vae_encode', (ctx) =>
  withComponent(
    ctx,
    'vae',
    (dir) => AutoencoderKLFlux2.load(dir, { device: ctx.device }),
    (vae) => {
      const eps = ctx.check.params.batch_norm_eps;
      if (eps !== undefined && eps !== vae.config.batch_norm_eps)
        throw new Error(`check '${ctx.check.name}': batch_norm_eps ${String(eps)} differs from the VAE config's ${vae.config.batch_norm_eps}`);
      const image = ctx.inputTensor('image').toDevice(ctx.device);
      const { mean, logvar } = vae.encode(image);
      return { latent_mean: mean, latent_logvar: logvar, image_latents: vae.encodeToPatchified(image) };
    },
  ),
);

/**
 * Both scheduler checks: `scheduler` (timesteps and sigmas of set_timesteps(sigmas=linspace(1, 1/n, n),
 * mu) for each entry of params.entries, mu recomputed from the image token count and compared with
 * the recorded one; outputs timesteps_<x> / sigmas_<x> in entry order) and `scheduler_step` (fixed
 * model outputs stepped from an initial sample).
 */
registerCheck(CLASS, 'scheduler', async (ctx) => {
  const config = expectConfig(await readComponentConfig(ctx.modelDir, 'scheduler'), 'FlowMatchEulerDiscreteScheduler');
  type Entry = { num_inference_steps: number; image_seq_len: number; mu?: number };
  const schedule = (e: Entry, where: string) => {
    const mu = computeEmpiricalMu(e.image_seq_len, e.num_inference_steps);
    if (isNumber(e.mu) && Math.abs(mu - (e.mu as number)) > 1e-12 * Math.max(1, Math.abs(mu)))
      throw new Error(`check '${ctx.check.name}': ${where} records mu ${e.mu}, compute_empirical_mu gives ${mu}`);
    const scheduler = new FlowMatchEulerDiscreteScheduler(config);
    scheduler.setTimesteps(null, { sigmas: flux2DefaultSigmas(e.num_inference_steps), mu });
    return scheduler;
  };
  const isEntry = (e: unknown) => !!e && isPositiveInt((e as Entry).num_inference_steps) && isPositiveInt((e as Entry).image_seq_len);
  if ('model_outputs' in ctx.check.inputs) {
    if (!isEntry(ctx.check.params)) throw new Error(`check '${ctx.check.name}': params must give num_inference_steps and image_seq_len`);
    const scheduler = schedule(ctx.check.params as unknown as Entry, 'params');
    scheduler.setBeginIndex(0);
    return stepSchedulerCheck(ctx, scheduler);
  }
  return scheduleTablesCheck<Entry>(ctx, isEntry, 'a list of {num_inference_steps, image_seq_len, mu?}', (e, i) => schedule(e, `entry ${i}`));
});

/** A float [H, W, 3] image of uint8 / 255 values back to the 8-bit image the reference pipeline received. */
function toRgb(image: Tensor): RgbImage {
  const [height, width] = image.shape as [number, number];
  const data = Uint8Array.from(image.toFloat32(), (v) => Math.round(v * 255));
  return { width, height, data };
}

registerCheck(CLASS, 'pipeline', (ctx) => {
  const p = ctx.check.params;
  const int = (name: string) => positiveIntParam(ctx, name);
  checkMaxSequenceLength(ctx, CLASS, FLUX2_MAX_SEQUENCE_LENGTH);
  outLayers(ctx);
  if (typeof p.negative_prompt_when_cfg === 'string' && p.negative_prompt_when_cfg !== '')
    throw new Error(`check '${ctx.check.name}': the reference's CFG negative prompt is "", the check names ${JSON.stringify(p.negative_prompt_when_cfg)}`);
  return withPipeline(ctx, Flux2KleinPipeline, CLASS, async (pipeline, steps) => {
    if (typeof p.is_distilled === 'boolean' && p.is_distilled !== pipeline.settings.isDistilled)
      throw new Error(`check '${ctx.check.name}': is_distilled ${p.is_distilled} differs from the model's ${pipeline.settings.isDistilled}`);
    const extra: Record<string, Tensor> = {};
    try {
      const images = 'image' in ctx.check.inputs ? [toRgb(ctx.inputTensor('image'))] : [];
      // height/width default as the pipeline resolves them (from the reference image when editing)
      const size = pipeline.validate({
        prompt: '',
        images,
        ...(p.height !== undefined ? { height: int('height') } : {}),
        ...(p.width !== undefined ? { width: int('width') } : {}),
      });
      if (images.length > 0) {
        const [pre] = pipeline.preprocessReferenceImages(images) as [Tensor];
        extra.image_preprocessed = pre;
      }
      const run = await pipeline.run({
        prompts: [param<string>(ctx, 'prompt', (v) => typeof v === 'string', 'a string')],
        negativePrompt: '',
        width: size.width as number,
        height: size.height as number,
        numInferenceSteps: int('num_inference_steps'),
        guidanceScale: param<number>(ctx, 'guidance_scale', isNumber, 'a number'),
        numOutputs: 1,
        seed: 0,
        images,
        latents: ctx.inputTensor('latents'),
        decode: true,
        onStepLatents: steps.record,
      });
      if (run.referenceLatents) {
        extra.image_latents = run.referenceLatents;
        const ids = run.referenceIds;
        extra.image_latent_ids = tensor(BigInt64Array.from(ids, (v) => BigInt(v)), [1, ids.length / 4, 4]);
      }
      return {
        latents_packed: run.packedLatents,
        latents: run.latents,
        images: run.images as Tensor,
        step_latents: steps.stacked(),
        ...extra,
      };
    } catch (err) {
      disposeAll(extra);
      throw err;
    }
  });
});
