// Messages between the server process and its worker process (child_process IPC, advanced serialization),
// and the job parameters they carry. The worker owns the pipeline; the server never computes.
import type { ImageFormat } from '../encode/image.js';
import type { StartupLora } from '../lora/controls.js';
import type { ParallelConfig } from '../parallel/config.js';
import type { RendezvousAddress } from '../parallel/rendezvous.js';
import type { PipelineInfo, Stage } from '../pipelines/types.js';

export type JobKind = 'video' | 'image';
export type JobStatus = 'queued' | 'in_progress' | 'completed' | 'failed';

/** What to generate, with every default already resolved (stored with the job so remix/requeue repeat it). */
export interface GenerationParams {
  prompt: string;
  negativePrompt?: string;
  /** null: the pipeline decides (an edit without `size` takes its first reference image's size) */
  width: number | null;
  height: number | null;
  numFrames: number;
  fps: number;
  numInferenceSteps: number;
  guidanceScale: number;
  seed: number;
  numOutputs: number;
  /** reference images stored under inputs/<jobId>_<i>.png */
  inputImages: number;
}

export interface OutputParams {
  format: 'mp4' | ImageFormat;
  /** 0..100, see resolveQuality */
  quality: number;
  /** preview images to stream while denoising (images only, 0..3) */
  partialImages: number;
}

export interface JobParams {
  generation: GenerationParams;
  output: OutputParams;
}

/** Files the worker writes for one job; paths are built by the server from validated ids. */
export interface JobFiles {
  video?: string;
  thumbnail?: string;
  images?: Array<{ id: string; path: string }>;
  inputs: string[];
}

/**
 * Denoising steps after which a streamed preview is sent: `count` steps spread evenly, never the last one
 * (the final image follows it). Fewer than `count` when there are too few steps.
 */
export function previewSteps(totalSteps: number, count: number): Set<number> {
  const steps = new Set<number>();
  for (let i = 1; i <= count; ++i) {
    const s = Math.floor((totalSteps * i) / (count + 1));
    if (s >= 1 && s < totalSteps) steps.add(s);
  }
  return steps;
}

export interface LoadOptions {
  modelPath: string;
  device: 'cpu' | 'cuda' | 'auto';
  componentPaths: Record<string, string>;
  textEncoderCpuOffload: boolean;
  /** run one 1-step generation after loading, before reporting ready */
  warmup: boolean;
  /** a LoRA set right after loading, before the warmup (--lora-path) */
  lora?: StartupLora | null;
  /** LoRA adapters kept in memory (--max-loras) */
  maxLoras?: number;
  /** this worker is one rank of a group (--num-gpus > 1; see worker-group.ts) */
  parallel?: RankOptions;
}

/** How one rank of a worker group finds the others. */
export interface RankOptions {
  config: ParallelConfig;
  rank: number;
  /** the shared-memory file of CPU ranks */
  shmPath: string;
  /** where rank 0 publishes the NCCL id to CUDA ranks */
  rendezvous: RendezvousAddress;
}

/** The worker's answer to a control operation (see Runtime.control). */
export interface ControlReplay {
  /** a later replay with the same key replaces this one */
  key: string;
  op: string;
  args: unknown;
}

/** One job of a run: the worker reports progress and the outcome per job. */
export interface RunJob {
  jobId: string;
  kind: JobKind | 'probe';
  params: JobParams;
  files: JobFiles;
}

export type ToWorker =
  | { type: 'load'; options: LoadOptions }
  /**
   * Runs jobs as one pipeline batch (batching.ts decides which may share one; a single job is a batch
   * of one). Every job gets its own 'done' or 'failed'; the last of them comes after the pipeline run
   * has ended, so the worker is free once each job of the batch has reported.
   */
  | { type: 'run'; jobs: RunJob[] }
  | { type: 'cancel'; jobId: string }
  | { type: 'control'; id: string; op: string; args: unknown };

export interface JobError {
  /** invalid_request (the pipeline rejected the parameters), cancelled, generation_failed, worker_crashed, ... */
  code: string;
  message: string;
  param?: string | null;
}

export interface JobOutcome {
  width: number;
  height: number;
  numFrames: number;
  fps: number;
  inferenceTimeS: number;
  peakMemoryMb: number;
  /** milliseconds per pipeline stage, plus `encode` */
  timings: Record<string, number>;
  /** jobs that ran in the same pipeline batch as this one (1: alone) */
  batchSize: number;
  images: Array<{ id: string; width: number; height: number; bytes: number }>;
}

export interface MemorySample {
  rssBytes: number;
  heapUsedBytes: number;
  /** native tensor bytes on the host and the device */
  hostTensorBytes: number;
  deviceTensorBytes: number;
}

export type FromWorker =
  | { type: 'ready'; info: PipelineInfo; loadSeconds: number }
  | { type: 'load_failed'; message: string }
  | { type: 'started'; jobId: string; numFrames: number; width: number; height: number; fps: number }
  | { type: 'progress'; jobId: string; stage: Stage; step: number; totalSteps: number; stepMs: number; memory: MemorySample }
  | { type: 'partial'; jobId: string; index: number; images: Uint8Array[] }
  | { type: 'done'; jobId: string; outcome: JobOutcome }
  | { type: 'failed'; jobId: string; error: JobError }
  | { type: 'memory'; memory: MemorySample }
  | { type: 'control_done'; id: string; result: unknown; replay?: ControlReplay }
  | { type: 'control_failed'; id: string; error: JobError };
