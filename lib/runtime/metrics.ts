// Prometheus metrics of one server instance (its own registry, so several servers can share a process).
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

import type { MemorySample } from './protocol.js';

export class RuntimeMetrics {
  readonly registry = new Registry();
  readonly queueDepth: Gauge;
  readonly jobs: Gauge<'kind' | 'status'>;
  readonly jobsFinished: Counter<'kind' | 'outcome'>;
  readonly stepSeconds: Histogram;
  readonly stageSeconds: Histogram<'stage'>;
  readonly jobSeconds: Histogram<'kind'>;
  readonly batchSize: Histogram;
  readonly workerMemory: Gauge<'kind'>;
  readonly workerRestarts: Counter;
  readonly workerUp: Gauge;
  readonly httpSeconds: Histogram<'method' | 'route' | 'status'>;

  constructor(jobCounts: () => Array<{ kind: string; status: string; n: number }>) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'node_diffusion_server_' });
    this.queueDepth = new Gauge({ name: 'node_diffusion_queue_depth', help: 'Jobs waiting for the worker', registers });
    this.jobs = new Gauge({
      name: 'node_diffusion_jobs',
      help: 'Stored jobs by kind and status',
      labelNames: ['kind', 'status'],
      registers,
      collect() {
        this.reset();
        for (const { kind, status, n } of jobCounts()) this.set({ kind, status }, n);
      },
    });
    this.jobsFinished = new Counter({
      name: 'node_diffusion_jobs_finished_total',
      help: 'Jobs finished since start, by outcome (completed, failed, cancelled)',
      labelNames: ['kind', 'outcome'],
      registers,
    });
    this.stepSeconds = new Histogram({
      name: 'node_diffusion_denoise_step_seconds',
      help: 'Duration of one denoising step',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers,
    });
    this.stageSeconds = new Histogram({
      name: 'node_diffusion_stage_seconds',
      help: 'Duration of each pipeline stage (encode_prompt, prepare_latents, denoise, decode, encode_output, ...)',
      labelNames: ['stage'],
      buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900],
      registers,
    });
    this.jobSeconds = new Histogram({
      name: 'node_diffusion_job_seconds',
      help: 'Wall time of a job from start on the worker to its files being written',
      labelNames: ['kind'],
      buckets: [0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600],
      registers,
    });
    this.batchSize = new Histogram({
      name: 'node_diffusion_batch_size',
      help: 'Jobs per pipeline run (request batching, --max-batch-size; 1: a job ran alone)',
      buckets: [1, 2, 3, 4, 6, 8, 12, 16, 32],
      registers,
    });
    this.workerMemory = new Gauge({
      name: 'node_diffusion_worker_memory_bytes',
      help: 'Worker memory: rss, heap_used, host_tensors, device_tensors (last report)',
      labelNames: ['kind'],
      registers,
    });
    this.workerRestarts = new Counter({
      name: 'node_diffusion_worker_restarts_total',
      help: 'Times the worker process died and was started again',
      registers,
    });
    this.workerUp = new Gauge({ name: 'node_diffusion_worker_up', help: '1 when the worker is loaded and ready', registers });
    this.httpSeconds = new Histogram({
      name: 'node_diffusion_http_request_seconds',
      help: 'HTTP request latency by route',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 120],
      registers,
    });
  }

  recordMemory(m: MemorySample): void {
    this.workerMemory.set({ kind: 'rss' }, m.rssBytes);
    this.workerMemory.set({ kind: 'heap_used' }, m.heapUsedBytes);
    this.workerMemory.set({ kind: 'host_tensors' }, m.hostTensorBytes);
    this.workerMemory.set({ kind: 'device_tensors' }, m.deviceTensorBytes);
  }
}
