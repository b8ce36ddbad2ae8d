// Tensor: a JS object over a native tensor handle, with views, data transfer and the scope
// mechanism that releases intermediates deterministically.
import { type DType, DTYPE_SIZES, dtypeCode, dtypeName } from './dtype.js';
import { native, type NativeTensor } from './native.js';

export type Device = 'cpu' | 'cuda' | `cuda:${number}`;
export type Shape = readonly number[];

// ---------------------------------------------------------------------------------------
// Scopes: every tensor created while a scope is open belongs to it and is disposed when the
// scope closes, except the tensors reachable from the scope's return value (those move to
// the enclosing scope) and tensors passed to keep().
const scopes: Set<Tensor>[] = [];

function track(t: Tensor): void {
  const top = scopes[scopes.length - 1];
  if (top) top.add(t);
}

function collect(value: unknown, out: Set<Tensor>, seen: Set<unknown>): void {
  if (value === null || typeof value !== 'object' || seen.has(value)) return;
  seen.add(value);
  if (value instanceof Tensor) {
    out.add(value);
    return;
  }
  if (Array.isArray(value)) {
    for (const v of value) collect(v, out, seen);
  } else if (value instanceof Map) {
    for (const v of value.values()) collect(v, out, seen);
  } else if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value as Record<string, unknown>)) collect(v, out, seen);
  }
}

/**
 * Runs fn inside a scope: intermediates created inside are freed when it returns (or throws);
 * tensors in the returned value (also inside arrays, Maps and plain objects) survive.
 */
export function scope<T>(fn: () => T): T {
  const mine = new Set<Tensor>();
  scopes.push(mine);
  let result: T;
  try {
    result = fn();
  } catch (err) {
    scopes.pop();
    for (const t of mine) t.dispose();
    throw err;
  }
  scopes.pop();
  if (result instanceof Promise) throw new Error('scope() takes a synchronous function');
  const keepers = new Set<Tensor>();
  collect(result, keepers, new Set());
  for (const t of mine) if (!keepers.has(t)) t.dispose();
  const parent = scopes[scopes.length - 1];
  if (parent) for (const t of keepers) if (mine.has(t)) parent.add(t);
  return result;
}

/** Detaches tensors from the open scopes: they live until disposed explicitly. */
export function keep<T>(value: T): T {
  const ts = new Set<Tensor>();
  collect(value, ts, new Set());
  for (const t of ts) for (const s of scopes) s.delete(t);
  return value;
}

/** Disposes every tensor reachable from value. */
export function disposeAll(value: unknown): void {
  const ts = new Set<Tensor>();
  collect(value, ts, new Set());
  for (const t of ts) t.dispose();
}

// ---------------------------------------------------------------------------------------

function checkShape(shape: Shape, what = 'shape'): number[] {
  if (!Array.isArray(shape)) throw new TypeError(`${what} must be an array of integers`);
  for (const d of shape)
    if (!Number.isSafeInteger(d) || d < 0) throw new TypeError(`${what} ${JSON.stringify(shape)} must hold integers >= 0`);
  return [...shape];
}

export class Tensor {
  /** @internal */ readonly handle: NativeTensor;
  private _shape: number[] | undefined;
  private _dtype: DType | undefined;

  /** @internal use the creation functions instead */
  constructor(handle: NativeTensor) {
    this.handle = handle;
    track(this);
  }

  get shape(): number[] {
    return (this._shape ??= this.handle.shape);
  }
  get dtype(): DType {
    return (this._dtype ??= dtypeName(this.handle.dtype));
  }
  get device(): Device {
    return this.handle.device as Device;
  }
  get ndim(): number {
    return this.shape.length;
  }
  get numel(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
  get strides(): number[] {
    return this.handle.strides;
  }
  get isContiguous(): boolean {
    return this.handle.isContiguous;
  }
  get disposed(): boolean {
    return this.handle.disposed;
  }
  size(dim: number): number {
    const d = dim < 0 ? dim + this.ndim : dim;
    const s = this.shape[d];
    if (s === undefined) throw new RangeError(`dimension ${dim} is out of range for shape [${this.shape}]`);
    return s;
  }
  toString(): string {
    return `Tensor(${this.dtype}[${this.shape.join(', ')}], ${this.device})`;
  }

  /** Frees this handle now (storage is freed when no view of it remains). */
  dispose(): void {
    this.handle.dispose();
  }

  // ---- views (no copy) ----
  /** A view with a new shape; copies when the strides do not allow a view. One dim may be -1. */
  reshape(...shape: number[] | [number[]]): Tensor {
    const s = (Array.isArray(shape[0]) ? shape[0] : shape) as number[];
    return new Tensor(native.reshape(this.handle, s));
  }
  /** Like reshape but throws instead of copying. */
  view(...shape: number[] | [number[]]): Tensor {
    const s = (Array.isArray(shape[0]) ? shape[0] : shape) as number[];
    return new Tensor(native.reshapeView(this.handle, s));
  }
  permute(...order: number[] | [number[]]): Tensor {
    const o = (Array.isArray(order[0]) ? order[0] : order) as number[];
    return new Tensor(native.permute(this.handle, o));
  }
  transpose(a: number, b: number): Tensor {
    const n = this.ndim;
    const order = Array.from({ length: n }, (_, i) => i);
    const da = a < 0 ? a + n : a;
    const db = b < 0 ? b + n : b;
    if (order[da] === undefined || order[db] === undefined)
      throw new RangeError(`transpose(${a}, ${b}) is out of range for shape [${this.shape}]`);
    [order[da], order[db]] = [db, da];
    return this.permute(order);
  }
  slice(dim: number, start: number, end?: number, step = 1): Tensor {
    return new Tensor(native.slice(this.handle, dim, start, end ?? this.size(dim), step));
  }
  /** Index i along dim, removing the dim. */
  select(dim: number, i: number): Tensor {
    const n = this.size(dim);
    const idx = i < 0 ? i + n : i;
    if (idx < 0 || idx >= n) throw new RangeError(`index ${i} is out of range for dim ${dim} of size ${n}`);
    const s = new Tensor(native.slice(this.handle, dim, idx, idx + 1, 1));
    return new Tensor(native.squeeze(s.handle, dim));
  }
  expand(...shape: number[] | [number[]]): Tensor {
    const s = (Array.isArray(shape[0]) ? shape[0] : shape) as number[];
    return new Tensor(native.expand(this.handle, s));
  }
  unsqueeze(dim: number): Tensor {
    return new Tensor(native.unsqueeze(this.handle, dim));
  }
  squeeze(dim: number): Tensor {
    return new Tensor(native.squeeze(this.handle, dim));
  }
  flatten(start = 0, end = -1): Tensor {
    const n = this.ndim;
    const s = start < 0 ? start + n : start;
    const e = end < 0 ? end + n : end;
    const shape = this.shape;
    const merged = shape.slice(s, e + 1).reduce((a, b) => a * b, 1);
    return this.reshape([...shape.slice(0, s), merged, ...shape.slice(e + 1)]);
  }
  /** Splits into `chunks` views of equal size (the last may be smaller) along dim. */
  chunk(chunks: number, dim = 0): Tensor[] {
    const n = this.size(dim);
    const per = Math.ceil(n / chunks);
    const out: Tensor[] = [];
    for (let at = 0; at < n; at += per) out.push(this.slice(dim, at, Math.min(n, at + per)));
    return out;
  }
  /** Splits into views of the given sizes along dim. */
  split(sizes: number[], dim = 0): Tensor[] {
    const total = sizes.reduce((a, b) => a + b, 0);
    if (total !== this.size(dim)) throw new RangeError(`split sizes [${sizes}] do not add up to ${this.size(dim)}`);
    const out: Tensor[] = [];
    let at = 0;
    for (const s of sizes) {
      out.push(this.slice(dim, at, at + s));
      at += s;
    }
    return out;
  }

  // ---- copies and conversions ----
  contiguous(): Tensor {
    return new Tensor(native.contiguous(this.handle));
  }
  /** A contiguous copy that owns its storage. */
  clone(): Tensor {
    const out = new Tensor(native.empty(this.shape, this.handle.dtype, this.device));
    native.copyInto(out.handle, this.handle);
    return out;
  }
  to(dtype: DType): Tensor {
    return new Tensor(native.cast(this.handle, dtypeCode(dtype)));
  }
  toDevice(device: Device): Tensor {
    return new Tensor(native.toDevice(this.handle, device));
  }
  /** Writes src (broadcast, converted) into this tensor (or view) in place. */
  copy_(src: Tensor): this {
    native.copyInto(this.handle, src.handle);
    return this;
  }

  // ---- data out ----
  /** Elements as a typed array of the tensor's dtype (bf16/f16/fp8 as raw Uint16Array/Uint8Array). */
  data(): Float32Array | Int32Array | BigInt64Array | Uint16Array | Uint8Array {
    const buf = native.toBytes(this.handle);
    switch (this.dtype) {
      case 'float32': return new Float32Array(buf);
      case 'int32': return new Int32Array(buf);
      case 'int64': return new BigInt64Array(buf);
      case 'float16':
      case 'bfloat16': return new Uint16Array(buf);
      default: return new Uint8Array(buf);
    }
  }
  /** Elements converted to float32. */
  toFloat32(): Float32Array {
    if (this.dtype === 'float32') return new Float32Array(native.toBytes(this.handle));
    const f = new Tensor(native.cast(this.handle, dtypeCode('float32')));
    try {
      return new Float32Array(native.toBytes(f.handle));
    } finally {
      f.dispose();
    }
  }
  /** Elements as plain numbers (int64 converted to number). */
  toArray(): number[] {
    if (this.dtype === 'int64') return Array.from(this.data() as BigInt64Array, (v) => Number(v));
    if (this.dtype === 'int32' || this.dtype === 'uint8') return Array.from(this.data() as Int32Array);
    return Array.from(this.toFloat32());
  }
  /** The single element of a one-element tensor. */
  item(): number {
    if (this.numel !== 1) throw new RangeError(`item() needs one element, tensor has shape [${this.shape}]`);
    return this.toArray()[0] as number;
  }
  /** The raw bytes (row-major, stored dtype). */
  bytes(): Uint8Array {
    return new Uint8Array(native.toBytes(this.handle));
  }
}

// ---- creation ----
export interface CreateOptions {
  dtype?: DType;
  device?: Device;
}

type NumericArray = ArrayLike<number> | Float32Array | Int32Array | BigInt64Array | Uint16Array | Uint8Array;

/** A tensor from JS numbers or a typed array (copied). Numbers are converted to dtype. */
export function tensor(data: NumericArray, shape?: Shape, opts: CreateOptions = {}): Tensor {
  const s = checkShape(shape ?? [data.length]);
  const dtype = opts.dtype ?? (data instanceof BigInt64Array ? 'int64' : data instanceof Int32Array ? 'int32' : 'float32');
  const n = s.reduce((a, b) => a * b, 1);
  if (data.length !== n) throw new RangeError(`${data.length} values do not fill shape [${s}] (${n} elements)`);
  const device = opts.device ?? 'cpu';
  let view: ArrayBufferView;
  switch (dtype) {
    case 'float32':
      view = data instanceof Float32Array ? data : Float32Array.from(data as ArrayLike<number>);
      break;
    case 'int32':
      view = data instanceof Int32Array ? data : Int32Array.from(data as ArrayLike<number>);
      break;
    case 'int64':
      view = data instanceof BigInt64Array ? data : BigInt64Array.from(Array.from(data as ArrayLike<number>, (v) => BigInt(Math.trunc(v))));
      break;
    case 'uint8':
      view = data instanceof Uint8Array ? data : Uint8Array.from(data as ArrayLike<number>);
      break;
    default: {
      // float16/bfloat16/fp8 from numbers: build float32 and cast natively
      if ((data instanceof Uint16Array && (dtype === 'bfloat16' || dtype === 'float16')) || (data instanceof Uint8Array && dtype === 'float8_e4m3')) {
        view = data;
        break;
      }
      const f = tensor(Float32Array.from(data as ArrayLike<number>), s, { device });
      const out = f.to(dtype);
      f.dispose();
      return out;
    }
  }
  return new Tensor(native.fromBytes(view, s, dtypeCode(dtype), device));
}

/** A tensor from raw bytes in the given dtype. */
export function fromBytes(bytes: ArrayBufferView, shape: Shape, dtype: DType, device: Device = 'cpu'): Tensor {
  return new Tensor(native.fromBytes(bytes, checkShape(shape), dtypeCode(dtype), device));
}

export function empty(shape: Shape, opts: CreateOptions = {}): Tensor {
  return new Tensor(native.empty(checkShape(shape), dtypeCode(opts.dtype ?? 'float32'), opts.device ?? 'cpu'));
}

export function full(shape: Shape, value: number, opts: CreateOptions = {}): Tensor {
  return new Tensor(native.full(checkShape(shape), dtypeCode(opts.dtype ?? 'float32'), opts.device ?? 'cpu', value));
}

export function zeros(shape: Shape, opts: CreateOptions = {}): Tensor {
  return full(shape, 0, opts);
}

export function ones(shape: Shape, opts: CreateOptions = {}): Tensor {
  return full(shape, 1, opts);
}

/**
 * torch.arange: ceil((end - start) / step) values, the same bits as torch on the CPU (float32 in
 * double arithmetic with torch's 8-wide vector blocks; see csrc/core/ops_range.cpp). Integer
 * dtypes need integer start, end and step, and values that fit the dtype.
 */
export function arange(start: number, end: number, step = 1, opts: CreateOptions = {}): Tensor {
  return new Tensor(native.arange(start, end, step, dtypeCode(opts.dtype ?? 'float32'), opts.device ?? 'cpu'));
}

/**
 * torch.linspace: the same bits as torch on the CPU (float32: step = (end - start) / (steps - 1) in
 * float32, the first half start + step * i and the second end - step * (steps - 1 - i), each one
 * rounding; see csrc/core/ops_range.cpp).
 */
export function linspace(start: number, end: number, steps: number, opts: CreateOptions = {}): Tensor {
  return new Tensor(native.linspace(start, end, steps, dtypeCode(opts.dtype ?? 'float32'), opts.device ?? 'cpu'));
}

export interface RandnOptions extends CreateOptions {
  seed: number;
  /** index of the first normal drawn from the stream (to draw a tensor in pieces) */
  offset?: number;
}

/** Standard normal noise from the Philox stream of `seed` (same values on CPU and CUDA). */
export function randn(shape: Shape, opts: RandnOptions): Tensor {
  return new Tensor(
    native.randn(checkShape(shape), dtypeCode(opts.dtype ?? 'float32'), opts.device ?? 'cpu', opts.seed, opts.offset ?? 0),
  );
}

/** Maps a file (copy-on-write, never written back) as a uint8 tensor of its bytes. */
export function mapFile(path: string): Tensor {
  return new Tensor(native.mapFile(path));
}

/** Reinterprets bytes [byteOffset, ...) of a uint8 tensor as dtype[shape] without copying. */
export function viewBytes(bytes: Tensor, byteOffset: number, dtype: DType, shape: Shape): Tensor {
  return new Tensor(native.viewBytes(bytes.handle, byteOffset, dtypeCode(dtype), checkShape(shape)));
}

export function elementSize(dtype: DType): number {
  return DTYPE_SIZES[dtype];
}

export function memoryStats() {
  return native.memoryStats();
}

export function resetPeakMemory(): void {
  native.resetPeakMemory();
}

/**
 * Exchanges what two tensor objects refer to: afterwards every holder of `a` sees b's data and
 * vice versa, with nothing copied or written. Both must have the same shape, dtype and device.
 * Lets a model's parameter be replaced in place (a LoRA-merged weight) and restored exactly.
 */
export function swapContents(a: Tensor, b: Tensor): void {
  if (a.disposed || b.disposed) throw new Error('swapContents: a tensor is disposed');
  const same = a.dtype === b.dtype && a.device === b.device && a.ndim === b.ndim && a.shape.every((d, i) => d === b.shape[i]);
  if (!same) throw new RangeError(`swapContents: ${a} and ${b} differ in shape, dtype or device`);
  const ha = a.handle;
  (a as unknown as { handle: NativeTensor }).handle = b.handle;
  (b as unknown as { handle: NativeTensor }).handle = ha;
}

export function storageInfo(t: Tensor) {
  return native.storageInfo(t.handle);
}

export function setNumThreads(n: number): void {
  native.setNumThreads(n);
}

export function numThreads(): number {
  return native.numThreads();
}
