// Control operations sent to the worker next to the jobs (LoRA management, weight checksums).
// Exclusive ones change weights: they take their place in the job order (after every job submitted
// before them, before every job submitted after) and run while no job runs, so a job never sees its
// weights change. Shared ones only read and are answered at once (between two denoising steps when a
// job is running). A successful exclusive operation may leave a replay: the call that rebuilds the
// state it produced, sent to a restarted worker before any job.
import type { ControlReplay, FromWorker, JobError, ToWorker } from './protocol.js';

export type ControlResultMessage = Extract<FromWorker, { type: 'control_done' | 'control_failed' }>;

interface Pending {
  id: string;
  op: string;
  args: unknown;
  /** position in the job order (exclusive operations) */
  seq: number;
  exclusive: boolean;
  resolve: (result: unknown) => void;
  reject: (err: Error) => void;
}

export interface ControlLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export class ControlChannel {
  private serial = 0;
  private readonly waiting: Pending[] = [];
  private readonly inFlight = new Map<string, Pending>();
  private runningExclusive: Pending | null = null;
  private readonly replays = new Map<string, ControlReplay>();
  private replaying = false;
  /** shared operations that arrived while the state was being restored (answered once it is) */
  private readonly deferred: Array<() => void> = [];

  constructor(
    private readonly fail: (error: JobError) => Error,
    private readonly log: ControlLogger,
  ) {}

  /** An exclusive operation is running in the worker: no job may start. */
  get busy(): boolean {
    return this.runningExclusive !== null || this.replaying;
  }

  /** The job-order position of the next queued exclusive operation (Infinity when none): no batch runs a job across it. */
  get nextExclusiveSeq(): number {
    return this.waiting[0]?.seq ?? Number.POSITIVE_INFINITY;
  }

    /** A restarted worker is being given its weight state back. */
  get restoring(): boolean {
    return this.replaying;
  }

  /** Queues an exclusive operation at position seq of the job order. */
  enqueue(op: string, args: unknown, seq: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ id: `ctl_${++this.serial}`, op, args, seq, exclusive: true, resolve, reject });
    });
  }

  /** Sends a shared (read-only) operation now, or once a restarted worker has its state back. */
  sendShared(op: string, args: unknown, send: (m: ToWorker) => boolean): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const p: Pending = { id: `ctl_${++this.serial}`, op, args, seq: 0, exclusive: false, resolve, reject };
      const go = () => {
        this.inFlight.set(p.id, p);
        if (!send({ type: 'control', id: p.id, op, args })) {
          this.inFlight.delete(p.id);
          reject(this.fail({ code: 'worker_unavailable', message: 'the worker is not running' }));
        }
      };
      if (this.replaying) this.deferred.push(go);
      else go();
    });
  }

  /**
   * Starts the first queued exclusive operation if it comes before the next job (seq of the job at
   * the queue head, Infinity when none). Returns whether one was started.
   */
  startNext(nextJobSeq: number, send: (m: ToWorker) => boolean): boolean {
    const head = this.waiting[0];
    if (this.runningExclusive || !head || head.seq > nextJobSeq) return false;
    this.waiting.shift();
    this.runningExclusive = head;
    this.inFlight.set(head.id, head);
    if (!send({ type: 'control', id: head.id, op: head.op, args: head.args })) {
      this.inFlight.delete(head.id);
      this.runningExclusive = null;
      this.waiting.unshift(head);
      return false;
    }
    return true;
  }

  /** Settles an operation from the worker's answer; returns true when an exclusive one finished. */
  settle(m: ControlResultMessage): boolean {
    const p = this.inFlight.get(m.id);
    if (!p) return false;
    this.inFlight.delete(m.id);
    if (m.type === 'control_done') {
      if (m.replay) this.replays.set(m.replay.key, m.replay);
      p.resolve(m.result);
    } else {
      p.reject(this.fail(m.error));
    }
    if (this.runningExclusive === p) {
      this.runningExclusive = null;
      return true;
    }
    return false;
  }

  /** The worker died: operations sent to it fail (queued ones wait for the next worker). */
  workerDied(how: string): void {
    for (const p of this.inFlight.values())
      p.reject(this.fail({ code: 'worker_crashed', message: `the worker process died during ${p.op} (${how})` }));
    this.inFlight.clear();
    this.runningExclusive = null;
  }

  /**
   * Replays the recorded state into a fresh worker, one operation after the other; a replay that fails
   * is logged and dropped (the worker then reports its real state).
   */
  async replay(send: (m: ToWorker) => boolean): Promise<void> {
    this.replaying = true;
    try {
      await this.replayAll(send);
    } finally {
      this.replaying = false;
      for (const go of this.deferred.splice(0)) go();
    }
  }

  private async replayAll(send: (m: ToWorker) => boolean): Promise<void> {
    for (const [key, r] of [...this.replays]) {
      const p = new Promise<unknown>((resolve, reject) => {
        const pending: Pending = { id: `ctl_${++this.serial}`, op: r.op, args: r.args, seq: 0, exclusive: true, resolve, reject };
        this.inFlight.set(pending.id, pending);
        this.runningExclusive = pending;
        if (!send({ type: 'control', id: pending.id, op: r.op, args: r.args })) {
          this.inFlight.delete(pending.id);
          this.runningExclusive = null;
          reject(new Error('the worker is not running'));
        }
      });
      try {
        await p;
        this.log.info({ op: r.op, key }, 'restored the weight state in the new worker');
      } catch (err) {
        this.replays.delete(key);
        this.log.warn({ op: r.op, key, err: (err as Error).message }, 'could not restore the weight state in the new worker');
      }
    }
  }

  /** Fails every queued operation (shutdown). */
  close(err: Error): void {
    for (const p of this.waiting.splice(0)) p.reject(err);
  }
}
