// What each rank of a collectives scenario (collectives.scenarios.ts) must get, computed in plain JS.
import type { DType } from '../../lib/engine/dtype.js';
import { value } from './collectives.scenarios.js';

export type Out = { shape: number[]; values: number[] };

const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

export const valuesOf = (dtype: DType, rank: number, shape: number[], forSum = false): number[] =>
  Array.from({ length: numel(shape) }, (_, i) => value(dtype, rank, i, forSum));

/** Blocks of equal shape concatenated along dim (row-major arrays). */
export function concatAlong(blocks: number[][], shape: number[], dim: number): Out {
  const outer = numel(shape.slice(0, dim));
  const mid = shape[dim] as number;
  const inner = numel(shape.slice(dim + 1));
  const values: number[] = [];
  for (let o = 0; o < outer; ++o)
    for (const b of blocks) for (let m = 0; m < mid; ++m) for (let i = 0; i < inner; ++i) values.push(b[(o * mid + m) * inner + i] as number);
  const out = shape.slice();
  out[dim] = mid * blocks.length;
  return { shape: out, values };
}

/** Block j of n along dim. */
export function blockOf(values: number[], shape: number[], dim: number, n: number, j: number): Out {
  const outer = numel(shape.slice(0, dim));
  const len = (shape[dim] as number) / n;
  const inner = numel(shape.slice(dim + 1));
  const out: number[] = [];
  for (let o = 0; o < outer; ++o)
    for (let m = j * len; m < (j + 1) * len; ++m) for (let i = 0; i < inner; ++i) out.push(values[(o * (shape[dim] as number) + m) * inner + i] as number);
  const s = shape.slice();
  s[dim] = len;
  return { shape: s, values: out };
}

/** Element sums over the ranks (integers wrap around as the dtype does). */
export function sumOf(dtype: DType, ranks: number, shape: number[]): number[] {
  return valuesOf(dtype, 0, shape).map((_, i) => {
    let acc = 0;
    for (let r = 0; r < ranks; ++r) acc += value(dtype, r, i, true);
    if (dtype === 'uint8') return acc % 256;
    if (dtype === 'int32') return acc | 0;
    return acc;
  });
}

/** The output rank `rank` of `size` must get from scenario `name` with `args`. */
export function expectedOut(name: string, args: Record<string, unknown>, size: number, rank: number): Out {
  const dtype = args.dtype as DType;
  const shape = args.shape as number[];
  switch (name) {
    case 'allGather':
      return concatAlong(Array.from({ length: size }, (_, r) => valuesOf(dtype, r, shape)), shape, args.dim as number);
    case 'allToAll': {
      const blocks = Array.from({ length: size }, (_, s) => blockOf(valuesOf(dtype, s, shape), shape, args.scatter as number, size, rank));
      return concatAlong(blocks.map((b) => b.values), (blocks[0] as Out).shape, args.gather as number);
    }
    case 'allReduce':
      return { shape, values: sumOf(dtype, size, shape) };
    case 'broadcast':
      return { shape, values: valuesOf(dtype, args.root as number, shape) };
    case 'ringShift':
      return { shape, values: valuesOf(dtype, (rank - 1 + size) % size, shape) };
  }
  throw new Error(`no expectation for scenario ${name}`);
}
