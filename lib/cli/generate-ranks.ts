// generate --num-gpus N: the generation runs on a group of rank processes (lib/runtime/worker-group.ts:
// one per GPU, or CPU processes with --device cpu), as the server runs its jobs; rank 0 writes the
// files. Several videos are generated one after the other (output i with seed + i, as in one batch).
import { rm } from 'node:fs/promises';
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

import { resolveQuality } from '../encode/image.js';
import type { ParallelConfig } from '../parallel/config.js';
import type { FromWorker, GenerationParams, JobFiles, JobOutcome } from '../runtime/protocol.js';
import { WorkerGroup } from '../runtime/worker-group.js';
import { defaultFileName, type GenerateConfig } from './generate.js';
import { createProgress, type Progress } from './progress.js';

const IMAGE_EXTENSIONS = { png: 'png', jpeg: 'jpg', webp: 'webp' } as const;

function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`;
}

class JobError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Sends one job to the group; resolves with its outcome, reporting denoising steps. */
function runJob(
  group: WorkerGroup,
  jobId: string,
  kind: 'video' | 'image',
  generation: GenerationParams,
  output: { format: 'mp4' | 'png' | 'jpeg' | 'webp'; quality: number },
  files: JobFiles,
  onStep: (step: number, total: number, ms: number) => void,
): Promise<JobOutcome> {
  return new Promise((resolvePromise, reject) => {
    const onMessage = (m: FromWorker) => {
      if (m.type === 'progress' && m.jobId === jobId && m.stage === 'denoise' && m.step > 0) onStep(m.step, m.totalSteps, m.stepMs);
      if (m.type === 'done' && m.jobId === jobId) finish(() => resolvePromise(m.outcome));
      if (m.type === 'failed' && m.jobId === jobId) finish(() => reject(new JobError(m.error.code, m.error.message)));
    };
    const onExit = (_code: number | null, _signal: NodeJS.Signals | null, reason?: string) =>
      finish(() => reject(new JobError('worker_crashed', `the ranks stopped (${reason ?? 'exited'})`)));
    const onSigint = () => group.send({ type: 'cancel', jobId });
    const finish = (then: () => void) => {
      group.off('message', onMessage);
      group.off('exit', onExit);
      process.off('SIGINT', onSigint);
      then();
    };
    group.on('message', onMessage);
    group.on('exit', onExit);
    process.once('SIGINT', onSigint);
    if (!group.send({ type: 'run', jobs: [{ jobId, kind, params: { generation, output: { ...output, partialImages: 0 } }, files }] })) {
      finish(() => reject(new JobError('worker_crashed', 'the ranks are not running')));
    }
  });
}

export async function generateOnRanks(cfg: GenerateConfig, parallel: ParallelConfig): Promise<number> {
  const t0 = performance.now();
  const group = new WorkerGroup(parallel);
  try {
    await group.start({
      modelPath: cfg.modelPath,
      device: cfg.device,
      componentPaths: cfg.componentPaths,
      textEncoderCpuOffload: cfg.textEncoderCpuOffload,
      warmup: false,
      lora: cfg.lora,
    });
  } catch (err) {
    console.error(`node-diffusion generate: cannot load ${cfg.modelPath}: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
  const loadMs = performance.now() - t0;
  try {
    const d = (group.info as NonNullable<typeof group.info>).defaults;
    const r = cfg.request;
    const generation: GenerationParams = {
      prompt: r.prompt as string,
      ...(r.negativePrompt !== undefined ? { negativePrompt: r.negativePrompt } : {}),
      width: r.width ?? null,
      height: r.height ?? null,
      numFrames: r.numFrames ?? d.numFrames,
      fps: r.fps ?? d.fps,
      numInferenceSteps: r.numInferenceSteps ?? d.numInferenceSteps,
      guidanceScale: r.guidanceScale ?? d.guidanceScale,
      seed: r.seed ?? 42,
      numOutputs: r.numOutputs ?? 1,
      inputImages: cfg.imagePaths.length,
    };
    const video = generation.numFrames > 1;
    let quality: number;
    try {
      quality = resolveQuality({ outputCompression: cfg.outputCompression ?? null, outputQuality: cfg.outputQuality ?? null }, video ? 'video' : 'image');
    } catch (err) {
      console.error(`node-diffusion generate: ${(err as Error).message}`);
      return 2;
    }
    await mkdir(cfg.outputPath, { recursive: true });
    const stem = (cfg.outputFileName ?? defaultFileName({ ...r, ...generation, width: generation.width ?? undefined, height: generation.height ?? undefined }, new Date())).replace(
      /\.(mp4|png|jpe?g|webp)$/i,
      '',
    );
    const n = generation.numOutputs;
    const suffix = (i: number) => (n > 1 ? `_${i}` : '');
    const stepTimes: number[] = [];
    let bar: Progress | null = null;
    const onStep = (step: number, total: number, ms: number) => {
      bar ??= createProgress({ total, label: 'denoising', unit: 'steps' });
      stepTimes.push(ms);
      bar.update(step);
      if (step === total) {
        bar.done();
        bar = null;
      }
    };
    const outcomes: JobOutcome[] = [];
    const paths: string[] = [];
    try {
      if (video) {
        for (let i = 0; i < n; ++i) {
          const path = resolve(join(cfg.outputPath, `${stem}${suffix(i)}.mp4`));
          const thumbnail = join(tmpdir(), `nd-generate-${process.pid}-${i}.webp`);
          try {
            const files: JobFiles = { video: path, thumbnail, inputs: cfg.imagePaths };
            outcomes.push(await runJob(group, `video_${i}`, 'video', { ...generation, seed: generation.seed + i, numOutputs: 1 }, { format: 'mp4', quality }, files, onStep));
          } finally {
            await rm(thumbnail, { force: true });
          }
          paths.push(path);
        }
      } else {
        const ext = IMAGE_EXTENSIONS[cfg.outputFormat];
        const images = Array.from({ length: n }, (_, i) => ({ id: `image_${i}`, path: resolve(join(cfg.outputPath, `${stem}${suffix(i)}.${ext}`)) }));
        outcomes.push(await runJob(group, 'images', 'image', generation, { format: cfg.outputFormat, quality }, { images, inputs: cfg.imagePaths }, onStep));
        paths.push(...images.map((im) => im.path));
      }
    } catch (err) {
      if (err instanceof JobError) {
        console.error(`node-diffusion generate: ${err.message}`);
        return err.code === 'invalid_request' ? 2 : 1;
      }
      throw err;
    }
    const first = outcomes[0] as JobOutcome;
    for (const p of paths) console.log(`wrote ${p}`);
    console.log(`${first.width}x${first.height}, ${first.numFrames} frame(s), seed ${generation.seed}, ${parallel.worldSize} ranks`);
    const stages: Array<[string, number]> = [['load', loadMs], ...Object.entries(first.timings)];
    console.log(`timings: ${stages.map(([k, ms]) => `${k} ${formatMs(ms)}`).join(', ')}`);
    if (stepTimes.length) {
      const mean = stepTimes.reduce((a, b) => a + b, 0) / stepTimes.length;
      console.log(`denoising: ${stepTimes.length} steps, ${formatMs(mean)}/step (fastest ${formatMs(Math.min(...stepTimes))}, slowest ${formatMs(Math.max(...stepTimes))})`);
    }
    console.log(`peak memory: ${Math.max(...outcomes.map((o) => o.peakMemoryMb)).toFixed(0)} MB of tensors on rank 0`);
    return 0;
  } finally {
    await group.stop(5000);
  }
}
