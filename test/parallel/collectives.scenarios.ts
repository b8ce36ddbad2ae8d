// Scenarios of collectives.test.ts (CPU ranks, ranks.ts) and of the NCCL checks of test:gpu, run
// inside each rank process; tensors live on the communicator's device.
import type { DType } from '../../lib/engine/dtype.js';
import { type Tensor, tensor } from '../../lib/engine/tensor.js';
import type { Communicator } from '../../lib/parallel/communicator.js';

export const DTYPES: DType[] = ['float32', 'float16', 'bfloat16', 'float8_e4m3', 'int32', 'int64', 'uint8'];

/** Element i of rank r's test tensor: small integers every dtype holds exactly (int64 beyond 2^32). */
export function value(dtype: DType, rank: number, i: number, forSum = false): number {
  const h = (rank * 7919 + i * 31 + 17) % 997;
  switch (dtype) {
    case 'float8_e4m3': return (h % 5) - 2; // sums of 4 stay within 16 (exact in e4m3)
    case 'uint8': return h % 256; // sums wrap around
    case 'int64': return forSum ? h * 2 ** 33 - 1000 * rank : h * 2 ** 33 + rank;
    case 'int32': return h * 1000 - 400000;
    default: return forSum ? (h % 61) - 30 : (h % 201) - 100;
  }
}

/** Rank `rank`'s test tensor, on the CPU. */
export function make(dtype: DType, rank: number, shape: number[], forSum = false): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const vals = Array.from({ length: n }, (_, i) => value(dtype, rank, i, forSum));
  if (dtype === 'int64') return tensor(BigInt64Array.from(vals, (v) => BigInt(v)), shape);
  return tensor(vals, shape, { dtype });
}

/** The same on the communicator's device. */
function mine(world: Communicator, dtype: DType, rank: number, shape: number[], forSum = false): Tensor {
  return make(dtype, rank, shape, forSum).toDevice(world.device);
}

function out(t: Tensor): { shape: number[]; values: number[] } {
  return { shape: t.shape, values: t.toDevice('cpu').toArray() };
}

export function allGather(world: Communicator, a: { dtype: DType; shape: number[]; dim: number }) {
  return out(world.allGather(mine(world, a.dtype, world.rank, a.shape), a.dim));
}

export function allToAll(world: Communicator, a: { dtype: DType; shape: number[]; scatter: number; gather: number }) {
  return out(world.allToAll(mine(world, a.dtype, world.rank, a.shape), a.scatter, a.gather));
}

export function allReduce(world: Communicator, a: { dtype: DType; shape: number[] }) {
  return out(world.allReduce(mine(world, a.dtype, world.rank, a.shape, true)));
}

export function broadcast(world: Communicator, a: { dtype: DType; shape: number[]; root: number }) {
  return out(world.broadcast(mine(world, a.dtype, world.rank, a.shape), a.root));
}

export function broadcastValue(world: Communicator, a: { root: number }) {
  return world.broadcastValue({ from: world.rank, text: 'Grüße ✓', list: [1, 2, 3] }, a.root);
}

/** Each rank sends to the next and receives from the previous (a ring step). */
export function ringShift(world: Communicator, a: { dtype: DType; shape: number[] }) {
  const n = world.size;
  return out(world.sendRecv(mine(world, a.dtype, world.rank, a.shape), (world.rank + 1) % n, (world.rank - 1 + n) % n));
}

/** Rank 0 sends to every other rank in turn, then receives their answers. */
export function pointToPoint(world: Communicator, a: { shape: number[] }) {
  if (world.rank === 0) {
    for (let p = 1; p < world.size; ++p) world.send(mine(world, 'float32', 100 + p, a.shape), p);
    return Array.from({ length: world.size - 1 }, (_, i) => out(world.recv(a.shape, 'float32', i + 1)));
  }
  const got = world.recv(a.shape, 'float32', 0);
  world.send(mine(world, 'float32', 200 + world.rank, a.shape), 0);
  return [out(got)];
}

/** Sub-communicators: even and odd ranks (ordered by descending rank), then an all-gather in each. */
export function split(world: Communicator) {
  const sub = world.split(world.rank % 2, -world.rank);
  const gathered = sub.allGather(tensor([world.rank], [1], { dtype: 'int32' }).toDevice(world.device));
  const result = { rank: sub.rank, size: sub.size, worldRanks: [...sub.worldRanks], gathered: gathered.toDevice('cpu').toArray() };
  sub.barrier();
  return result;
}

/** Ranks disagree on the size: every rank gets an error naming the mismatch, and the world still works after. */
export function mismatch(world: Communicator) {
  let message = '';
  try {
    world.allGather(make('float32', world.rank, [world.rank === 0 ? 3 : 4]));
  } catch (err) {
    message = (err as Error).message;
  }
  const after = world.allReduce(tensor([1], [1])).item();
  return { message, after };
}

export function badArguments(world: Communicator) {
  const errors: string[] = [];
  const attempt = (fn: () => unknown) => {
    try {
      fn();
      errors.push('');
    } catch (err) {
      errors.push((err as Error).message);
    }
  };
  attempt(() => world.allToAll(tensor([1, 2, 3], [3]), 0, 0));
  attempt(() => world.send(tensor([1], [1]), world.size));
  attempt(() => world.broadcast(tensor([1], [1]), -1));
  attempt(() => world.split(-1));
  return errors;
}

/** Rank `dies` exits at once; the others wait in a barrier and report what they see. */
export function peerDies(world: Communicator, a: { dies: number }) {
  if (world.rank === a.dies) process.exit(3);
  const t0 = Date.now();
  try {
    world.barrier();
    return { message: '', ms: Date.now() - t0 };
  } catch (err) {
    return { message: (err as Error).message, ms: Date.now() - t0 };
  }
}

/** Rank `stalls` blocks (the parent kills it with SIGKILL); the others wait in a barrier. */
export function stall(world: Communicator, a: { stalls: number }) {
  if (world.rank === a.stalls) {
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 60_000);
    return { message: 'not killed' };
  }
  try {
    world.barrier();
    return { message: '' };
  } catch (err) {
    return { message: (err as Error).message };
  }
}
