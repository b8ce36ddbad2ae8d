// The server's handle on one worker process: fork, load the model, exchange messages, notice its death.
import { type ChildProcess, fork } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import type { PipelineInfo } from '../pipelines/types.js';
import type { FromWorker, LoadOptions, ToWorker } from './protocol.js';

/**
 * The worker module next to this one: worker.ts when running from the TypeScript sources (under tsx),
 * worker.js from the compiled package.
 */
export function workerEntry(): { file: string; execArgv: string[] } {
  const self = fileURLToPath(import.meta.url);
  const fromSources = self.endsWith('.ts');
  const file = self.replace(/worker-process\.(ts|js)$/, fromSources ? 'worker.ts' : 'worker.js');
  if (!existsSync(file)) throw new Error(`worker module not found at ${file}`);
  const execArgv = inheritableExecArgv(process.execArgv);
  // The .ts worker needs the tsx loader; it is inherited from our own flags, or added when missing.
  if (fromSources && !execArgv.some((a) => a.includes('tsx'))) execArgv.push('--import=tsx');
  return { file, execArgv };
}

/**
 * Our node flags minus those that would make the worker run something else (-e/-p scripts, --input-type)
 * or collide with us (--inspect ports). Loaders (--import, --require) and limits are kept.
 */
export function inheritableExecArgv(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i] as string;
    if (['-e', '--eval', '-p', '--print', '--input-type'].includes(a)) {
      ++i;
      continue;
    }
    if (/^--(eval|print|input-type)=/.test(a) || /^--inspect(-brk|-port|-wait)?(=|$)/.test(a)) continue;
    out.push(a);
  }
  return out;
}

export interface WorkerEvents {
  message: [FromWorker];
  /** reason: what happened, when more is known than the code and signal (a rank of a group) */
  exit: [code: number | null, signal: NodeJS.Signals | null, reason?: string];
}

/** What the runtime drives: one worker process, or a group of rank processes acting as one (worker-group.ts). */
export interface WorkerHandle extends EventEmitter<WorkerEvents> {
  /** the process that reports (rank 0 of a group) */
  readonly pid: number | undefined;
  /** every process (one per rank) */
  readonly pids: Array<number | undefined>;
  readonly alive: boolean;
  info: PipelineInfo | null;
  start(options: LoadOptions, env?: NodeJS.ProcessEnv): Promise<{ info: PipelineInfo; loadSeconds: number }>;
  send(msg: ToWorker): boolean;
  stop(graceMs?: number): Promise<void>;
}

export class WorkerProcess extends EventEmitter<WorkerEvents> implements WorkerHandle {
  private child: ChildProcess | null = null;
  private exited = false;
  info: PipelineInfo | null = null;

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get pids(): Array<number | undefined> {
    return [this.pid];
  }

  get alive(): boolean {
    return this.child !== null && !this.exited;
  }

  /** Forks the worker and loads the model; resolves with the pipeline info once the worker is ready. */
  start(options: LoadOptions, env: NodeJS.ProcessEnv = process.env): Promise<{ info: PipelineInfo; loadSeconds: number }> {
    const { file, execArgv } = workerEntry();
    const child = fork(file, [], {
      execArgv,
      env,
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.child = child;
    return new Promise((resolve, reject) => {
      let settled = false;
      child.on('message', (msg: FromWorker) => {
        if (!settled && msg.type === 'ready') {
          settled = true;
          this.info = msg.info;
          resolve({ info: msg.info, loadSeconds: msg.loadSeconds });
        } else if (!settled && msg.type === 'load_failed') {
          settled = true;
          child.kill('SIGKILL');
          reject(new Error(`could not load model '${options.modelPath}': ${msg.message}`));
        } else {
          this.emit('message', msg);
        }
      });
      child.once('error', (err) => {
        if (!settled) {
          settled = true;
          reject(err);
        }
      });
      child.once('exit', (code, signal) => {
        this.exited = true;
        if (!settled) {
          settled = true;
          reject(new Error(`the worker process exited while loading the model (${signal ?? `exit code ${code}`})`));
          return;
        }
        this.emit('exit', code, signal);
      });
      child.send({ type: 'load', options } satisfies ToWorker);
    });
  }

  send(msg: ToWorker): boolean {
    if (!this.child || this.exited || !this.child.connected) return false;
    this.child.send(msg);
    return true;
  }

  /** Stops the worker: SIGTERM, then SIGKILL after `graceMs`; resolves when it has exited. */
  async stop(graceMs = 5000): Promise<void> {
    const child = this.child;
    if (!child || this.exited) return;
    const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await gone;
    clearTimeout(timer);
  }
}
