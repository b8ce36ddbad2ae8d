// WanPipeline checks: text encoding, one transformer forward, the scheduler tables and stepping,
// and the full pipeline, each computed with this project's code from the case's model folder.
import { scope, type Tensor } from '../engine/tensor.js';
import { expectConfig, readComponentConfig } from '../io/diffusers.js';
import { parseComponentConfig } from '../io/configs.js';
import { UMT5Encoder } from '../models/t5/umt5.js';
import { WanTransformer3DModel } from '../models/wan/transformer.js';
import { WAN_MAX_SEQUENCE_LENGTH, WanPipeline } from '../pipelines/wan.js';
import { UniPCMultistepScheduler } from '../schedulers/unipc.js';
import {
  checkMaxSequenceLength, isPositiveInt, param, positiveIntParam, scheduleTablesCheck, stepSchedulerCheck, withComponent, withPipeline,
} from './common.js';
import { registerCheck } from './registry.js';

const CLASS = 'WanPipeline';

registerCheck(CLASS, 'text_encode', (ctx) =>
  withComponent(
    ctx,
    'text_encoder',
    (dir) => UMT5Encoder.load(dir, { device: ctx.device }),
    (encoder) => {
      const maxLen = positiveIntParam(ctx, 'max_sequence_length');
      const embeds = scope(() =>
        encoder.encodePrompt(ctx.inputTensor('input_ids').toDevice(ctx.device), ctx.inputTensor('attention_mask').toDevice(ctx.device), maxLen),
      );
      return { prompt_embeds: embeds };
    },
  ),
);

registerCheck(CLASS, 'transformer', (ctx) =>
  withComponent(
    ctx,
    'transformer',
    (dir) => WanTransformer3DModel.load(dir, { device: ctx.device }),
    (model) => {
      const sample = scope(() =>
        model.forward(
          ctx.inputTensor('hidden_states').toDevice(ctx.device),
          ctx.inputTensor('timestep').toDevice(ctx.device),
          ctx.inputTensor('encoder_hidden_states').toDevice(ctx.device),
        ),
      );
      return { sample };
    },
  ),
);

/**
 * Both scheduler checks: `scheduler` (timesteps and sigmas of set_timesteps for each entry of
 * params.entries, outputs timesteps_<x> / sigmas_<x> in entry order) and `scheduler_step` (a fixed
 * sequence of model outputs stepped from an initial sample).
 */
registerCheck(CLASS, 'scheduler', async (ctx) => {
  const cc = await readComponentConfig(ctx.modelDir, 'scheduler');
  const base = expectConfig(cc, 'UniPCMultistepScheduler');
  if ('model_outputs' in ctx.check.inputs) {
    const steps = positiveIntParam(ctx, 'num_inference_steps');
    const scheduler = new UniPCMultistepScheduler(base);
    try {
      scheduler.setTimesteps(steps);
      return stepSchedulerCheck(ctx, scheduler, 'int64');
    } finally {
      scheduler.dispose();
    }
  }
  type Entry = { num_inference_steps: number; flow_shift?: number };
  return scheduleTablesCheck<Entry>(
    ctx,
    (e) => !!e && isPositiveInt((e as Entry).num_inference_steps),
    'a list of {num_inference_steps, flow_shift?}',
    (e) => {
      const config = e.flow_shift === undefined ? base : parseComponentConfig('UniPCMultistepScheduler', { ...base, flow_shift: e.flow_shift }, cc.file);
      const scheduler = new UniPCMultistepScheduler(config);
      scheduler.setTimesteps(e.num_inference_steps);
      return scheduler;
    },
    'int64',
  );
});

registerCheck(CLASS, 'pipeline', (ctx) => {
  const p = ctx.check.params;
  const int = (name: string) => positiveIntParam(ctx, name);
  checkMaxSequenceLength(ctx, CLASS, WAN_MAX_SEQUENCE_LENGTH);
  return withPipeline(ctx, WanPipeline, CLASS, async (pipeline, steps) => {
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
      onStepLatents: steps.record,
    });
    return { latents: run.latents, video: run.video as Tensor, step_latents: steps.stacked() };
  });
});
