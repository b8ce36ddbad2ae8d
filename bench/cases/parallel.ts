// Sequence parallelism on CPU ranks: the Wan2.1 DiT at the 1.3B widths (2 blocks, random weights)
// forward over 4096 video tokens (1024 in quick mode) on 1 process, then split over 2 and 4 rank
// processes joined by the shared-memory communicator, with Ulysses, ring and Ulysses x ring. Rank
// 0's wall time per forward and the part spent inside communicator calls (transfers, and waiting
// for the slowest rank). The cores are shared: each rank gets threads / ranks engine threads (at
// least 1), so 4 ranks on a 2-core machine oversubscribe it 2x; the point is the communication cost.
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { newShmPath } from '../../lib/parallel/shm.js';
import type { BenchCase, BenchRow } from '../lib.js';
import { writeTransformer } from './wan.js';

const here = dirname(fileURLToPath(import.meta.url));

interface Layout {
  ranks: number;
  ulysses: number;
  ring: number;
}

interface RankTime {
  ms: number;
  commMs: number;
  commBytes: number;
}

async function runRanks<T = RankTime>(layout: Layout, job: Record<string, unknown>, threads: number): Promise<T> {
  const shm = newShmPath();
  const children = Array.from({ length: layout.ranks }, (_, rank) =>
    fork(join(here, '..', 'parallel-rank.ts'), [], {
      execArgv: ['--import=tsx'],
      env: { ...process.env, ND_BENCH_RANK: String(rank), ND_BENCH_WORLD: String(layout.ranks), ND_BENCH_SHM: shm, ND_NUM_THREADS: String(threads) },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    }),
  );
  const results = children.map(
    (c, rank) =>
      new Promise<T>((resolve, reject) => {
        c.once('message', (m: T) => resolve(m));
        c.once('exit', (code, signal) => reject(new Error(`bench rank ${rank} exited (${signal ?? code}) without a result`)));
      }),
  );
  for (const c of children) c.send({ ...job, ulysses: layout.ulysses, ring: layout.ring });
  try {
    const all = await Promise.all(results);
    return all[0] as T;
  } finally {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
}

const parallel: BenchCase = async (ctx) => {
  const dir = mkdtempSync(join(tmpdir(), 'nd-bench-parallel-'));
  const rows: BenchRow[] = [];
  try {
    const config = writeTransformer(dir);
    const frames = ctx.quick ? 1 : 4;
    const tokens = frames * 1024;
    const job = { mode: 'forward', dir, frames, textDim: config.text_dim as number, reps: ctx.quick ? 1 : 3 };
    const layouts: Layout[] = [
      { ranks: 1, ulysses: 1, ring: 1 },
      { ranks: 2, ulysses: 2, ring: 1 },
      { ranks: 2, ulysses: 1, ring: 2 },
      { ranks: 4, ulysses: 4, ring: 1 },
      { ranks: 4, ulysses: 2, ring: 2 },
      { ranks: 4, ulysses: 1, ring: 4 },
    ];
    let single = 0;
    for (const l of layouts) {
      const threads = Math.max(1, Math.floor(ctx.threads / l.ranks));
      const t = await runRanks(l, job, threads);
      if (l.ranks === 1) single = t.ms;
      const what = l.ranks === 1 ? '1 rank' : `${l.ranks} ranks, ulysses ${l.ulysses} x ring ${l.ring}`;
      const busy = l.ranks * threads;
      rows.push({
        group: 'parallel',
        name: `Wan DiT forward, 1.3B widths, 2 blocks, ${tokens} tokens, ${what} (${threads} thread${threads > 1 ? 's' : ''} each)`,
        ms: t.ms,
        ratio: l.ranks === 1 ? undefined : single / t.ms,
        vs: l.ranks === 1 ? undefined : 'speed-up over 1 rank',
        note:
          l.ranks === 1
            ? `${ctx.threads} cores`
            : `${t.commMs.toFixed(0)} ms (${((100 * t.commMs) / t.ms).toFixed(0)}%) in collectives, ${(t.commBytes / 2 ** 20).toFixed(0)} MiB sent by rank 0` +
              (busy > ctx.threads ? `; ${busy} threads on ${ctx.threads} cores` : ''),
      });
    }
    // the exchanges of one attention alone: the q/k/v all-to-all (Ulysses) and one ring step
    for (const ranks of [2, 4]) {
      const c = await runRanks<{ allToAll: number; sendRecv: number; bytes: number }>(
        { ranks, ulysses: ranks, ring: 1 },
        { ...job, mode: 'collectives', reps: 7 },
        1,
      );
      const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
      const kvBytes = (c.bytes * 2) / 3;
      rows.push(
        { group: 'parallel', name: `shm allToAll of q/k/v, ${ranks} ranks, ${tokens} tokens (${mib(c.bytes)} per rank)`, ms: c.allToAll, gbps: c.bytes / c.allToAll / 1e6 },
        { group: 'parallel', name: `shm sendRecv of a k/v block (one ring step), ${ranks} ranks (${mib(kvBytes)})`, ms: c.sendRecv, gbps: kvBytes / c.sendRecv / 1e6 },
      );
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
};

export default parallel;
