// The job runtime of a server: SQLite job store, FIFO queue, one worker process running one batch of
// compatible jobs at a time (batching.ts; a batch of one unless --max-batch-size allows more), restart of
// a dead worker, retention of output files and graceful shutdown.
import { EventEmitter } from 'node:events';
import { copyFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';

import sharp from 'sharp';

import type { ImageFormat } from '../encode/image.js';
import type { PipelineInfo, RgbImage, Stage } from '../pipelines/types.js';
import { defaultMaxBatchSize, takeBatch } from './batching.js';
import { isValidId, newId } from './ids.js';
import { OutputLayout } from './layout.js';
import { ControlChannel } from './controls.js';
import { RuntimeMetrics } from './metrics.js';
import type { FromWorker, JobError, JobFiles, JobKind, JobOutcome, JobParams, LoadOptions } from './protocol.js';
import { type ImageRecord, type JobRecord, JobStore } from './store.js';
import type { ParallelConfig } from '../parallel/config.js';
import { WorkerGroup } from './worker-group.js';
import { type WorkerHandle, WorkerProcess } from './worker-process.js';

/** The subset of a pino logger the runtime uses. */
export interface RuntimeLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface RuntimeOptions {
  outputPath: string;
  load: LoadOptions;
  /** queued (not yet running) jobs accepted before 429 */
  maxQueue: number;
  /** output items compatible queued jobs may fill in one pipeline run (--max-batch-size); null: defaultMaxBatchSize of the device */
  maxBatchSize?: number | null;
  /** requeue video jobs that were running when the server stopped, instead of failing them */
  requeueOnRestart: boolean;
  /** seconds after completion when output files are removed; null keeps them */
  retentionSeconds: number | null;
  /** how long shutdown waits for the running job before cancelling it */
  shutdownTimeoutMs: number;
  logger: RuntimeLogger;
  workerEnv?: NodeJS.ProcessEnv;
  /** several ranks (--num-gpus > 1): a group of worker processes in lockstep instead of one */
  parallel?: ParallelConfig | null;
}

export class QueueFullError extends Error {
  constructor(
    readonly maxQueue: number,
    readonly retryAfterS: number,
  ) {
    super(`the queue is full (${maxQueue} jobs waiting); retry later`);
    this.name = 'QueueFullError';
  }
}

export class UnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UnavailableError';
  }
}

export class JobFailedError extends Error {
  constructor(readonly error: JobError) {
    super(error.message);
    this.name = 'JobFailedError';
  }
}

export interface ProgressEvent {
  progress: number;
  stage: Stage;
  step: number;
  totalSteps: number;
}

interface JobEvents {
  progress: [ProgressEvent];
  partial: [index: number, images: Uint8Array[]];
}

export type ActiveKind = JobKind | 'probe';

export interface JobResult {
  record: JobRecord | null;
  images: ImageRecord[];
  outcome: JobOutcome;
}

/** A job known to this process: queued or running. */
export class ActiveJob extends EventEmitter<JobEvents> {
  /** set when the job was deleted or cancelled: its outputs are thrown away */
  deleted = false;
  running = false;
  /** position in the order of jobs and exclusive control operations (0: ahead of everything) */
  seq = 0;
  readonly result: Promise<JobResult>;
  resolve!: (r: JobResult) => void;
  reject!: (e: Error) => void;

  constructor(
    readonly id: string,
    readonly kind: ActiveKind,
    public params: JobParams,
    readonly files: JobFiles,
    readonly requestId: string | undefined,
  ) {
    super();
    this.result = new Promise<JobResult>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    // Video jobs are not awaited by anyone; their outcome lives in the store.
    this.result.catch(() => {});
  }
}

export interface SubmitSpec {
  kind: JobKind;
  model: string;
  params: JobParams;
  /** decoded reference images, stored as PNG under inputs/ */
  inputs?: RgbImage[];
  /** copy the stored reference images of this job (remix) */
  inputsFrom?: string;
  remixedFrom?: string;
  requestId?: string;
}

const STAGE_PROGRESS: Partial<Record<Stage, number>> = { encode_prompt: 5, encode_images: 5, prepare_latents: 5, decode: 95 };

function nowS(): number {
  return Math.floor(Date.now() / 1000);
}

export class Runtime {
  readonly layout: OutputLayout;
  readonly store: JobStore;
  readonly metrics: RuntimeMetrics;
  private readonly opts: RuntimeOptions;
  private readonly log: RuntimeLogger;
  private worker: WorkerHandle | null = null;
  private infoValue: PipelineInfo | null = null;
  private readonly queue: ActiveJob[] = [];
  private readonly active = new Map<string, ActiveJob>();
  /** the jobs the worker runs now (one pipeline batch), until each has reported its end */
  private batch: ActiveJob[] = [];
  private batchStartedMs = 0;
  private maxBatch = 1;
  private closing = false;
  private closed: Promise<void> | null = null;
  private stopped: Promise<void> | null = null;
  private restartAttempts = 0;
  private restartTimer: NodeJS.Timeout | null = null;
  private retentionTimer: NodeJS.Timeout | null = null;
  /** a retention sweep in progress (close waits for it before closing the database) */
  private expiring: Promise<number> | null = null;
  private meanJobSeconds = 10;
  private readonly progressWritten = new Map<string, number>();
  private readonly controls: ControlChannel;
  private seqCounter = 0;

  private constructor(opts: RuntimeOptions) {
    this.opts = opts;
    this.log = opts.logger;
    this.layout = new OutputLayout(opts.outputPath);
    this.layout.createDirectories();
    this.store = new JobStore(this.layout.database);
    this.metrics = new RuntimeMetrics(() => this.store.countByKindAndStatus());
    this.controls = new ControlChannel((e) => new JobFailedError(e), opts.logger);
  }

  /** Opens the store, recovers jobs from a previous run, starts the worker and waits for the model. */
  static async open(opts: RuntimeOptions): Promise<Runtime> {
    const rt = new Runtime(opts);
    try {
      await rt.recover();
      await rt.sweepOrphans();
      await rt.startWorker();
    } catch (err) {
      rt.closing = true;
      await rt.worker?.stop(1000);
      rt.store.close();
      throw err;
    }
    if (opts.retentionSeconds !== null) {
      const every = Math.max(1, Math.min(60, opts.retentionSeconds / 4)) * 1000;
      rt.retentionTimer = setInterval(() => {
        rt.expiring ??= rt
          .expireFiles()
          .catch((err: Error) => {
            rt.log.error({ err: err.message }, 'removing expired files failed');
            return 0;
          })
          .finally(() => (rt.expiring = null));
      }, every);
      rt.retentionTimer.unref();
      await rt.expireFiles();
    }
    return rt;
  }

  /** Pipeline info of the served model (known once the first worker has loaded it). */
  get info(): PipelineInfo {
    if (!this.infoValue) throw new Error('the model is not loaded yet');
    return this.infoValue;
  }

  /** True when a worker is up with the model loaded. */
  get ready(): boolean {
    return this.worker !== null && this.worker.alive && !this.closing && !this.controls.restoring;
  }

  get shuttingDown(): boolean {
    return this.closing;
  }

  get workerPid(): number | undefined {
    return this.worker?.pid;
  }

  /** The worker's processes, one per rank (--num-gpus); empty while none is up. */
  get workerPids(): number[] {
    return (this.worker?.pids ?? []).filter((p): p is number => p !== undefined);
  }

  get queueDepth(): number {
    return this.queue.length;
  }

  // ---------------------------------------------------------------------------------------------- startup

  /**
   * Jobs of the previous run: running ones are failed (or requeued), queued video jobs are queued again,
   * queued image requests (answered on a connection that is gone) are failed. Outputs a job may have
   * half-written are removed; image files are never recorded before completion, so the orphan sweep gets them.
   */
  private async recover(): Promise<void> {
    const at = nowS();
    const modelPath = this.opts.load.modelPath;
    for (const job of this.store.jobsWithStatus('in_progress')) {
      if (job.kind === 'video') await this.removeOutputs(job.id);
      if (job.kind === 'video' && this.opts.requeueOnRestart) {
        this.store.requeue(job.id);
        this.log.warn({ jobId: job.id }, 'requeued a job that was running when the server stopped');
      } else {
        this.store.fail(job.id, { code: 'server_restarted', message: 'the server stopped while this job was running; it did not finish' }, at);
        this.log.warn({ jobId: job.id }, 'marked a job that was running when the server stopped as failed');
      }
    }
    for (const job of this.store.jobsWithStatus('queued')) {
      if (job.kind === 'image') {
        this.store.fail(job.id, { code: 'server_restarted', message: 'the server stopped before this image request ran' }, at);
        continue;
      }
      if (job.model !== modelPath) {
        const message = `this job was queued for model '${job.model}'; the server now serves '${modelPath}'`;
        this.store.fail(job.id, { code: 'model_changed', message }, at);
        continue;
      }
      const a = new ActiveJob(job.id, 'video', job.params, this.filesFor(job.id, 'video', job.params), undefined);
      a.seq = ++this.seqCounter;
      this.active.set(a.id, a);
      this.queue.push(a);
    }
    this.metrics.queueDepth.set(this.queue.length);
  }

  private async removeOutputs(videoId: string): Promise<void> {
    await rm(this.layout.videoFile(videoId), { force: true });
    await rm(this.layout.thumbnailFile(videoId), { force: true });
  }

  /** Removes files no job or image record points to (left by a crash between writing and recording). */
  private async sweepOrphans(): Promise<void> {
    const known = this.store.knownIds();
    for (const dir of [this.layout.videos, this.layout.images, this.layout.inputs]) {
      for (const name of await readdir(dir)) {
        const id = name.replace(/(_\d+)?\..*$/, '');
        if (!isValidId(id) || !known.has(id) || name.endsWith('.partial') || name.includes('.partial.')) {
          await rm(join(dir, name), { force: true, recursive: true });
        }
      }
    }
  }

  private async startWorker(): Promise<void> {
    const parallel = this.opts.parallel;
    const w: WorkerHandle = parallel && parallel.worldSize > 1 ? new WorkerGroup(parallel) : new WorkerProcess();
    w.on('message', (m) => this.onWorkerMessage(m));
    w.on('exit', (code, signal, reason) => this.onWorkerExit(w, code, signal, reason));
    const { info, loadSeconds } = await w.start(this.opts.load, this.opts.workerEnv);
    if (this.closing) {
      await w.stop(1000);
      return;
    }
    this.worker = w;
    this.infoValue = info;
    this.maxBatch = this.opts.maxBatchSize ?? defaultMaxBatchSize(info.device);
    this.metrics.workerUp.set(1);
    this.log.info({ pid: w.pid, model: info.modelPath, pipeline: info.pipelineClass, loadSeconds, maxBatchSize: this.maxBatch }, 'worker ready');
    await this.controls.replay((m) => w.send(m));
    this.pump();
  }

  private scheduleRestart(): void {
    if (this.closing || this.restartTimer) return;
    const delay = Math.min(30_000, 250 * 2 ** this.restartAttempts);
    this.restartAttempts++;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      this.startWorker().then(
        () => {
          this.restartAttempts = 0;
        },
        (err: Error) => {
          this.log.error({ err: err.message, attempt: this.restartAttempts }, 'worker restart failed');
          this.scheduleRestart();
        },
      );
    }, delay);
  }

  // ---------------------------------------------------------------------------------------------- jobs

  private filesFor(id: string, kind: ActiveKind, params: JobParams, imageIds: string[] = []): JobFiles {
    const inputs = Array.from({ length: params.generation.inputImages }, (_, i) => this.layout.inputFile(id, i));
    if (kind === 'video') return { video: this.layout.videoFile(id), thumbnail: this.layout.thumbnailFile(id), inputs };
    if (kind === 'image') {
      const format = params.output.format as ImageFormat;
      return { images: imageIds.map((imgId) => ({ id: imgId, path: this.layout.imageFile(imgId, format) })), inputs };
    }
    return { inputs: [] };
  }

  private checkAccepting(): void {
    if (this.closing) throw new UnavailableError('the server is shutting down');
  }

  private checkCapacity(): void {
    if (this.queue.length >= this.opts.maxQueue) {
      const retry = Math.min(3600, Math.max(1, Math.ceil(this.meanJobSeconds * (1 + (this.batch.length > 0 ? 1 : 0)))));
      throw new QueueFullError(this.opts.maxQueue, retry);
    }
  }

  /** Accepts a job: stores it as queued and puts it at the end of the queue. */
  async submit(spec: SubmitSpec): Promise<ActiveJob> {
    this.checkAccepting();
    this.checkCapacity();
    const id = newId(spec.kind === 'video' ? 'video' : 'imgreq');
    const imageIds = spec.kind === 'image' ? Array.from({ length: spec.params.generation.numOutputs }, () => newId('img')) : [];
    const files = this.filesFor(id, spec.kind, spec.params, imageIds);
    try {
      if (spec.inputs) {
        await Promise.all(
          spec.inputs.map((img, i) =>
            sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
              .png({ compressionLevel: 1 })
              .toFile(files.inputs[i] as string),
          ),
        );
      } else if (spec.inputsFrom) {
        for (let i = 0; i < files.inputs.length; ++i) await copyFile(this.layout.inputFile(spec.inputsFrom, i), files.inputs[i] as string);
      }
      // Re-checked: other requests may have filled the queue while the inputs were written.
      this.checkAccepting();
      this.checkCapacity();
    } catch (err) {
      await Promise.all(files.inputs.map((f) => rm(f, { force: true })));
      throw err;
    }
    this.store.insertJob({
      id,
      kind: spec.kind,
      model: spec.model,
      prompt: spec.params.generation.prompt,
      params: spec.params,
      createdAt: nowS(),
      remixedFrom: spec.remixedFrom ?? null,
    });
    const job = new ActiveJob(id, spec.kind, spec.params, files, spec.requestId);
    job.seq = ++this.seqCounter;
    this.active.set(id, job);
    this.queue.push(job);
    this.metrics.queueDepth.set(this.queue.length);
    this.log.info({ jobId: id, kind: spec.kind, reqId: spec.requestId, queueDepth: this.queue.length }, 'job queued');
    this.pump();
    return job;
  }

  /** Runs a 1-step tiny generation ahead of the queued jobs (GET /health_generate). */
  probe(): ActiveJob {
    this.checkAccepting();
    const d = this.info.defaults;
    const side = (v: number) => Math.max(16, Math.floor(Math.min(v, 128) / 16) * 16);
    const params: JobParams = {
      generation: {
        prompt: 'health check',
        width: side(d.width),
        height: side(d.height),
        numFrames: 1,
        fps: d.fps,
        numInferenceSteps: 1,
        guidanceScale: d.guidanceScale,
        seed: 0,
        numOutputs: 1,
        inputImages: 0,
      },
      output: { format: 'png', quality: 75, partialImages: 0 },
    };
    const job = new ActiveJob(newId('imgreq'), 'probe', params, { inputs: [] }, undefined);
    this.active.set(job.id, job);
    this.queue.unshift(job);
    this.pump();
    return job;
  }

  /**
   * Runs a control operation in the worker (LoRA management, weight checksums). Exclusive operations
   * (those that change weights) wait for every job submitted before them to finish and run before
   * any job submitted after them; shared ones are answered at once, between denoising steps.
   */
  control(op: string, args: unknown, opts: { exclusive: boolean }): Promise<unknown> {
    this.checkAccepting();
    const w = this.worker;
    if (!w?.alive) throw new UnavailableError('no worker is ready (the model is loading or the worker is restarting)');
    if (!opts.exclusive) return this.controls.sendShared(op, args, (m) => w.send(m));
    const done = this.controls.enqueue(op, args, ++this.seqCounter);
    this.pump();
    return done;
  }

  /**
   * Gives the free worker its next work: an exclusive control operation that comes first, or the job at
   * the head of the queue with the compatible jobs right behind it (up to the batch size, never across a
   * weight operation queued between them).
   */
  private pump(): void {
    if (this.batch.length > 0 || this.controls.busy || this.closing || !this.worker?.alive) return;
    const worker = this.worker;
    if (this.controls.startNext(this.queue[0]?.seq ?? Number.POSITIVE_INFINITY, (m) => worker.send(m))) return;
    const batch = takeBatch(this.queue, this.maxBatch, this.controls.nextExclusiveSeq);
    if (batch.length === 0) return;
    this.metrics.queueDepth.set(this.queue.length);
    this.batch = batch;
    this.batchStartedMs = performance.now();
    const at = nowS();
    for (const job of batch) {
      job.running = true;
      if (job.kind !== 'probe') this.store.markStarted(job.id, at);
      this.progressWritten.set(job.id, 0);
    }
    this.metrics.batchSize.observe(batch.length);
    worker.send({ type: 'run', jobs: batch.map((j) => ({ jobId: j.id, kind: j.kind, params: j.params, files: j.files })) });
    for (const job of batch) this.log.info({ jobId: job.id, kind: job.kind, reqId: job.requestId, batchSize: batch.length }, 'job started');
  }

  private onWorkerMessage(m: FromWorker): void {
    if (m.type === 'memory') {
      this.metrics.recordMemory(m.memory);
      return;
    }
    if (m.type === 'ready' || m.type === 'load_failed') return;
    if (m.type === 'control_done' || m.type === 'control_failed') {
      if (this.controls.settle(m)) this.pump();
      return;
    }
    const job = this.active.get(m.jobId);
    if (!job) return;
    switch (m.type) {
      case 'started': {
        const g = job.params.generation;
        if (g.numFrames !== m.numFrames || g.width !== m.width || g.height !== m.height || g.fps !== m.fps) {
          job.params = { ...job.params, generation: { ...g, numFrames: m.numFrames, width: m.width, height: m.height, fps: m.fps } };
          if (job.kind !== 'probe' && !job.deleted) this.store.updateParams(job.id, job.params);
        }
        break;
      }
      case 'progress': {
        this.metrics.recordMemory(m.memory);
        // every job of a batch reports the same step: it is timed once, by the first job still running
        if (m.stage === 'denoise' && m.step > 0 && job === this.batch.find((j) => !j.deleted)) this.metrics.stepSeconds.observe(m.stepMs / 1000);
        const progress =
          m.stage === 'denoise' && m.totalSteps > 0 ? 5 + Math.round((85 * m.step) / m.totalSteps) : (STAGE_PROGRESS[m.stage] ?? 0);
        if (job.kind !== 'probe' && !job.deleted && progress > (this.progressWritten.get(job.id) ?? 0)) {
          this.store.setProgress(job.id, progress);
          this.progressWritten.set(job.id, progress);
        }
        job.emit('progress', { progress, stage: m.stage, step: m.step, totalSteps: m.totalSteps });
        break;
      }
      case 'partial':
        if (!job.deleted) job.emit('partial', m.index, m.images);
        break;
      case 'done':
        void this.finish(job, m.outcome);
        break;
      case 'failed':
        void this.fail(job, m.error);
        break;
    }
  }

  /** A job of the running batch reported its end; the worker is free once every job of the batch has. */
  private release(job: ActiveJob): void {
    this.active.delete(job.id);
    this.progressWritten.delete(job.id);
    const i = this.batch.indexOf(job);
    if (i >= 0) {
      this.batch.splice(i, 1);
      if (this.batch.length === 0) this.meanJobSeconds = 0.7 * this.meanJobSeconds + (0.3 * (performance.now() - this.batchStartedMs)) / 1000;
    }
    this.pump();
  }

  private async removeFiles(job: ActiveJob): Promise<void> {
    const f = job.files;
    const paths = [f.video, f.thumbnail, ...(f.images ?? []).map((i) => i.path), ...f.inputs].filter((p): p is string => !!p);
    await Promise.all(paths.map((p) => rm(p, { force: true })));
  }

  private async finish(job: ActiveJob, outcome: JobOutcome): Promise<void> {
    const kind = job.kind;
    this.release(job);
    if (job.deleted) {
      await this.removeFiles(job);
      return;
    }
    for (const [stage, ms] of Object.entries(outcome.timings)) this.metrics.stageSeconds.observe({ stage }, ms / 1000);
    if (kind === 'probe') {
      job.resolve({ record: null, images: [], outcome });
      return;
    }
    const completedAt = nowS();
    const expiresAt = this.opts.retentionSeconds === null ? null : completedAt + this.opts.retentionSeconds;
    const format = job.params.output.format as ImageFormat;
    const images: ImageRecord[] = outcome.images.map((im, index) => ({
      id: im.id,
      jobId: job.id,
      index,
      format,
      width: im.width,
      height: im.height,
      bytes: im.bytes,
      createdAt: completedAt,
      expiresAt,
      expired: false,
    }));
    this.store.complete(job.id, {
      completedAt,
      expiresAt,
      inferenceTimeS: outcome.inferenceTimeS,
      peakMemoryMb: outcome.peakMemoryMb,
      batchSize: outcome.batchSize,
      images,
    });
    // An edit's reference images are only needed while it runs (videos keep theirs for remix).
    if (kind === 'image') await Promise.all(job.files.inputs.map((f) => rm(f, { force: true })));
    this.metrics.jobsFinished.inc({ kind, outcome: 'completed' });
    this.metrics.jobSeconds.observe({ kind }, outcome.inferenceTimeS);
    this.log.info({ jobId: job.id, kind, reqId: job.requestId, inferenceTimeS: outcome.inferenceTimeS, batchSize: outcome.batchSize }, 'job completed');
    job.resolve({ record: this.store.getJob(job.id), images, outcome });
  }

  /**
   * Records a job that ended without output. Store updates happen before any await, so a shutdown that
   * closes the database right after cannot interleave.
   */
  private async fail(job: ActiveJob, reported: JobError): Promise<void> {
    this.release(job);
    let error = reported;
    if (this.closing && !job.deleted && (error.code === 'cancelled' || error.code === 'worker_crashed')) {
      error = { code: 'server_shutdown', message: 'the server shut down before this job finished' };
    }
    if (job.kind !== 'probe') {
      this.metrics.jobsFinished.inc({ kind: job.kind, outcome: error.code === 'cancelled' ? 'cancelled' : 'failed' });
    }
    if (!job.deleted) {
      if (job.kind === 'video' && error.code === 'server_shutdown' && this.opts.requeueOnRestart) {
        this.store.requeue(job.id);
        this.log.warn({ jobId: job.id }, 'running job interrupted by shutdown; requeued for the next start');
        await this.removeOutputs(job.id);
        job.reject(new JobFailedError(error));
        return;
      }
      if (job.kind === 'image' && error.code === 'invalid_request') {
        // A request the pipeline rejected leaves nothing behind; the client gets a 400.
        this.store.deleteJob(job.id);
      } else if (job.kind !== 'probe') {
        this.store.fail(job.id, error, nowS());
      }
      this.log.warn({ jobId: job.id, kind: job.kind, reqId: job.requestId, code: error.code, err: error.message }, 'job failed');
      job.reject(new JobFailedError(error));
    }
    await this.removeFiles(job);
  }

  private onWorkerExit(w: WorkerHandle, code: number | null, signal: NodeJS.Signals | null, reason?: string): void {
    if (this.worker !== w) return;
    this.worker = null;
    this.metrics.workerUp.set(0);
    const how = reason ?? (signal ? `killed by ${signal}` : `exit code ${code}`);
    this.controls.workerDied(how);
    const batch = [...this.batch];
    const together = batch.length > 1 ? ` with ${batch.length - 1} other job(s) of its batch` : '';
    for (const job of batch) {
      void this.fail(job, {
        code: 'worker_crashed',
        message: `the worker process died while running this job${together} (${how}); the job did not finish`,
      });
    }
    if (this.closing) return;
    this.metrics.workerRestarts.inc();
    this.log.error({ how, jobIds: batch.map((j) => j.id) }, 'worker process died; restarting it');
    this.scheduleRestart();
  }

  // ---------------------------------------------------------------------------------------------- queries

  getJob(id: string): JobRecord | null {
    return isValidId(id) ? this.store.getJob(id) : null;
  }

  getImage(id: string): ImageRecord | null {
    return isValidId(id, 'img') ? this.store.getImage(id) : null;
  }

  /**
   * Cancels a queued or running job and deletes it with its files, at once. A running job's outputs are
   * dropped; its batch stops at the next step once every job of it is cancelled (the others go on), and
   * whatever it still writes is removed when the worker reports back.
   */
  async deleteJob(id: string): Promise<boolean> {
    const record = this.getJob(id);
    const job = this.active.get(id);
    if (!record && !job) return false;
    if (job) {
      job.deleted = true;
      const qi = this.queue.indexOf(job);
      if (qi >= 0) {
        this.queue.splice(qi, 1);
        this.active.delete(id);
        this.metrics.queueDepth.set(this.queue.length);
        this.metrics.jobsFinished.inc({ kind: job.kind, outcome: 'cancelled' });
      } else if (job.running) {
        this.worker?.send({ type: 'cancel', jobId: id });
      }
      job.reject(new JobFailedError({ code: 'cancelled', message: 'the job was cancelled' }));
    }
    const images = this.store.deleteJob(id);
    const paths = images.map((im) => this.layout.imageFile(im.id, im.format));
    if (record?.kind === 'video' || job?.kind === 'video') paths.push(this.layout.videoFile(id), this.layout.thumbnailFile(id));
    const inputs = record?.params.generation.inputImages ?? 0;
    for (let i = 0; i < inputs; ++i) paths.push(this.layout.inputFile(id, i));
    await Promise.all(paths.map((p) => rm(p, { force: true })));
    this.log.info({ jobId: id, wasRunning: job?.running ?? false }, 'job deleted');
    return true;
  }

  // ---------------------------------------------------------------------------------------------- retention

  /** Removes the files of jobs and images past expires_at (their records stay, marked expired). */
  async expireFiles(): Promise<number> {
    const { jobs, images } = this.store.expiredFiles(nowS());
    const paths: string[] = [];
    for (const j of jobs) {
      if (j.kind === 'video') paths.push(this.layout.videoFile(j.id), this.layout.thumbnailFile(j.id));
      for (let i = 0; i < j.params.generation.inputImages; ++i) paths.push(this.layout.inputFile(j.id, i));
    }
    for (const im of images) paths.push(this.layout.imageFile(im.id, im.format));
    await Promise.all(paths.map((p) => rm(p, { force: true })));
    if (jobs.length + images.length > 0) {
      this.store.markFilesExpired(
        jobs.map((j) => j.id),
        images.map((i) => i.id),
      );
      this.log.info({ jobs: jobs.length, images: images.length }, 'expired output files removed');
    }
    return jobs.length + images.length;
  }

  // ---------------------------------------------------------------------------------------------- shutdown

  /**
   * Stops accepting work, gives the running jobs up to shutdownTimeoutMs to finish, then cancels them
   * (failed, or requeued with requeueOnRestart); queued video jobs stay queued for the next start.
   */
  close(): Promise<void> {
    if (!this.closed) {
      this.closed = this.stop()
        .then(() => this.expiring)
        .then(() => this.store.close());
    }
    return this.closed;
  }

  /**
   * The first part of close(): everything but closing the database, so requests still in flight can be
   * answered from the store. Idempotent.
   */
  stop(): Promise<void> {
    if (!this.stopped) this.stopped = this.doStop();
    return this.stopped;
  }

  private async doStop(): Promise<void> {
    this.closing = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    if (this.retentionTimer) clearInterval(this.retentionTimer);
    this.controls.close(new UnavailableError('the server shut down before this request ran'));
    for (const job of this.queue.splice(0)) {
      this.active.delete(job.id);
      if (job.kind === 'video') continue;
      if (job.kind === 'image') this.store.deleteJob(job.id);
      await this.removeFiles(job);
      job.reject(new UnavailableError('the server shut down before this request ran'));
    }
    this.metrics.queueDepth.set(0);
    const running = [...this.batch];
    if (running.length > 0) {
      const settled = Promise.all(running.map((job) => job.result.then(() => true, () => true))).then(() => true);
      const timeout = (ms: number) => new Promise<false>((r) => setTimeout(() => r(false), ms).unref());
      this.log.info({ jobIds: running.map((j) => j.id), timeoutMs: this.opts.shutdownTimeoutMs }, 'waiting for the running job before shutdown');
      if (!(await Promise.race([settled, timeout(this.opts.shutdownTimeoutMs)]))) {
        for (const job of running) this.worker?.send({ type: 'cancel', jobId: job.id });
        await Promise.race([settled, timeout(2000)]);
      }
    }
    await this.worker?.stop(5000);
    this.controls.workerDied('the server shut down');
    this.worker = null;
    this.metrics.workerUp.set(0);
  }
}
