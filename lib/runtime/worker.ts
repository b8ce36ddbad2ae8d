// The worker process: loads the pipeline once and runs one job at a time for the server process, reporting
// progress per denoising step and writing the encoded outputs to the paths the server chose.
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
import { type GenerateRequest, type Pipeline, type Progress, RequestError, type RgbImage } from '../pipelines/types.js';
import {
  type FromWorker,
  type JobError,
  type JobFiles,
  type JobKind,
  type JobParams,
  type LoadOptions,
  type MemorySample,
  previewSteps,
  type RankOptions,
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

async function run(jobId: string, kind: JobKind | 'probe', params: JobParams, files: JobFiles): Promise<void> {
  const controller = new AbortController();
  controllers.set(jobId, controller);
  const written: string[] = [];
  try {
    if (!pipeline) throw new Error('no pipeline loaded');
    const p = pipeline;
    const g = params.generation;
    const inputs: RgbImage[] = [];
    for (const path of files.inputs) inputs.push(await decodeImage(await readFile(path), { param: 'input image' }));
    const format = params.output.format;
    const previewAt = kind === 'image' && format !== 'mp4' ? previewSteps(g.numInferenceSteps, params.output.partialImages) : new Set<number>();
    let previewIndex = 0;
    const lead = rank === 0;
    const onProgress = async (pr: Progress): Promise<void> => {
      if (!lead) {
        // a rank of a group stops when rank 0 does: the pipeline takes rank 0's decision at each step
        await new Promise<void>((resolve) => setImmediate(resolve));
        return;
      }
      send({ type: 'progress', jobId, stage: pr.stage, step: pr.step, totalSteps: pr.totalSteps, stepMs: pr.stepMs, memory: memorySample() });
      if (pr.stage === 'denoise' && previewAt.has(pr.step) && pr.preview && format !== 'mp4') {
        const frames = pr.preview();
        const images = await Promise.all(frames.map((f) => encodeImage(f, format as ImageFormat, params.output.quality)));
        send({ type: 'partial', jobId, index: previewIndex++, images });
      }
      // Let IPC messages (cancel) in between steps; a cancelled job stops here, at the step boundary.
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (!groups) controller.signal.throwIfAborted();
    };
    const request: GenerateRequest = p.validate({
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
    if (lead) send({
      type: 'started',
      jobId,
      numFrames: request.numFrames ?? g.numFrames,
      width: request.width ?? g.width ?? 0,
      height: request.height ?? g.height ?? 0,
      fps: request.fps ?? g.fps,
    });
    const t0 = performance.now();
    const result = await p.generate({ ...request, onProgress, signal: controller.signal });
    const inferenceTimeS = (performance.now() - t0) / 1000;
    const te = performance.now();
    const images: Array<{ id: string; width: number; height: number; bytes: number }> = [];
    // of a group, rank 0 writes the outputs
    if (lead && kind === 'video') {
      const frames = result.outputs[0];
      if (!frames || frames.length === 0 || !files.video || !files.thumbnail) throw new Error('the pipeline returned no frames');
      written.push(files.video, files.thumbnail);
      await encodeMp4(frames, { fps: result.fps, quality: params.output.quality }, files.video);
      await writeAtomic(files.thumbnail, await encodeThumbnail(frames[0] as RgbImage));
    } else if (lead && kind === 'image') {
      const targets = files.images ?? [];
      if (result.outputs.length !== targets.length) {
        throw new Error(`the pipeline returned ${result.outputs.length} outputs for ${targets.length} requested`);
      }
      for (let i = 0; i < targets.length; ++i) {
        const target = targets[i] as { id: string; path: string };
        const img = (result.outputs[i] as RgbImage[])[0] as RgbImage;
        const bytes = await encodeImage(img, format as ImageFormat, params.output.quality);
        written.push(target.path);
        await writeAtomic(target.path, bytes);
        images.push({ id: target.id, width: img.width, height: img.height, bytes: bytes.length });
      }
    }
    const timings = { ...result.timings, encode_output: performance.now() - te };
    send({
      type: 'done',
      jobId,
      outcome: {
        width: result.width,
        height: result.height,
        numFrames: result.numFrames,
        fps: result.fps,
        inferenceTimeS,
        peakMemoryMb: result.peakMemoryMb,
        timings,
        images,
      },
    });
  } catch (err) {
    await Promise.all(written.flatMap((f) => [rm(f, { force: true }), rm(`${f}.partial`, { force: true })]));
    send({ type: 'failed', jobId, error: jobError(err, controller.signal) });
  } finally {
    controllers.delete(jobId);
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
      void run(msg.jobId, msg.kind, msg.params, msg.files);
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
