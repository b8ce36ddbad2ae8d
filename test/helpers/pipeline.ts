// Checks every pipeline's tests make the same way: RequestErrors of bad requests, progress reports,
// cancellation at a step boundary, the text encoder released after encoding, the demo model cache,
// and dispose freeing every tensor and mapping.
import { readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';

import * as E from '../../lib/engine/index.js';
import { demoModelDir, loadPipeline } from '../../lib/pipelines/load.js';
import { type GenerateRequest, type Pipeline, type Progress, RequestError, type Stage } from '../../lib/pipelines/types.js';

/** Each patch of `base` must fail validation with a RequestError naming `param` and matching `message`. */
export function expectRequestErrors(tt: Test, pipeline: Pipeline, base: GenerateRequest, bad: Array<[Partial<GenerateRequest>, string, RegExp]>): void {
  for (const [patch, param, message] of bad) {
    let err: unknown;
    try {
      pipeline.validate({ ...base, ...patch });
    } catch (e) {
      err = e;
    }
    const label = JSON.stringify(patch, (_, v: unknown) => (v instanceof Uint8Array ? `${v.length} bytes` : v));
    tt.ok(err instanceof RequestError, `${label} -> RequestError`);
    tt.equal((err as RequestError).param, param);
    tt.match((err as Error).message, message);
  }
}

type Report = Pick<Progress, 'stage' | 'step' | 'totalSteps'>;

/** Generates with an onProgress that takes a moment (it must be awaited) and returns the reports; onDenoise sees each step's. */
export async function progressReports(pipeline: Pipeline, req: GenerateRequest, onDenoise: (p: Progress) => void = () => {}): Promise<Report[]> {
  const seen: Report[] = [];
  await pipeline.generate({
    ...req,
    onProgress: async (p) => {
      await new Promise((r) => setTimeout(r, 1));
      seen.push({ stage: p.stage, step: p.step, totalSteps: p.totalSteps });
      if (p.stage === 'denoise') onDenoise(p);
    },
  });
  return seen;
}

/** The reports of a run of `totalSteps` steps: the stages before denoising, each step, the decode. */
export function stageReports(totalSteps: number, before: Stage[]): Report[] {
  return [
    ...before.map((stage) => ({ stage, step: 0, totalSteps })),
    ...Array.from({ length: totalSteps }, (_, i) => ({ stage: 'denoise' as const, step: i + 1, totalSteps })),
    { stage: 'decode', step: 0, totalSteps },
  ];
}

/** A 4-step generation aborted during step 2's report stops before step 3 with an AbortError and leaves no tensor behind. */
export async function expectCancelledAtStepBoundary(tt: Test, pipeline: Pipeline, req: GenerateRequest): Promise<void> {
  const live = E.memoryStats().liveTensors;
  const controller = new AbortController();
  const stepsSeen: number[] = [];
  await tt.rejects(
    pipeline.generate({
      ...req,
      numInferenceSteps: 4,
      signal: controller.signal,
      onProgress: (p) => {
        if (p.stage !== 'denoise') return;
        stepsSeen.push(p.step);
        if (p.step === 2) controller.abort();
      },
    }),
    { name: 'AbortError' },
  );
  tt.same(stepsSeen, [1, 2], 'stopped before step 3');
  tt.equal(E.memoryStats().liveTensors, live, 'no tensor left behind by the cancelled run');
}

/** On the CPU the text encoder is unmapped again by the time prompt encoding reports. */
export async function expectTextEncoderReleased(tt: Test, pipeline: Pipeline, req: GenerateRequest): Promise<void> {
  const mapped = E.memoryStats().mappedBytes;
  let during = -1;
  await pipeline.generate({
    ...req,
    onProgress: (p) => {
      if (p.stage === 'encode_prompt') during = E.memoryStats().mappedBytes;
    },
  });
  tt.equal(during, mapped, 'text encoder unmapped right after encoding');
  tt.equal(E.memoryStats().mappedBytes, mapped);
}

/**
 * The demo model's folder is generated once and reused, regenerated (with the same weights) when
 * model_index.json is missing; its transformer is sharded. Returns the folder.
 */
export async function expectDemoCache(tt: Test, demo: string): Promise<string> {
  const dir = await demoModelDir(demo);
  const index = join(dir, 'model_index.json');
  const stamp = statSync(index).mtimeMs;
  tt.equal(await demoModelDir(demo), dir, 'same folder');
  tt.equal(statSync(index).mtimeMs, stamp, 'not regenerated');
  tt.ok(statSync(join(dir, 'transformer', 'diffusion_pytorch_model.safetensors.index.json')).isFile(), 'sharded transformer');
  const shardPath = join(dir, 'transformer', 'diffusion_pytorch_model-00001-of-00002.safetensors');
  const shard = readFileSync(shardPath);
  rmSync(index);
  tt.equal(await demoModelDir(demo), dir);
  tt.ok(readFileSync(shardPath).equals(shard), 'deterministic weights');
  return dir;
}

/**
 * Loads the folder, checks the pipeline with `check`, generates `req` in 1 step and disposes it:
 * every tensor and mapping is freed, and the disposed pipeline refuses to generate.
 */
export async function expectDisposeFreesAll(tt: Test, dir: string, req: GenerateRequest, check: (p: Pipeline) => void = () => {}): Promise<void> {
  const before = E.memoryStats();
  const p = await loadPipeline(dir);
  check(p);
  await p.generate({ ...req, numInferenceSteps: 1 });
  p.dispose();
  const after = E.memoryStats();
  tt.equal(after.liveTensors, before.liveTensors, 'dispose frees every tensor');
  tt.equal(after.mappedBytes, before.mappedBytes, 'and unmaps the weights');
  await tt.rejects(p.generate(req), /disposed/);
}
