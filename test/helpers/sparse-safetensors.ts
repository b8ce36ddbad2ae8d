// Writes safetensors files of real-size checkpoints without holding them in memory: each tensor is
// ones, seeded normal values (generated and written in chunks), or a hole of the sparse file (reads
// as zeros, takes no disk space). Used to build model folders with the real tensor names, shapes
// and dtypes of multi-GB checkpoints in seconds.
import { closeSync, ftruncateSync, openSync, writeSync } from 'node:fs';

import * as E from '../../lib/engine/index.js';

export type SparseFill =
  | { kind: 'zeros' }
  | { kind: 'ones' }
  /** normal(0, std) from the Philox stream of seed; only the first `rows` rows when given (the rest zeros) */
  | { kind: 'randn'; std: number; seed: number; rows?: number };

export interface SparseTensor {
  name: string;
  /** int64 tensors (e.g. a batch norm's step counter) can only be zeros */
  dtype: 'float32' | 'bfloat16' | 'int64';
  shape: number[];
  fill: SparseFill;
}

const SAFETENSORS_DTYPE = { float32: 'F32', bfloat16: 'BF16', int64: 'I64' } as const;
const CHUNK_ELEMENTS = 8 << 20;

/** Writes the file; returns the bytes of data actually written (the rest are holes). */
export function writeSparseSafetensors(path: string, tensors: SparseTensor[]): number {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let offset = 0;
  const placed = tensors.map((t) => {
    if (t.dtype === 'int64' && t.fill.kind !== 'zeros') throw new Error(`${t.name}: int64 tensors can only be zeros`);
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const bytes = numel * E.elementSize(t.dtype);
    header[t.name] = { dtype: SAFETENSORS_DTYPE[t.dtype], shape: t.shape, data_offsets: [offset, offset + bytes] };
    const at = offset;
    offset += bytes;
    return { ...t, numel, at };
  });
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  const dataStart = 8 + json.length;
  const fd = openSync(path, 'w');
  let written = 0;
  try {
    writeSync(fd, len, 0, 8, 0);
    writeSync(fd, json, 0, json.length, 8);
    ftruncateSync(fd, dataStart + offset);
    for (const t of placed) {
      if (t.fill.kind === 'zeros') continue;
      const size = E.elementSize(t.dtype);
      const fill = t.fill;
      const count = fill.kind === 'randn' && fill.rows !== undefined ? fill.rows * (t.numel / t.shape[0]!) : t.numel;
      for (let from = 0; from < count; from += CHUNK_ELEMENTS) {
        const n = Math.min(CHUNK_ELEMENTS, count - from);
        const bytes = E.scope(() => {
          const chunk = fill.kind === 'ones' ? E.full([n], 1) : E.mul(E.randn([n], { seed: fill.seed, offset: from }), fill.std);
          return chunk.to(t.dtype).bytes();
        });
        writeSync(fd, bytes, 0, bytes.length, dataStart + t.at + from * size);
        written += bytes.length;
      }
    }
  } finally {
    closeSync(fd);
  }
  return written;
}
