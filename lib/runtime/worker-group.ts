// A group of worker processes, one per rank (--num-gpus N), that the runtime drives as one worker.
// Every rank gets every job and control operation and runs the same pipeline in lockstep (the
// ranks exchange tensors between themselves: lib/parallel); rank 0 reports progress and writes the
// outputs. A job's outcome (each job of a batch has its own) is reported once every rank has finished
// it. A rank that dies, or fails on its own while the others are still inside the job (they would wait
// for it forever), brings the whole group down, so the runtime fails the batch and starts a fresh group.
import { EventEmitter } from 'node:events';
import { rmSync } from 'node:fs';
import { availableParallelism } from 'node:os';

import type { ParallelConfig } from '../parallel/config.js';
import { freeLocalPort } from '../parallel/rendezvous.js';
import { newShmPath } from '../parallel/shm.js';
import type { PipelineInfo } from '../pipelines/types.js';
import type { FromWorker, LoadOptions, ToWorker } from './protocol.js';
import { type WorkerEvents, type WorkerHandle, WorkerProcess } from './worker-process.js';

type JobEnd = Extract<FromWorker, { type: 'done' | 'failed' }>;
type ControlEnd = Extract<FromWorker, { type: 'control_done' | 'control_failed' }>;

/** Failures every rank reaches at the same point (rank 0's cancellation, a request all ranks reject). */
const AGREED_FAILURES = new Set(['cancelled', 'invalid_request']);

export class WorkerGroup extends EventEmitter<WorkerEvents> implements WorkerHandle {
  private readonly ranks: WorkerProcess[] = [];
  private readonly jobs = new Map<string, Array<JobEnd | undefined>>();
  private readonly controls = new Map<string, Array<ControlEnd | undefined>>();
  /** no more messages go to the ranks (the group is stopping, or broken) */
  private closed = false;
  /** the ranks are being killed: their exits are expected from now on */
  private killing = false;
  private exited = 0;
  /** what brought the group down, reported with its exit */
  private endReason: { code: number | null; signal: NodeJS.Signals | null; reason: string } | null = null;
  /** a rank failed on its own; waiting briefly for a rank's exit that would explain it */
  private pendingFailure: { jobId: string; reason: string; timer: NodeJS.Timeout } | null = null;
  info: PipelineInfo | null = null;
  /** the CPU ranks' shared file (rank 0 unlinks it once all have joined; removed again when the group ends) */
  private readonly shmPath = newShmPath();

  constructor(readonly config: ParallelConfig) {
    super();
  }

  get size(): number {
    return this.config.worldSize;
  }

  /** rank 0's process */
  get pid(): number | undefined {
    return this.ranks[0]?.pid;
  }

  get pids(): Array<number | undefined> {
    return this.ranks.map((r) => r.pid);
  }

  get alive(): boolean {
    return !this.closed && this.ranks.length === this.size && this.ranks.every((r) => r.alive);
  }

  /**
   * Forks every rank and loads the model in each (they join each other first); resolves with rank
   * 0's pipeline info once all are ready, or stops them all and rejects naming the rank that failed.
   */
  async start(options: LoadOptions, env: NodeJS.ProcessEnv = process.env): Promise<{ info: PipelineInfo; loadSeconds: number }> {
    const shmPath = this.shmPath;
    const rendezvous = { host: '127.0.0.1', port: await freeLocalPort() };
    // CPU ranks share the cores (an explicit ND_NUM_THREADS wins)
    const threads = env.ND_NUM_THREADS ?? String(Math.max(1, Math.floor(availableParallelism() / this.size)));
    for (let r = 0; r < this.size; ++r) {
      const w = new WorkerProcess();
      w.on('message', (m) => this.onMessage(r, m));
      w.on('exit', (code, signal) => this.onRankExit(r, code, signal));
      this.ranks.push(w);
    }
    const t0 = performance.now();
    try {
      const ready = await Promise.all(
        this.ranks.map((w, r) =>
          w.start({ ...options, parallel: { config: this.config, rank: r, shmPath, rendezvous } }, { ...env, ND_NUM_THREADS: threads }).catch((err: Error) => {
            throw new Error(`rank ${r} of ${this.size}: ${err.message}`);
          }),
        ),
      );
      this.info = (ready[0] as { info: PipelineInfo }).info;
      return { info: this.info, loadSeconds: (performance.now() - t0) / 1000 };
    } catch (err) {
      await this.stop(1000);
      throw err;
    }
  }

  send(msg: ToWorker): boolean {
    if (!this.alive) return false;
    // filled slots, not holes: every() skips holes
    if (msg.type === 'run') for (const job of msg.jobs) this.jobs.set(job.jobId, Array.from({ length: this.size }, () => undefined));
    if (msg.type === 'control') this.controls.set(msg.id, Array.from({ length: this.size }, () => undefined));
    return this.ranks.map((w) => w.send(msg)).every(Boolean);
  }

  private onMessage(rank: number, m: FromWorker): void {
    switch (m.type) {
      case 'ready':
      case 'load_failed':
        return; // start() has them
      case 'done':
      case 'failed':
        this.onJobEnd(rank, m);
        return;
      case 'control_done':
      case 'control_failed':
        this.onControlEnd(rank, m);
        return;
      default:
        // progress, previews and memory samples come from rank 0
        if (rank === 0) this.emit('message', m);
    }
  }

  private onJobEnd(rank: number, m: JobEnd): void {
    const ends = this.jobs.get(m.jobId);
    if (!ends) return;
    ends[rank] = m;
    if (ends.every(Boolean)) {
      this.jobs.delete(m.jobId);
      this.emit('message', ends[0] as JobEnd);
      return;
    }
    if (m.type === 'failed' && !AGREED_FAILURES.has(m.error.code)) {
      // The ranks still inside the job wait for this one in their next collective: the group restarts.
      // A rank that noticed a dead peer reports first; that peer's exit, arriving just after, is the cause.
      this.jobs.delete(m.jobId);
      this.closed = true;
      const reason = `rank ${rank} of ${this.size} failed on its own (${m.error.message})`;
      const timer = setTimeout(() => {
        this.pendingFailure = null;
        this.emit('message', { type: 'failed', jobId: m.jobId, error: { code: 'generation_failed', message: `${reason}; the ranks are restarted` } });
        this.end({ code: null, signal: null, reason });
      }, 1000);
      this.pendingFailure ??= { jobId: m.jobId, reason, timer };
    }
  }

  private onControlEnd(rank: number, m: ControlEnd): void {
    const ends = this.controls.get(m.id);
    if (!ends) return;
    ends[rank] = m;
    if (!ends.every(Boolean)) return;
    this.controls.delete(m.id);
    const lead = ends[0] as ControlEnd;
    const odd = ends.findIndex((e) => e?.type !== lead.type);
    if (odd < 0) {
      this.emit('message', lead);
      return;
    }
    // the ranks' weights differ now: answer with the failure and start over
    const failed = (lead.type === 'control_failed' ? lead : ends[odd]) as Extract<ControlEnd, { type: 'control_failed' }>;
    const who = lead.type === 'control_failed' ? 0 : odd;
    this.end({ code: null, signal: null, reason: `rank ${who} of ${this.size} disagreed with the others on a weight operation (${failed.error.message})` });
    this.emit('message', { type: 'control_failed', id: m.id, error: { code: 'control_failed', message: `rank ${who}: ${failed.error.message}` } });
  }

  private onRankExit(rank: number, code: number | null, signal: NodeJS.Signals | null): void {
    this.exited++;
    if (!this.killing) {
      // a rank died: the others cannot go on without it (this also explains a failure they reported)
      const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      if (this.pendingFailure) {
        clearTimeout(this.pendingFailure.timer);
        this.pendingFailure = null;
      }
      this.end({ code, signal, reason: `rank ${rank} of ${this.size} (pid ${this.ranks[rank]?.pid}) ${how}` });
    }
    if (this.exited === this.ranks.length) {
      rmSync(this.shmPath, { force: true });
      const e = this.endReason ?? { code, signal, reason: `rank ${rank} of ${this.size} exited` };
      this.emit('exit', e.code, e.signal, e.reason);
    }
  }

  /** Takes the group down: nothing more is sent, every rank is killed. */
  private end(reason: { code: number | null; signal: NodeJS.Signals | null; reason: string }): void {
    if (this.killing) return;
    this.killing = true;
    this.closed = true;
    this.endReason ??= reason;
    for (const w of this.ranks) if (w.alive) void w.stop(0);
  }

  /** Stops every rank: SIGTERM, then SIGKILL after graceMs; resolves when all have exited. */
  async stop(graceMs = 5000): Promise<void> {
    this.killing = true;
    this.closed = true;
    this.endReason ??= { code: null, signal: null, reason: 'the ranks were stopped' };
    if (this.pendingFailure) clearTimeout(this.pendingFailure.timer);
    await Promise.all(this.ranks.map((w) => w.stop(graceMs)));
    rmSync(this.shmPath, { force: true });
  }
}
