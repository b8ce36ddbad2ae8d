// ZImagePipeline checks: Qwen3 text encoding, one transformer forward, the VAE both ways, the
// scheduler tables and stepping, and the full pipeline (with and without CFG), each computed with
// this project's code from the case's model folder.
import { stack } from '../engine/ops/basic.js';
import { disposeAll, keep, scope, type Tensor, tensor } from '../engine/tensor.js';
import { expectConfig, readComponentConfig } from '../io/diffusers.js';
import { Qwen3TextEncoder } from '../models/qwen3/encoder.js';
import { AutoencoderKL } from '../models/vae/autoencoder-kl.js';
import { ZImageTransformer2DModel } from '../models/zimage/transformer.js';
import { loadPipeline } from '../pipelines/load.js';
import { encodeZImagePrompt, ZIMAGE_MAX_SEQUENCE_LENGTH, ZImagePipeline, zimageDefaultSigmas } from '../pipelines/zimage.js';
import { FlowMatchEulerDiscreteScheduler } from '../schedulers/flow-match-euler.js';
import { type CheckContext, registerCheck } from './registry.js';

const CLASS = 'ZImagePipeline';

function param<T>(ctx: CheckContext, name: string, ok: (v: unknown) => boolean, what: string): T {
  const v = ctx.check.params[name];
  if (!ok(v)) throw new Error(`check '${ctx.check.name}': params.${name} must be ${what}`);
  return v as T;
}

const isPositiveInt = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v > 0;
const isNumber = (v: unknown) => typeof v === 'number' && Number.isFinite(v);

registerCheck(CLASS, 'text_encode', async (ctx) => {
  const cc = await readComponentConfig(ctx.modelDir, 'text_encoder');
  const encoder = await Qwen3TextEncoder.load(cc.dir, { device: ctx.device, maxHiddenState: -2 });
  try {
    const index = ctx.check.params.hidden_states_index;
    if (index !== undefined && index !== -2) throw new Error(`check '${ctx.check.name}': ZImagePipeline reads hidden_states[-2], the check asks for ${String(index)}`);
    const ids = ctx.inputTensor('input_ids').toDevice(ctx.device);
    const mask = ctx.inputTensor('attention_mask').toDevice(ctx.device);
    return { prompt_embeds: encodeZImagePrompt(encoder, ids, mask) };
  } finally {
    encoder.dispose();
  }
});

registerCheck(CLASS, 'transformer', async (ctx) => {
  const cc = await readComponentConfig(ctx.modelDir, 'transformer');
  const model = await ZImageTransformer2DModel.load(cc.dir, { device: ctx.device });
  try {
    const p = ctx.check.params;
    const sample = model.forward(
      ctx.inputList('x').map((x) => x.toDevice(ctx.device)),
      ctx.inputTensor('t').toDevice(ctx.device),
      ctx.inputList('cap_feats').map((c) => c.toDevice(ctx.device)),
      isPositiveInt(p.patch_size) ? (p.patch_size as number) : 2,
      isPositiveInt(p.f_patch_size) ? (p.f_patch_size as number) : 1,
    );
    return { sample };
  } finally {
    model.dispose();
  }
});

registerCheck(CLASS, 'vae_decode', async (ctx) => {
  const cc = await readComponentConfig(ctx.modelDir, 'vae');
  const vae = await AutoencoderKL.load(cc.dir, { device: ctx.device });
  try {
    return { sample: vae.decode(ctx.inputTensor('latents').toDevice(ctx.device)) };
  } finally {
    vae.dispose();
  }
});

registerCheck(CLASS, 'vae_encode', async (ctx) => {
  const cc = await readComponentConfig(ctx.modelDir, 'vae');
  const vae = await AutoencoderKL.load(cc.dir, { device: ctx.device });
  try {
    const { mean, logvar } = vae.encode(ctx.inputTensor('image').toDevice(ctx.device));
    return { latent_mean: mean, latent_logvar: logvar, latents_normalized: vae.normalizeLatents(mean) };
  } finally {
    vae.dispose();
  }
});

/**
 * Both scheduler checks: `scheduler` (timesteps and sigmas of set_timesteps(sigmas=linspace(1, 1/n, n),
 * mu) for each entry of params.entries, outputs timesteps_<x> / sigmas_<x> in entry order) and
 * `scheduler_step` (fixed model outputs, already negated as the pipeline passes them, stepped from
 * an initial sample).
 */
registerCheck(CLASS, 'scheduler', async (ctx) => {
  const config = expectConfig(await readComponentConfig(ctx.modelDir, 'scheduler'), 'FlowMatchEulerDiscreteScheduler');
  if ('model_outputs' in ctx.check.inputs) {
    const steps = param<number>(ctx, 'num_inference_steps', isPositiveInt, 'a positive integer');
    const scheduler = new FlowMatchEulerDiscreteScheduler(config);
    scheduler.setTimesteps(null, { sigmas: zimageDefaultSigmas(steps) });
    scheduler.setBeginIndex(0);
    const outputs = ctx.inputTensor('model_outputs').toDevice(ctx.device);
    const samples = scope(() => {
      let x = ctx.inputTensor('sample').toDevice(ctx.device);
      const all: Tensor[] = [];
      scheduler.timesteps.forEach((t, i) => {
        x = scheduler.step(outputs.select(0, i), t, x);
        all.push(x);
      });
      return stack(all, 0);
    });
    return { timesteps: tensor(scheduler.timesteps, [scheduler.timesteps.length]), samples };
  }
  type Entry = { num_inference_steps: number; input_sigmas?: number[]; mu?: number };
  const entries = param<Entry[]>(
    ctx,
    'entries',
    (v) => Array.isArray(v) && v.every((e) => e && isPositiveInt((e as Entry).num_inference_steps)),
    'a list of {num_inference_steps, input_sigmas?, mu?}',
  );
  const timestepOutputs = Object.keys(ctx.check.outputs).filter((k) => k.startsWith('timesteps_'));
  if (timestepOutputs.length !== entries.length)
    throw new Error(`check '${ctx.check.name}': ${entries.length} entries but ${timestepOutputs.length} timesteps_* outputs`);
  const result: Record<string, Tensor> = {};
  entries.forEach((e, i) => {
    const suffix = timestepOutputs[i]!.slice('timesteps_'.length);
    const sigmas = zimageDefaultSigmas(e.num_inference_steps);
    if (e.input_sigmas && (e.input_sigmas.length !== sigmas.length || e.input_sigmas.some((s, j) => s !== sigmas[j])))
      throw new Error(`check '${ctx.check.name}': the input sigmas of entry ${i} are not linspace(1, 1/n, n) as this pipeline computes it`);
    const scheduler = new FlowMatchEulerDiscreteScheduler(config);
    scheduler.setTimesteps(null, { sigmas, ...(isNumber(e.mu) ? { mu: e.mu as number } : {}) });
    result[`timesteps_${suffix}`] = tensor(scheduler.timesteps, [scheduler.timesteps.length]);
    result[`sigmas_${suffix}`] = tensor(scheduler.sigmas, [scheduler.sigmas.length]);
  });
  return result;
});

registerCheck(CLASS, 'pipeline', async (ctx) => {
  const p = ctx.check.params;
  const int = (name: string) => param<number>(ctx, name, isPositiveInt, 'a positive integer');
  const maxLen = int('max_sequence_length');
  if (maxLen !== ZIMAGE_MAX_SEQUENCE_LENGTH)
    throw new Error(`check '${ctx.check.name}': ZImagePipeline pads prompts to ${ZIMAGE_MAX_SEQUENCE_LENGTH} tokens, the check asks for ${maxLen}`);
  const pipeline = await loadPipeline(ctx.modelDir, { device: ctx.device });
  if (!(pipeline instanceof ZImagePipeline)) throw new Error(`${ctx.modelDir} did not load as a ZImagePipeline`);
  const stepLatents: Tensor[] = [];
  try {
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
      onStepLatents: (_, latents) => stepLatents.push(keep(latents.clone())),
    });
    return { latents: run.latents, images: run.images as Tensor, step_latents: stack(stepLatents, 0) };
  } finally {
    disposeAll(stepLatents);
    pipeline.dispose();
  }
});
