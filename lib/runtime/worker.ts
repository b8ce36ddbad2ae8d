// The worker process: loads the pipeline once and runs one batch of jobs at a time for the server process
// (usually a batch of one), reporting progress per job and denoising step and writing each job's encoded
// outputs to the paths the server chose.
// Started by WorkerProcess (worker-process.ts) with child_process.fork; talks over IPC only.
import { readFile, rename, rm, writeFile } from 'node:fs/promises';

import { cudaInfo } from '../engine/device.js';
import { memoryStats } from '../engine/tensor.js';
import { decodeImage, encodeImage, type ImageFormat } from '../encode/image.js';
import { encodeMp4, encodeThumbnail } from '../encode/video.js';
import { WeightControls } from '../lora/controls.js';
import { LoraError } from '../lora/request.js';
import { ParallelGroups } from '../parallel/groups.js';
import { openNcclCommunicator } from '../parallel/nccl.js';
import { openShmCommunicator } from '../parallel/shm.js';
import { type DeviceChoice, loadPipeline, resolveDevice } from '../pipelines/load.js';
import { type GenerateRequest, type GenerateResult, type Pipeline, type Progress, RequestError, type RgbImage } from '../pipelines/types.js';
import { batchRequest, itemCount, splitOutputs } from './batching.js';
import {
  type FromWorker,
  type JobError,
  type JobOutcome,
  type LoadOptions,
  type MemorySample,
  previewSteps,
  type RankOptions,
  type RunJob,
  type ToWorker,
} from './protocol.js';

let pipeline: Pipeline | null = null;
let controls: WeightControls | null = null;
const controllers = new Map<string, AbortController>();
/** This worker's rank when it is one of a group: only rank 0 reports progress and writes outputs. */
let rank = 0;
/** The group's communicators (null when the worker is alone). */
let groups: ParallelGroups | null = null;

function send(msg: FromWorker): void {
  if (process.connected) process.send?.(msg);
}

function memorySample(): MemorySample {
  const mem = process.memoryUsage();
  const stats = memoryStats() as { hostBytes: number; deviceBytes: number };
  return { rssBytes: mem.rss, heapUsedBytes: mem.heapUsed, hostTensorBytes: stats.hostBytes, deviceTensorBytes: stats.deviceBytes };
}

/**
 * Joins the other ranks: CPU ranks through shared memory, CUDA ranks through NCCL (rank r on device r).
 * Returns the device this rank computes on.
 */
async function joinRanks(p: RankOptions, requested: LoadOptions['device']): Promise<DeviceChoice> {
  const worldSize = p.config.worldSize;
  if (resolveDevice(requested) === 'cpu') {
    groups = ParallelGroups.create(openShmCommunicator({ path: p.shmPath, rank: p.rank, worldSize }), p.config);
    return 'cpu';
  }
  const devices = cudaInfo().devices.length;
  if (devices < worldSize) throw new Error(`--num-gpus ${worldSize} needs ${worldSize} CUDA devices, this machine has ${devices}`);
  groups = ParallelGroups.create(await openNcclCommunicator({ rank: p.rank, worldSize, device: p.rank, rendezvous: p.rendezvous }), p.config);
  return `cuda:${p.rank}`;
}

async function load(options: LoadOptions): Promise<void> {
  const t0 = performance.now();
  try {
    let device: DeviceChoice = options.device;
    if (options.parallel) {
      rank = options.parallel.rank;
      device = await joinRanks(options.parallel, options.device);
    }
    pipeline = await loadPipeline(options.modelPath, {
      parallel: groups,
      device,
      componentPaths: options.componentPaths,
      textEncoderCpuOffload: options.textEncoderCpuOffload,
    });
    controls = new WeightControls(pipeline, { maxLoras: options.maxLoras });
    if (options.lora) await controls.startup(options.lora);
    if (options.warmup) {
      const d = pipeline.info.defaults;
      await pipeline.generate(
        pipeline.validate({ prompt: 'warmup', width: d.width, height: d.height, numFrames: 1, numInferenceSteps: 1, seed: 0 }),
      );
    }
    send({ type: 'ready', info: pipeline.info, loadSeconds: (performance.now() - t0) / 1000 });
    send({ type: 'memory', memory: memorySample() });
  } catch (err) {
    send({ type: 'load_failed', message: err instanceof Error ? err.message : String(err) });
  }
}

async function writeAtomic(path: string, data: Uint8Array): Promise<void> {
  const tmp = `${path}.partial`;
  await writeFile(tmp, data);
  await rename(tmp, path);
}

function jobError(err: unknown, signal: AbortSignal): JobError {
  // ranks other than 0 stop with an AbortError when rank 0 was cancelled
  if (signal.aborted || (err instanceof Error && err.name === 'AbortError')) return { code: 'cancelled', message: 'the job was cancelled' };
  if (err instanceof RequestError) return { code: 'invalid_request', message: err.message, param: err.param };
  const message = err instanceof Error ? err.message : String(err);
  return { code: 'generation_failed', message: `generation failed: ${message}` };
}

/** A job of the running batch: its validated request, its items in the batch and its previews. */
interface Member {
  job: RunJob;
  controller: AbortController;
  request: GenerateRequest;
  /** its output items in the batch: [from, from + count) */
  from: number;
  count: number;
  previewAt: Set<number>;
  previewIndex: number;
}

/** Validates one job of a batch (its reference images decoded): the request the pipeline takes for it alone. */
async function validateJob(p: Pipeline, job: RunJob): Promise<GenerateRequest> {
  const g = job.params.generation;
  const inputs: RgbImage[] = [];
  for (const path of job.files.inputs) inputs.push(await decodeImage(await readFile(path), { param: 'input image' }));
  return p.validate({
    prompt: g.prompt,
    negativePrompt: g.negativePrompt,
    width: g.width ?? undefined,
    height: g.height ?? undefined,
    numFrames: g.numFrames,
    fps: g.fps,
    numInferenceSteps: g.numInferenceSteps,
    guidanceScale: g.guidanceScale,
    numOutputs: g.numOutputs,
    seed: g.seed,
    images: inputs.length > 0 ? inputs : undefined,
  });
}

/** Encodes and writes one job's outputs (rank 0); returns the image records and the paths written. */
async function writeOutputs(job: RunJob, outputs: RgbImage[][], fps: number, written: string[]): Promise<JobOutcome['images']> {
  const { kind, files, params } = job;
  const format = params.output.format;
  const images: JobOutcome['images'] = [];
  if (kind === 'video') {
    const frames = outputs[0];
    if (!frames || frames.length === 0 || !files.video || !files.thumbnail) throw new Error('the pipeline returned no frames');
    written.push(files.video, files.thumbnail);
    await encodeMp4(frames, { fps, quality: params.output.quality }, files.video);
    await writeAtomic(files.thumbnail, await encodeThumbnail(frames[0] as RgbImage));
  } else if (kind === 'image') {
    const targets = files.images ?? [];
    if (outputs.length !== targets.length) throw new Error(`the pipeline returned ${outputs.length} outputs for ${targets.length} requested`);
    for (let i = 0; i < targets.length; ++i) {
      const target = targets[i] as { id: string; path: string };
      const img = (outputs[i] as RgbImage[])[0] as RgbImage;
      const bytes = await encodeImage(img, format as ImageFormat, params.output.quality);
      written.push(target.path);
      await writeAtomic(target.path, bytes);
      images.push({ id: target.id, width: img.width, height: img.height, bytes: bytes.length });
    }
  }
  return images;
}

async function removeWritten(written: string[]): Promise<void> {
  await Promise.all(written.flatMap((f) => [rm(f, { force: true }), rm(`${f}.partial`, { force: true })]));
}

/**
 * Runs jobs as one pipeline batch (see batching.ts). Each job is validated alone (a rejected one fails
 * alone), then the valid ones run as one request with one seed per output item, each job reporting its
 * own progress and previews. A cancelled job is reported when the batch ends, its outputs dropped; the
 * run stops at the next step only when every job of it is cancelled.
 */
async function run(jobs: RunJob[]): Promise<void> {
  const lead = rank === 0;
  const members: Member[] = [];
  const stopped = new AbortController();
  const stopIfAllCancelled = () => {
    if (members.length > 0 && members.every((m) => m.controller.signal.aborted)) stopped.abort();
  };
  const controllerOf = new Map<string, AbortController>();
  for (const job of jobs) {
    const controller = new AbortController();
    controller.signal.addEventListener('abort', stopIfAllCancelled);
    controllers.set(job.jobId, controller);
    controllerOf.set(job.jobId, controller);
  }
  const end = (m: FromWorker & { jobId: string }) => {
    controllers.delete(m.jobId);
    send(m);
  };
  try {
    let items = 0;
    for (const job of jobs) {
      const controller = controllerOf.get(job.jobId) as AbortController;
      try {
        if (!pipeline) throw new Error('no pipeline loaded');
        const request = await validateJob(pipeline, job);
        const count = itemCount(request);
        const format = job.params.output.format;
        const previewAt =
          job.kind === 'image' && format !== 'mp4' ? previewSteps(job.params.generation.numInferenceSteps, job.params.output.partialImages) : new Set<number>();
        members.push({ job, controller, request, from: items, count, previewAt, previewIndex: 0 });
        items += count;
      } catch (err) {
        end({ type: 'failed', jobId: job.jobId, error: jobError(err, controller.signal) });
      }
    }
    if (members.length === 0) return;
    stopIfAllCancelled();
    const p = pipeline as Pipeline;
    const requests = members.map((m) => m.request);
    if (lead) {
      for (const { job, request } of members) {
        const g = job.params.generation;
        send({
          type: 'started',
          jobId: job.jobId,
          numFrames: request.numFrames ?? g.numFrames,
          width: request.width ?? g.width ?? 0,
          height: request.height ?? g.height ?? 0,
          fps: request.fps ?? g.fps,
        });
      }
    }
    const onProgress = async (pr: Progress): Promise<void> => {
      if (!lead) {
        // a rank of a group stops when rank 0 does: the pipeline takes rank 0's decision at each step
        await new Promise<void>((resolve) => setImmediate(resolve));
        return;
      }
      const memory = memorySample();
      for (const m of members) {
        if (m.controller.signal.aborted) continue;
        const jobId = m.job.jobId;
        send({ type: 'progress', jobId, stage: pr.stage, step: pr.step, totalSteps: pr.totalSteps, stepMs: pr.stepMs, memory });
        if (pr.stage === 'denoise' && m.previewAt.has(pr.step) && pr.preview) {
          const output = m.job.params.output;
          const frames = pr.preview(m.from, m.count);
          const images = await Promise.all(frames.map((f) => encodeImage(f, output.format as ImageFormat, output.quality)));
          send({ type: 'partial', jobId, index: m.previewIndex++, images });
        }
      }
      // Let IPC messages (cancel) in between steps; a batch whose jobs are all cancelled stops here, at the step boundary.
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (!groups) stopped.signal.throwIfAborted();
    };
    const t0 = performance.now();
    let result: GenerateResult;
    try {
      result = await p.generate({ ...batchRequest(requests), onProgress, signal: stopped.signal });
    } catch (err) {
      for (const m of members) end({ type: 'failed', jobId: m.job.jobId, error: jobError(err, m.controller.signal) });
      return;
    }
    const inferenceTimeS = (performance.now() - t0) / 1000;
    const shares = splitOutputs(requests, result);
    for (const [i, m] of members.entries()) {
      const jobId = m.job.jobId;
      if (m.controller.signal.aborted) {
        end({ type: 'failed', jobId, error: { code: 'cancelled', message: 'the job was cancelled' } });
        continue;
      }
      const te = performance.now();
      const written: string[] = [];
      const fps = m.request.fps ?? result.fps;
      try {
        // of a group, rank 0 writes the outputs
        const images = lead ? await writeOutputs(m.job, shares[i] as RgbImage[][], fps, written) : [];
        end({
          type: 'done',
          jobId,
          outcome: {
            width: result.width,
            height: result.height,
            numFrames: result.numFrames,
            fps,
            inferenceTimeS,
            peakMemoryMb: result.peakMemoryMb,
            timings: { ...result.timings, encode_output: performance.now() - te },
            batchSize: members.length,
            images,
          },
        });
      } catch (err) {
        await removeWritten(written);
        end({ type: 'failed', jobId, error: jobError(err, m.controller.signal) });
      }
    }
  } finally {
    for (const job of jobs) controllers.delete(job.jobId);
    send({ type: 'memory', memory: memorySample() });
  }
}

/**
 * A weight operation (LoRA, checksums). The runtime sends those that change weights only while no job
 * runs; read-only ones may arrive during a job and are answered between its steps.
 */
async function control(id: string, op: string, args: unknown): Promise<void> {
  try {
    if (!controls) throw new Error('no pipeline loaded');
    const { result, replay } = await controls.run(op, args);
    send({ type: 'control_done', id, result, ...(replay ? { replay } : {}) });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    send({ type: 'control_failed', id, error: err instanceof LoraError ? { code: 'invalid_request', message, param: null } : { code: 'control_failed', message } });
  } finally {
    send({ type: 'memory', memory: memorySample() });
  }
}

process.on('message', (msg: ToWorker) => {
  switch (msg.type) {
    case 'load':
      void load(msg.options);
      break;
    case 'run':
      void run(msg.jobs);
      break;
    case 'cancel':
      controllers.get(msg.jobId)?.abort();
      break;
    case 'control':
      void control(msg.id, msg.op, msg.args);
      break;
  }
});

// The server went away (crashed or killed): nothing left to work for.
process.on('disconnect', () => process.exit(0));
// Ctrl-C reaches the whole process group; the server decides how running work ends (it sends SIGTERM).
process.on('SIGINT', () => {});
