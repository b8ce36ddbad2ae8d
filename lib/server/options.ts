// Options of createServer (the `serve` command's flags map onto these), with their defaults.
import type { Writable } from 'node:stream';

import { type ParallelConfig, resolveParallelConfig } from '../parallel/config.js';

export interface ServerOptions {
  /** local diffusers folder, Hugging Face repo id, or demo:<family> */
  modelPath: string;
  /** where jobs, images, videos and the job database live (default ./outputs) */
  outputPath?: string;
  device?: 'cpu' | 'cuda' | 'auto';
  /** component folder overrides, e.g. { vae: '/models/other-vae' } (the --<component>-path flags) */
  componentPaths?: Record<string, string>;
  /** release the text encoder after each prompt encoding (always done on the CPU) */
  textEncoderCpuOffload?: boolean;
  /** worker ranks: GPUs, or CPU processes with device 'cpu' (default 1); reported by /models */
  numGpus?: number;
  /** Ulysses sequence-parallel degree (default: every rank CFG-parallel leaves, when no ring degree is given) */
  ulyssesDegree?: number;
  /** ring-attention degree (default 1) */
  ringDegree?: number;
  /** the conditional and unconditional branches on two ranks each */
  enableCfgParallel?: boolean;
  /** require `Authorization: Bearer <apiKey>` on every route but /health (default: $NODE_DIFFUSION_API_KEY) */
  apiKey?: string | null;
  /** CORS: false (default), true (any origin) or a list of allowed origins */
  cors?: boolean | string[];
  /** queued jobs accepted before 429 (default 256) */
  maxQueue?: number;
  /** compatible queued requests one pipeline run may take (default: 4 on CUDA, 1 (no batching) on the CPU) */
  maxBatchSize?: number | null;
  /** requeue video jobs that were running when the server stopped instead of failing them */
  requeueOnRestart?: boolean;
  /** seconds after completion when output files are deleted (default: kept) */
  outputRetentionSeconds?: number | null;
  /** how long shutdown waits for the running job (default 30 s) */
  shutdownTimeoutMs?: number;
  /** let /v1/images/edits and /v1/videos fetch http(s) image URLs (default off; data: URLs always work) */
  allowUrlFetch?: boolean;
  /** largest accepted upload or fetched image, bytes (default 20 MiB) */
  maxUploadBytes?: number;
  /** largest accepted decoded input image, pixels (default 4096 x 4096) */
  maxInputPixels?: number;
  /** run a 1-step generation before reporting ready */
  warmup?: boolean;
  /** LoRA (file, folder or hub id) set when the model is loaded */
  loraPath?: string | null;
  /** its nickname (default "default") */
  loraNickname?: string;
  /** its strength (default 1.0) */
  loraScale?: number;
  /** LoRA adapters kept in memory, least recently used evicted first (default 8) */
  maxLoras?: number;
  /** pino level: fatal, error, warn, info, debug, trace, silent (default info) */
  logLevel?: string;
  /** where logs go (default stdout) */
  logStream?: Writable;
  /** environment of the worker process (default: this process's) */
  workerEnv?: NodeJS.ProcessEnv;
}

export type ResolvedServerOptions = Required<
  Omit<
    ServerOptions,
    'logStream' | 'workerEnv' | 'apiKey' | 'outputRetentionSeconds' | 'loraPath' | 'ulyssesDegree' | 'ringDegree' | 'enableCfgParallel' | 'maxBatchSize'
  >
> & {
  /** null: by the device the model loaded on (defaultMaxBatchSize) */
  maxBatchSize: number | null;
  /** the layout of the ranks (upstream's defaults applied, checked) */
  parallel: ParallelConfig;
  apiKey: string | null;
  loraPath: string | null;
  outputRetentionSeconds: number | null;
  logStream?: Writable;
  workerEnv?: NodeJS.ProcessEnv;
};

export const DEFAULTS = {
  outputPath: './outputs',
  device: 'auto',
  maxQueue: 256,
  shutdownTimeoutMs: 30_000,
  maxUploadBytes: 20 * 1024 * 1024,
  maxInputPixels: 4096 * 4096,
  logLevel: 'info',
  loraNickname: 'default',
  loraScale: 1,
  maxLoras: 8,
} as const;

export function resolveServerOptions(o: ServerOptions): ResolvedServerOptions {
  if (!o.modelPath) throw new Error('modelPath is required');
  const apiKey = o.apiKey === undefined ? (process.env.NODE_DIFFUSION_API_KEY ?? null) : o.apiKey;
  const r: ResolvedServerOptions = {
    modelPath: o.modelPath,
    outputPath: o.outputPath ?? DEFAULTS.outputPath,
    device: o.device ?? DEFAULTS.device,
    componentPaths: o.componentPaths ?? {},
    textEncoderCpuOffload: o.textEncoderCpuOffload ?? false,
    numGpus: o.numGpus ?? 1,
    parallel: resolveParallelConfig({
      numGpus: o.numGpus ?? 1,
      ulyssesDegree: o.ulyssesDegree,
      ringDegree: o.ringDegree,
      enableCfgParallel: o.enableCfgParallel,
    }),
    apiKey: apiKey === '' ? null : apiKey,
    cors: o.cors ?? false,
    maxQueue: o.maxQueue ?? DEFAULTS.maxQueue,
    maxBatchSize: o.maxBatchSize ?? null,
    requeueOnRestart: o.requeueOnRestart ?? false,
    outputRetentionSeconds: o.outputRetentionSeconds ?? null,
    shutdownTimeoutMs: o.shutdownTimeoutMs ?? DEFAULTS.shutdownTimeoutMs,
    allowUrlFetch: o.allowUrlFetch ?? false,
    maxUploadBytes: o.maxUploadBytes ?? DEFAULTS.maxUploadBytes,
    maxInputPixels: o.maxInputPixels ?? DEFAULTS.maxInputPixels,
    warmup: o.warmup ?? false,
    loraPath: o.loraPath ? o.loraPath : null,
    loraNickname: o.loraNickname ?? DEFAULTS.loraNickname,
    loraScale: o.loraScale ?? DEFAULTS.loraScale,
    maxLoras: o.maxLoras ?? DEFAULTS.maxLoras,
    logLevel: o.logLevel ?? DEFAULTS.logLevel,
    logStream: o.logStream,
    workerEnv: o.workerEnv,
  };
  const positiveInt = (name: string, v: number) => {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${name} must be a positive integer, got ${v}`);
  };
  positiveInt('maxQueue', r.maxQueue);
  if (r.maxBatchSize !== null) positiveInt('maxBatchSize', r.maxBatchSize);
  positiveInt('maxUploadBytes', r.maxUploadBytes);
  positiveInt('maxInputPixels', r.maxInputPixels);
  positiveInt('numGpus', r.numGpus);
  positiveInt('maxLoras', r.maxLoras);
  if (!Number.isFinite(r.loraScale)) throw new Error(`loraScale must be a finite number, got ${r.loraScale}`);
  if (r.loraNickname.trim() === '') throw new Error('loraNickname must not be empty');
  if (!(r.shutdownTimeoutMs >= 0)) throw new Error(`shutdownTimeoutMs must be >= 0, got ${r.shutdownTimeoutMs}`);
  if (r.outputRetentionSeconds !== null && !(r.outputRetentionSeconds > 0)) {
    throw new Error(`outputRetentionSeconds must be > 0, got ${r.outputRetentionSeconds}`);
  }
  if (!['cpu', 'cuda', 'auto'].includes(r.device)) throw new Error(`device must be cpu, cuda or auto, got ${r.device}`);
  return r;
}
