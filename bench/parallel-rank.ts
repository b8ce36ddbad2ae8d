// One rank of bench/cases/parallel.ts: joins the shared-memory world, loads the Wan DiT folder it is
// given and times forward passes with the tokens split over the ranks; reports rank 0's wall time
// per forward and the part of it spent inside communicator calls (transfers plus waiting for the
// other ranks).
import * as E from '../lib/engine/index.js';
import { WanTransformer3DModel } from '../lib/models/wan/transformer.js';
import { Communicator } from '../lib/parallel/communicator.js';
import { resolveParallelConfig } from '../lib/parallel/config.js';
import { ParallelGroups } from '../lib/parallel/groups.js';
import { openShmCommunicator } from '../lib/parallel/shm.js';

interface Job {
  /** 'forward': the DiT; 'collectives': the exchanges of one attention at this token count, alone */
  mode: 'forward' | 'collectives';
  dir: string;
  frames: number;
  textDim: number;
  ulysses: number;
  ring: number;
  reps: number;
}

const rank = Number(process.env.ND_BENCH_RANK);
const worldSize = Number(process.env.ND_BENCH_WORLD);

// time spent inside collectives, accumulated by wrapping the Communicator's methods
let commMs = 0;
let commBytes = 0;
for (const name of ['allGather', 'allToAll', 'sendRecv', 'broadcast', 'allReduce'] as const) {
  const original = Communicator.prototype[name] as (this: Communicator, x: E.Tensor, ...rest: number[]) => E.Tensor;
  (Communicator.prototype as unknown as Record<string, unknown>)[name] = function (this: Communicator, x: E.Tensor, ...rest: number[]) {
    const t0 = performance.now();
    try {
      return original.call(this, x, ...rest);
    } finally {
      commMs += performance.now() - t0;
      commBytes += x.numel * E.elementSize(x.dtype);
    }
  };
}

/** Median ms of the exchanges one sequence-parallel attention makes at `tokens` tokens (1.3B widths). */
function collectives(world: Communicator, tokens: number, reps: number): { allToAll: number; sendRecv: number; bytes: number } {
  const shard = tokens / world.size;
  const qkv = E.randn([3, 1, shard, 12, 128], { seed: rank }); // q, k, v of this rank's tokens
  const kv = E.randn([2, 1, shard, 12, 128], { seed: rank }); // one ring step's key/value block
  const time = (fn: () => E.Tensor) => {
    const t: number[] = [];
    for (let i = 0; i <= reps; ++i) {
      world.barrier();
      const t0 = performance.now();
      fn().dispose();
      t.push(performance.now() - t0);
    }
    t.shift();
    t.sort((a, b) => a - b);
    return t[Math.floor(t.length / 2)] as number;
  };
  const n = world.size;
  return {
    allToAll: time(() => world.allToAll(qkv, 3, 2)),
    sendRecv: time(() => world.sendRecv(kv, (rank + 1) % n, (rank - 1 + n) % n)),
    bytes: qkv.numel * 4,
  };
}

process.once('message', async (job: Job) => {
  const world = openShmCommunicator({ path: process.env.ND_BENCH_SHM as string, rank, worldSize });
  if (job.mode === 'collectives') {
    process.send?.(collectives(world, job.frames * 1024, job.reps));
    world.close();
    process.disconnect();
    return;
  }
  const groups = worldSize > 1 ? ParallelGroups.create(world, resolveParallelConfig({ numGpus: worldSize, ulyssesDegree: job.ulysses, ringDegree: job.ring })) : null;
  const model = await WanTransformer3DModel.load(job.dir);
  const text = E.scope(() => E.mul(E.randn([1, 512, job.textDim], { seed: 5 }), 0.1));
  const timestep = E.tensor([999], [1], { dtype: 'int64' });
  const latents = E.randn([1, 16, job.frames, 64, 64], { seed: job.frames });
  const sequenceParallel = groups?.sequenceParallel ?? null;
  const times: Array<{ ms: number; commMs: number; commBytes: number }> = [];
  for (let i = 0; i <= job.reps; ++i) {
    world.barrier();
    commMs = 0;
    commBytes = 0;
    const t0 = performance.now();
    E.scope(() => void model.forward(latents, timestep, text, { sequenceParallel }));
    world.barrier();
    if (i > 0) times.push({ ms: performance.now() - t0, commMs, commBytes }); // the first pass warms up
  }
  times.sort((a, b) => a.ms - b.ms);
  process.send?.(times[Math.floor(times.length / 2)]);
  model.dispose();
  groups?.close();
  if (!groups) world.close();
  process.disconnect();
});
