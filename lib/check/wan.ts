// WanPipeline checks: text encoding, one transformer forward, the scheduler tables and stepping,
// and the full pipeline, each computed with this project's code from the case's model folder.
import { stack } from '../engine/ops/basic.js';
import { disposeAll, keep, scope, type Tensor, tensor } from '../engine/tensor.js';
import { expectConfig, readComponentConfig } from '../io/diffusers.js';
import { parseComponentConfig } from '../io/configs.js';
import { UMT5Encoder } from '../models/t5/umt5.js';
import { WanTransformer3DModel } from '../models/wan/transformer.js';
import { loadPipeline } from '../pipelines/load.js';
import { WanPipeline } from '../pipelines/wan.js';
import { UniPCMultistepScheduler } from '../schedulers/unipc.js';
import { type CheckContext, registerCheck } from './registry.js';

function param<T>(ctx: CheckContext, name: string, ok: (v: unknown) => boolean, what: string): T {
  const v = ctx.check.params[name];
  if (!ok(v)) throw new Error(`check '${ctx.check.name}': params.${name} must be ${what}`);
  return v as T;
}

const isPositiveInt = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v > 0;

registerCheck('WanPipeline', 'text_encode', async (ctx) => {
  const cc = await readComponentConfig(ctx.modelDir, 'text_encoder');
  const encoder = await UMT5Encoder.load(cc.dir, { device: ctx.device });
  try {
    const maxLen = param<number>(ctx, 'max_sequence_length', isPositiveInt, 'a positive integer');
    const embeds = scope(() =>
      encoder.encodePrompt(ctx.inputTensor('input_ids').toDevice(ctx.device), ctx.inputTensor('attention_mask').toDevice(ctx.device), maxLen),
    );
    return { prompt_embeds: embeds };
  } finally {
    encoder.dispose();
  }
});

registerCheck('WanPipeline', 'transformer', async (ctx) => {
  const cc = await readComponentConfig(ctx.modelDir, 'transformer');
  const model = await WanTransformer3DModel.load(cc.dir, { device: ctx.device });
  try {
    const sample = scope(() =>
      model.forward(
        ctx.inputTensor('hidden_states').toDevice(ctx.device),
        ctx.inputTensor('timestep').toDevice(ctx.device),
        ctx.inputTensor('encoder_hidden_states').toDevice(ctx.device),
      ),
    );
    return { sample };
  } finally {
    model.dispose();
  }
});

/**
 * Both scheduler checks: `scheduler` (timesteps and sigmas of set_timesteps for each entry of
 * params.entries, outputs timesteps_<x> / sigmas_<x> in entry order) and `scheduler_step` (a fixed
 * sequence of model outputs stepped from an initial sample).
 */
registerCheck('WanPipeline', 'scheduler', async (ctx) => {
  const cc = await readComponentConfig(ctx.modelDir, 'scheduler');
  const base = expectConfig(cc, 'UniPCMultistepScheduler');
  if ('model_outputs' in ctx.check.inputs) {
    const steps = param<number>(ctx, 'num_inference_steps', isPositiveInt, 'a positive integer');
    const scheduler = new UniPCMultistepScheduler(base);
    try {
      scheduler.setTimesteps(steps);
      const samples = scope(() => {
        const outputs = ctx.inputTensor('model_outputs').toDevice(ctx.device);
        let x = ctx.inputTensor('sample').toDevice(ctx.device);
        const all: Tensor[] = [];
        scheduler.timesteps.forEach((t, i) => {
          x = scheduler.step(outputs.select(0, i), t, x);
          all.push(x);
        });
        return stack(all, 0);
      });
      return { timesteps: tensor(scheduler.timesteps, [scheduler.timesteps.length], { dtype: 'int64' }), samples };
    } finally {
      scheduler.dispose();
    }
  }
  type Entry = { num_inference_steps: number; flow_shift?: number };
  const entries = param<Entry[]>(
    ctx,
    'entries',
    (v) => Array.isArray(v) && v.every((e) => e && isPositiveInt((e as Entry).num_inference_steps)),
    'a list of {num_inference_steps, flow_shift?}',
  );
  const timestepOutputs = Object.keys(ctx.check.outputs).filter((k) => k.startsWith('timesteps_'));
  if (timestepOutputs.length !== entries.length)
    throw new Error(`check '${ctx.check.name}': ${entries.length} entries but ${timestepOutputs.length} timesteps_* outputs`);
  const result: Record<string, Tensor> = {};
  entries.forEach((e, i) => {
    const suffix = timestepOutputs[i]!.slice('timesteps_'.length);
    const config = e.flow_shift === undefined ? base : parseComponentConfig('UniPCMultistepScheduler', { ...base, flow_shift: e.flow_shift }, cc.file);
    const scheduler = new UniPCMultistepScheduler(config);
    scheduler.setTimesteps(e.num_inference_steps);
    result[`timesteps_${suffix}`] = tensor(scheduler.timesteps, [scheduler.timesteps.length], { dtype: 'int64' });
    result[`sigmas_${suffix}`] = tensor(scheduler.sigmas, [scheduler.sigmas.length]);
  });
  return result;
});

registerCheck('WanPipeline', 'pipeline', async (ctx) => {
  const p = ctx.check.params;
  const int = (name: string) => param<number>(ctx, name, isPositiveInt, 'a positive integer');
  const maxLen = int('max_sequence_length');
  if (maxLen !== 512) throw new Error(`check '${ctx.check.name}': WanPipeline pads prompts to 512 tokens, the check asks for ${maxLen}`);
  const pipeline = await loadPipeline(ctx.modelDir, { device: ctx.device });
  if (!(pipeline instanceof WanPipeline)) throw new Error(`${ctx.modelDir} did not load as a WanPipeline`);
  const stepLatents: Tensor[] = [];
  try {
    const run = await pipeline.run({
      prompts: [param<string>(ctx, 'prompt', (v) => typeof v === 'string', 'a string')],
      negativePrompt: typeof p.negative_prompt === 'string' ? p.negative_prompt : pipeline.info.defaults.negativePrompt,
      width: int('width'),
      height: int('height'),
      numFrames: int('num_frames'),
      numInferenceSteps: int('num_inference_steps'),
      guidanceScale: param<number>(ctx, 'guidance_scale', (v) => typeof v === 'number', 'a number'),
      numOutputs: 1,
      seed: 0,
      latents: ctx.inputTensor('latents'),
      decode: true,
      onStepLatents: (_, latents) => stepLatents.push(keep(latents.clone())),
    });
    const stepped = stack(stepLatents, 0);
    return { latents: run.latents, video: run.video as Tensor, step_latents: stepped };
  } finally {
    disposeAll(stepLatents);
    pipeline.dispose();
  }
});
