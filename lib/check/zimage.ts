// ZImagePipeline checks: Qwen3 text encoding, one transformer forward, the VAE both ways, the
// scheduler tables and stepping, and the full pipeline (with and without CFG), each computed with
// this project's code from the case's model folder.
import type { Tensor } from '../engine/tensor.js';
import { expectConfig, readComponentConfig } from '../io/diffusers.js';
import { Qwen3TextEncoder } from '../models/qwen3/encoder.js';
import { AutoencoderKL } from '../models/vae/autoencoder-kl.js';
import { ZImageTransformer2DModel } from '../models/zimage/transformer.js';
import { encodeZImagePrompt, ZIMAGE_MAX_SEQUENCE_LENGTH, ZImagePipeline, zimageDefaultSigmas } from '../pipelines/zimage.js';
import { FlowMatchEulerDiscreteScheduler } from '../schedulers/flow-match-euler.js';
import {
  checkMaxSequenceLength, isNumber, isPositiveInt, param, positiveIntParam, scheduleTablesCheck, stepSchedulerCheck, withComponent,
  withPipeline,
} from './common.js';
import { registerCheck } from './registry.js';

const CLASS = 'ZImagePipeline';

registerCheck(CLASS, 'text_encode', (ctx) =>
  withComponent(
    ctx,
    'text_encoder',
    (dir) => Qwen3TextEncoder.load(dir, { device: ctx.device, maxHiddenState: -2 }),
    (encoder) => {
      const index = ctx.check.params.hidden_states_index;
      if (index !== undefined && index !== -2) throw new Error(`check '${ctx.check.name}': ZImagePipeline reads hidden_states[-2], the check asks for ${String(index)}`);
      const ids = ctx.inputTensor('input_ids').toDevice(ctx.device);
      const mask = ctx.inputTensor('attention_mask').toDevice(ctx.device);
      return { prompt_embeds: encodeZImagePrompt(encoder, ids, mask) };
    },
  ),
);

registerCheck(CLASS, 'transformer', (ctx) =>
  withComponent(
    ctx,
    'transformer',
    (dir) => ZImageTransformer2DModel.load(dir, { device: ctx.device }),
    (model) => {
      const p = ctx.check.params;
      const sample = model.forward(
        ctx.inputList('x').map((x) => x.toDevice(ctx.device)),
        ctx.inputTensor('t').toDevice(ctx.device),
        ctx.inputList('cap_feats').map((c) => c.toDevice(ctx.device)),
        isPositiveInt(p.patch_size) ? (p.patch_size as number) : 2,
        isPositiveInt(p.f_patch_size) ? (p.f_patch_size as number) : 1,
      );
      return { sample };
    },
  ),
);

registerCheck(CLASS, 'vae_decode', (ctx) =>
  withComponent(
    ctx,
    'vae',
    (dir) => AutoencoderKL.load(dir, { device: ctx.device }),
    (vae) => ({ sample: vae.decode(ctx.inputTensor('latents').toDevice(ctx.device)) }),
  ),
);

registerCheck(CLASS, 'vae_encode', (ctx) =>
  withComponent(
    ctx,
    'vae',
    (dir) => AutoencoderKL.load(dir, { device: ctx.device }),
    (vae) => {
      const { mean, logvar } = vae.encode(ctx.inputTensor('image').toDevice(ctx.device));
      return { latent_mean: mean, latent_logvar: logvar, latents_normalized: vae.normalizeLatents(mean) };
    },
  ),
);

/**
 * Both scheduler checks: `scheduler` (timesteps and sigmas of set_timesteps(sigmas=linspace(1, 1/n, n),
 * mu) for each entry of params.entries, outputs timesteps_<x> / sigmas_<x> in entry order) and
 * `scheduler_step` (fixed model outputs, already negated as the pipeline passes them, stepped from
 * an initial sample).
 */
registerCheck(CLASS, 'scheduler', async (ctx) => {
  const config = expectConfig(await readComponentConfig(ctx.modelDir, 'scheduler'), 'FlowMatchEulerDiscreteScheduler');
  if ('model_outputs' in ctx.check.inputs) {
    const scheduler = new FlowMatchEulerDiscreteScheduler(config);
    scheduler.setTimesteps(null, { sigmas: zimageDefaultSigmas(positiveIntParam(ctx, 'num_inference_steps')) });
    scheduler.setBeginIndex(0);
    return stepSchedulerCheck(ctx, scheduler);
  }
  type Entry = { num_inference_steps: number; input_sigmas?: number[]; mu?: number };
  return scheduleTablesCheck<Entry>(
    ctx,
    (e) => !!e && isPositiveInt((e as Entry).num_inference_steps),
    'a list of {num_inference_steps, input_sigmas?, mu?}',
    (e, i) => {
      const sigmas = zimageDefaultSigmas(e.num_inference_steps);
      if (e.input_sigmas && (e.input_sigmas.length !== sigmas.length || e.input_sigmas.some((s, j) => s !== sigmas[j])))
        throw new Error(`check '${ctx.check.name}': the input sigmas of entry ${i} are not linspace(1, 1/n, n) as this pipeline computes it`);
      const scheduler = new FlowMatchEulerDiscreteScheduler(config);
      scheduler.setTimesteps(null, { sigmas, ...(isNumber(e.mu) ? { mu: e.mu as number } : {}) });
      return scheduler;
    },
  );
});

registerCheck(CLASS, 'pipeline', (ctx) => {
  const p = ctx.check.params;
  const int = (name: string) => positiveIntParam(ctx, name);
  checkMaxSequenceLength(ctx, CLASS, ZIMAGE_MAX_SEQUENCE_LENGTH);
  return withPipeline(ctx, ZImagePipeline, CLASS, async (pipeline, steps) => {
    const normalization = p.cfg_normalization;
    const run = await pipeline.run({
      prompts: [param<string>(ctx, 'prompt', (v) => typeof v === 'string', 'a string')],
      negativePrompt: typeof p.negative_prompt === 'string' ? p.negative_prompt : '',
      width: int('width'),
      height: int('height'),
      numInferenceSteps: int('num_inference_steps'),
      guidanceScale: param<number>(ctx, 'guidance_scale', isNumber, 'a number'),
      cfgNormalization: typeof normalization === 'boolean' ? Number(normalization) : isNumber(normalization) ? (normalization as number) : 0,
      cfgTruncation: isNumber(p.cfg_truncation) ? (p.cfg_truncation as number) : 1,
      numOutputs: 1,
      seed: 0,
      latents: ctx.inputTensor('latents'),
      decode: true,
      onStepLatents: steps.record,
    });
    return { latents: run.latents, images: run.images as Tensor, step_latents: steps.stacked() };
  });
});
