// Test harness: a pool of real rank processes joined by a communicator (shared memory between CPU
// ranks, or NCCL with rank r on CUDA device r). Each rank imports scenario modules once and runs the
// named exports it is sent, each with the world communicator and structured-clone arguments, and
// returns what they return.
import { type ChildProcess, fork } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { freeLocalPort } from '../../lib/parallel/rendezvous.js';
import { newShmPath } from '../../lib/parallel/shm.js';

const here = dirname(fileURLToPath(import.meta.url));

type Reply = { type: 'ready' } | { type: 'result'; id: number; value: unknown } | { type: 'error'; id: number; message: string };

export interface RankPool {
  readonly size: number;
  readonly pids: number[];
  /** Runs scenario `name` on every rank; resolves with each rank's value, rejects with the first error. */
  run<T = unknown>(name: string, args?: unknown): Promise<T[]>;
  /** Runs it and resolves with each rank's outcome, errors included. */
  settle(name: string, args?: unknown): Promise<Array<{ value?: unknown; error?: string }>>;
  kill(rank: number): void;
  close(): Promise<void>;
}

export interface RankPoolOptions {
  /** engine threads per rank (default 1) */
  threads?: number;
  env?: NodeJS.ProcessEnv;
  /** 'shm' (CPU ranks, default) or 'nccl' (rank r on cuda:r) */
  transport?: 'shm' | 'nccl';
}

/** Starts `size` rank processes running `scenarios` (module paths relative to test/parallel). */
export async function startRanks(size: number, scenarios: string | string[], opts: RankPoolOptions = {}): Promise<RankPool> {
  const path = newShmPath();
  const port = opts.transport === 'nccl' ? await freeLocalPort() : 0;
  const modules = (Array.isArray(scenarios) ? scenarios : [scenarios]).map((m) => join(here, m));
  const threads = opts.threads ?? 1;
  const children: ChildProcess[] = [];
  const exits: Array<Promise<void>> = [];
  let nextId = 1;
  const waiting = new Map<number, Array<(r: Reply | { type: 'exit'; how: string }) => void>>();
  const ready: Array<Promise<void>> = [];
  for (let rank = 0; rank < size; ++rank) {
    const child = fork(join(here, 'rank-entry.ts'), modules, {
      execArgv: ['--import=tsx'],
      env: {
        ...process.env,
        ...opts.env,
        ND_TEST_RANK: String(rank),
        ND_TEST_WORLD: String(size),
        ND_TEST_TRANSPORT: opts.transport ?? 'shm',
        ND_TEST_SHM: path,
        ND_TEST_PORT: String(port),
        ND_NUM_THREADS: String(threads),
      },
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    children.push(child);
    exits.push(new Promise((resolve) => child.once('exit', () => resolve())));
    ready.push(
      new Promise((resolve, reject) => {
        child.once('message', (m: Reply) => (m.type === 'ready' ? resolve() : reject(new Error(`rank ${rank}: ${JSON.stringify(m)}`))));
        child.once('exit', (code, signal) => reject(new Error(`rank ${rank} exited while starting (${signal ?? code})`)));
      }),
    );
    child.on('message', (m: Reply) => {
      if (m.type === 'ready') return;
      waiting.get(m.id)?.[rank]?.(m);
    });
    child.on('exit', (code, signal) => {
      for (const handlers of waiting.values()) handlers[rank]?.({ type: 'exit', how: String(signal ?? code) });
    });
  }
  await Promise.all(ready);

  const settle = async (name: string, args?: unknown) => {
    const id = nextId++;
    const outcomes = await new Promise<Array<{ value?: unknown; error?: string }>>((resolve) => {
      const out: Array<{ value?: unknown; error?: string }> = new Array(size);
      let left = size;
      const handlers = children.map((_, rank) => (r: Reply | { type: 'exit'; how: string }) => {
        if (out[rank]) return;
        if (r.type === 'result') out[rank] = { value: r.value };
        else if (r.type === 'error') out[rank] = { error: r.message };
        else if (r.type === 'exit') out[rank] = { error: `rank ${rank} exited (${r.how})` };
        else return;
        if (--left === 0) resolve(out);
      });
      waiting.set(id, handlers);
      children.forEach((c, rank) => {
        if (c.exitCode !== null || c.signalCode !== null) handlers[rank]?.({ type: 'exit', how: String(c.signalCode ?? c.exitCode) });
        else c.send({ id, name, args });
      });
    });
    waiting.delete(id);
    return outcomes;
  };

  return {
    size,
    pids: children.map((c) => c.pid as number),
    settle,
    async run<T>(name: string, args?: unknown): Promise<T[]> {
      const outcomes = await settle(name, args);
      const failed = outcomes.findIndex((o) => o.error !== undefined);
      if (failed >= 0) throw new Error(`scenario ${name}, rank ${failed}: ${outcomes[failed]?.error}`);
      return outcomes.map((o) => o.value as T);
    },
    kill(rank: number) {
      children[rank]?.kill('SIGKILL');
    },
    async close() {
      for (const c of children) if (c.connected) c.disconnect();
      const timer = setTimeout(() => children.forEach((c) => c.kill('SIGKILL')), 10_000);
      await Promise.all(exits);
      clearTimeout(timer);
      rmSync(path, { force: true });
    },
  };
}
