// safetensors files: a validated header, tensors as views into the memory-mapped file, and a
// writer (LoRA files, fixtures, saved latents) that produces the layout of the reference writer.
import { closeSync, fstatSync, fsyncSync, openSync, readSync, renameSync, rmSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { type DType, DTYPE_SIZES, dtypeFromSafetensors, dtypeToSafetensors } from '../engine/dtype.js';
import { keep, mapFile, type Tensor, viewBytes } from '../engine/tensor.js';

/** Largest header accepted (the reference reader's limit). */
export const MAX_HEADER_BYTES = 100_000_000;

/** dtypes the format defines that the engine cannot hold. */
const FORMAT_ONLY_DTYPES = new Set([
  'BOOL', 'I8', 'I16', 'U16', 'U32', 'U64', 'F64', 'F8_E5M2', 'F8_E8M0', 'F6_E2M3', 'F6_E3M2', 'F4', 'C64',
]);

export interface TensorInfo {
  dtype: DType;
  shape: number[];
  /** bytes of the tensor's data */
  byteLength: number;
  /** offset of the first byte from the start of the file */
  fileOffset: number;
}

export interface SafetensorsHeader {
  /** bytes before the data section: 8 + header length */
  dataStart: number;
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
}

/** A malformed or unreadable safetensors file; names the file and, where known, the tensor. */
export class SafetensorsError extends Error {
  readonly file: string;
  readonly tensor: string | undefined;
  constructor(file: string, message: string, tensor?: string) {
    super(`${file}: ${tensor !== undefined ? `tensor '${tensor}': ` : ''}${message}`);
    this.name = 'SafetensorsError';
    this.file = file;
    this.tensor = tensor;
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isIndex(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Parses and validates a header (the JSON text after the 8-byte length) of a file of fileSize bytes.
 * Every tensor must have a supported dtype, a shape of non-negative integers, data offsets inside the
 * data section that match shape x dtype size, and no two tensors may share bytes.
 */
export function parseSafetensorsHeader(file: string, headerBytes: Uint8Array, fileSize: number): SafetensorsHeader {
  const dataStart = 8 + headerBytes.length;
  const dataBytes = fileSize - dataStart;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
  } catch {
    throw new SafetensorsError(file, 'header is not valid UTF-8');
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new SafetensorsError(file, `header is not valid JSON (${(err as Error).message})`);
  }
  if (!isPlainObject(parsed)) throw new SafetensorsError(file, 'header must be a JSON object');

  const metadata: Record<string, string> = Object.create(null);
  const tensors = new Map<string, TensorInfo>();
  const ranges: Array<{ name: string; begin: number; end: number }> = [];
  for (const [name, entry] of Object.entries(parsed)) {
    if (name === '__metadata__') {
      if (!isPlainObject(entry)) throw new SafetensorsError(file, '__metadata__ must be an object of strings');
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== 'string') throw new SafetensorsError(file, `__metadata__ value of '${k}' must be a string, got ${JSON.stringify(v)}`);
        metadata[k] = v;
      }
      continue;
    }
    if (!isPlainObject(entry)) throw new SafetensorsError(file, 'entry must be an object with dtype, shape and data_offsets', name);
    const { dtype: st, shape, data_offsets: offsets } = entry;
    if (typeof st !== 'string') throw new SafetensorsError(file, `dtype must be a string, got ${JSON.stringify(st)}`, name);
    const dtype = dtypeFromSafetensors(st);
    if (!dtype) {
      const why = FORMAT_ONLY_DTYPES.has(st) ? 'unsupported dtype' : 'unknown dtype';
      throw new SafetensorsError(file, `${why} '${st}' (supported: F32, F16, BF16, I32, I64, F8_E4M3, U8)`, name);
    }
    if (!Array.isArray(shape) || !shape.every(isIndex))
      throw new SafetensorsError(file, `shape must be a list of integers >= 0, got ${JSON.stringify(shape)}`, name);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isIndex))
      throw new SafetensorsError(file, `data_offsets must be [begin, end] integers >= 0, got ${JSON.stringify(offsets)}`, name);
    const [begin, end] = offsets as [number, number];
    if (begin > end) throw new SafetensorsError(file, `data_offsets [${begin}, ${end}] end before they begin`, name);
    if (end > dataBytes)
      throw new SafetensorsError(
        file,
        `data_offsets [${begin}, ${end}] lie outside the data section of ${Math.max(0, dataBytes)} bytes (file truncated or header corrupt)`,
        name,
      );
    const numel = (shape as number[]).reduce((a, b) => a * b, 1);
    const byteLength = numel * DTYPE_SIZES[dtype];
    if (!Number.isSafeInteger(byteLength) || byteLength !== end - begin)
      throw new SafetensorsError(
        file,
        `shape [${shape.join(', ')}] x ${st} is ${byteLength} bytes but data_offsets [${begin}, ${end}] hold ${end - begin}`,
        name,
      );
    tensors.set(name, { dtype, shape: [...(shape as number[])], byteLength, fileOffset: dataStart + begin });
    if (end > begin) ranges.push({ name, begin, end });
  }
  ranges.sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < ranges.length; ++i) {
    const prev = ranges[i - 1]!;
    const cur = ranges[i]!;
    if (cur.begin < prev.end)
      throw new SafetensorsError(
        file,
        `data_offsets [${cur.begin}, ${cur.end}] overlap those of '${prev.name}' [${prev.begin}, ${prev.end}]`,
        cur.name,
      );
  }
  return { dataStart, tensors, metadata };
}

/** Reads and validates the header of a safetensors file without mapping it. */
export function readSafetensorsHeader(path: string): SafetensorsHeader & { fileSize: number } {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (err) {
    throw new SafetensorsError(path, `cannot open: ${(err as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new SafetensorsError(path, 'not a regular file');
    const fileSize = st.size;
    if (fileSize < 8) throw new SafetensorsError(path, `file is ${fileSize} bytes, too small for the 8-byte header length`);
    const lenBuf = Buffer.alloc(8);
    readFully(fd, lenBuf, 0, path);
    const headerLen = lenBuf.readBigUInt64LE(0);
    if (headerLen > BigInt(MAX_HEADER_BYTES))
      throw new SafetensorsError(path, `header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
    const n = Number(headerLen);
    if (n > fileSize - 8)
      throw new SafetensorsError(path, `header length ${n} exceeds the ${fileSize - 8} bytes after the length field (file truncated or not safetensors)`);
    const header = Buffer.alloc(n);
    readFully(fd, header, 8, path);
    return { ...parseSafetensorsHeader(path, header, fileSize), fileSize };
  } finally {
    closeSync(fd);
  }
}

function readFully(fd: number, buf: Buffer, position: number, path: string): void {
  let done = 0;
  while (done < buf.length) {
    const n = readSync(fd, buf, done, buf.length - done, position + done);
    if (n === 0) throw new SafetensorsError(path, `unexpected end of file at byte ${position + done}`);
    done += n;
  }
}

/** An open safetensors file: validated header plus a copy-on-write mapping of the whole file. */
export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Readonly<Record<string, string>>;
  private readonly entries: Map<string, TensorInfo>;
  private mapped: Tensor | null;

  private constructor(path: string, header: SafetensorsHeader, mapped: Tensor) {
    this.path = path;
    this.metadata = Object.freeze({ ...header.metadata });
    this.entries = header.tensors;
    this.mapped = mapped;
  }

  /** Validates the header, then maps the file. Throws SafetensorsError naming the file and tensor. */
  static open(path: string): SafetensorsFile {
    const header = readSafetensorsHeader(path);
    const mapped = keep(mapFile(path));
    if (mapped.numel !== header.fileSize) {
      mapped.dispose();
      throw new SafetensorsError(path, `file changed size while opening (${header.fileSize} -> ${mapped.numel} bytes)`);
    }
    return new SafetensorsFile(path, header, mapped);
  }

  /** Tensor names in header order. */
  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  info(name: string): TensorInfo {
    const e = this.entries.get(name);
    if (!e) throw new SafetensorsError(this.path, 'no such tensor in this file', name);
    return e;
  }

  /** The tensor as stored (dtype kept), a view into the mapping; the caller owns the handle. */
  tensor(name: string): Tensor {
    const e = this.info(name);
    if (!this.mapped) throw new SafetensorsError(this.path, 'file was disposed', name);
    return viewBytes(this.mapped, e.fileOffset, e.dtype, e.shape);
  }

  /** Releases this file's reference to the mapping (views handed out keep it alive until disposed). */
  dispose(): void {
    this.mapped?.dispose();
    this.mapped = null;
  }

  get disposed(): boolean {
    return this.mapped === null;
  }
}

// ---------------------------------------------------------------------------------------
// Writer

/** Order of the reference writer: larger element alignment first, then by name. */
const DTYPE_WRITE_RANK: Record<DType, number> = {
  int64: 0,
  float32: 1,
  int32: 2,
  bfloat16: 3,
  float16: 4,
  float8_e4m3: 5,
  uint8: 6,
};

function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Writes tensors (any device, any strides) to path as safetensors: compact JSON header with
 * __metadata__ (keys sorted) first, padded with spaces to a multiple of 8 bytes, tensors ordered by dtype
 * alignment then name. Written to a temporary file in the same folder and renamed into place, so
 * readers never see a partial file.
 */
export function writeSafetensors(path: string, tensors: Record<string, Tensor>, metadata?: Record<string, string>): void {
  const names = Object.keys(tensors);
  for (const name of names) {
    if (name === '__metadata__') throw new Error(`writeSafetensors ${path}: '__metadata__' is reserved and cannot name a tensor`);
    if (tensors[name]!.disposed) throw new Error(`writeSafetensors ${path}: tensor '${name}' is disposed`);
  }
  if (metadata)
    for (const [k, v] of Object.entries(metadata))
      if (typeof v !== 'string') throw new Error(`writeSafetensors ${path}: metadata value of '${k}' must be a string`);
  names.sort((a, b) => DTYPE_WRITE_RANK[tensors[a]!.dtype] - DTYPE_WRITE_RANK[tensors[b]!.dtype] || compareNames(a, b));

  const header: Record<string, unknown> = Object.create(null);
  if (metadata && Object.keys(metadata).length > 0)
    header.__metadata__ = Object.fromEntries(Object.entries(metadata).sort(([a], [b]) => compareNames(a, b)));
  let offset = 0;
  for (const name of names) {
    const t = tensors[name]!;
    const n = t.numel * DTYPE_SIZES[t.dtype];
    header[name] = { dtype: dtypeToSafetensors(t.dtype), shape: t.shape, data_offsets: [offset, offset + n] };
    offset += n;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (json.length % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));

  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fd = openSync(tmp, 'w');
  let open = true;
  try {
    writeAll(fd, len);
    writeAll(fd, json);
    for (const name of names) writeAll(fd, tensors[name]!.bytes());
    fsyncSync(fd);
    closeSync(fd);
    open = false;
    renameSync(tmp, path);
  } catch (err) {
    if (open) closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
}

function writeAll(fd: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.length) done += writeSync(fd, data, done, data.length - done);
}
