// What the pipeline check runners share: typed check params, a component model loaded for one check,
// the scheduler checks (stepping fixed model outputs; timestep / sigma tables per entry), and the
// setup of the full-pipeline checks with the latents recorded after each step.
import { stack } from '../engine/ops/basic.js';
import type { DType } from '../engine/dtype.js';
import { disposeAll, keep, scope, type Tensor, tensor } from '../engine/tensor.js';
import { readComponentConfig } from '../io/diffusers.js';
import { loadPipeline } from '../pipelines/load.js';
import type { Pipeline } from '../pipelines/types.js';
import type { CheckContext } from './registry.js';

/** params[name] of the check, which `ok` must accept (else an error saying it must be `what`). */
export function param<T>(ctx: CheckContext, name: string, ok: (v: unknown) => boolean, what: string): T {
  const v = ctx.check.params[name];
  if (!ok(v)) throw new Error(`check '${ctx.check.name}': params.${name} must be ${what}`);
  return v as T;
}

export const isPositiveInt = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v > 0;
export const isNumber = (v: unknown) => typeof v === 'number' && Number.isFinite(v);

/** params[name], a positive integer. */
export function positiveIntParam(ctx: CheckContext, name: string): number {
  return param<number>(ctx, name, isPositiveInt, 'a positive integer');
}

/** Loads the model of a component folder of the case's model, runs fn with it, then frees it. */
export async function withComponent<M extends { dispose(): void }, R>(
  ctx: CheckContext,
  component: string,
  load: (dir: string) => Promise<M>,
  fn: (model: M) => R | Promise<R>,
): Promise<R> {
  const cc = await readComponentConfig(ctx.modelDir, component);
  const model = await load(cc.dir);
  try {
    return await fn(model);
  } finally {
    model.dispose();
  }
}

interface SchedulerTables {
  timesteps: number[];
  sigmas: number[];
}

/**
 * A `scheduler_step` check: the input model_outputs stepped one by one from the input sample. The
 * timesteps (as `timestepDtype`) and the samples after each step, stacked.
 */
export function stepSchedulerCheck(
  ctx: CheckContext,
  scheduler: SchedulerTables & { step(modelOutput: Tensor, timestep: number, sample: Tensor): Tensor },
  timestepDtype: DType = 'float32',
): { timesteps: Tensor; samples: Tensor } {
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
  return { timesteps: tensor(scheduler.timesteps, [scheduler.timesteps.length], { dtype: timestepDtype }), samples };
}

/**
 * A `scheduler` check of params.entries (each accepted by isEntry, else an error saying they must be
 * `what`): the outputs timesteps_<x> (as `timestepDtype`) and sigmas_<x> of each entry's schedule,
 * paired with the timesteps_* outputs in entry order.
 */
export function scheduleTablesCheck<E>(
  ctx: CheckContext,
  isEntry: (e: unknown) => boolean,
  what: string,
  schedule: (entry: E, index: number) => SchedulerTables,
  timestepDtype: DType = 'float32',
): Record<string, Tensor> {
  const entries = param<E[]>(ctx, 'entries', (v) => Array.isArray(v) && v.every(isEntry), what);
  const timestepOutputs = Object.keys(ctx.check.outputs).filter((k) => k.startsWith('timesteps_'));
  if (timestepOutputs.length !== entries.length)
    throw new Error(`check '${ctx.check.name}': ${entries.length} entries but ${timestepOutputs.length} timesteps_* outputs`);
  const result: Record<string, Tensor> = {};
  entries.forEach((e, i) => {
    const suffix = timestepOutputs[i]!.slice('timesteps_'.length);
    const { timesteps, sigmas } = schedule(e, i);
    result[`timesteps_${suffix}`] = tensor(timesteps, [timesteps.length], { dtype: timestepDtype });
    result[`sigmas_${suffix}`] = tensor(sigmas, [sigmas.length]);
  });
  return result;
}

/** Throws unless params.max_sequence_length is the token length the pipeline pads prompts to. */
export function checkMaxSequenceLength(ctx: CheckContext, pipelineClass: string, padsTo: number): void {
  const maxLen = positiveIntParam(ctx, 'max_sequence_length');
  if (maxLen !== padsTo) throw new Error(`check '${ctx.check.name}': ${pipelineClass} pads prompts to ${padsTo} tokens, the check asks for ${maxLen}`);
}

/** Copies of the latents after each denoising step (pass `record` as onStepLatents). */
export class StepLatents {
  private readonly steps: Tensor[] = [];
  readonly record = (_step: number, latents: Tensor): void => {
    this.steps.push(keep(latents.clone()));
  };

  /** [steps, ...latent shape] */
  stacked(): Tensor {
    return stack(this.steps, 0);
  }

  dispose(): void {
    disposeAll(this.steps);
  }
}

/**
 * Loads the case's model folder as a pipeline, which must be a `pipelineClass` (the class `cls`),
 * and runs fn with it and a step-latents recorder; frees both after.
 */
export async function withPipeline<P extends Pipeline, R>(
  ctx: CheckContext,
  cls: Function & { prototype: P },
  pipelineClass: string,
  fn: (pipeline: P, steps: StepLatents) => Promise<R>,
): Promise<R> {
  const pipeline = await loadPipeline(ctx.modelDir, { device: ctx.device });
  if (!(pipeline instanceof cls)) throw new Error(`${ctx.modelDir} did not load as a ${pipelineClass}`);
  const steps = new StepLatents();
  try {
    return await fn(pipeline as P, steps);
  } finally {
    steps.dispose();
    pipeline.dispose();
  }
}
