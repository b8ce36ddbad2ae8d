// Loads the native addon (prebuilt or locally built) once per process/thread.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The opaque native tensor handle; only lib/engine touches it directly. */
export interface NativeTensor {
  readonly shape: number[];
  readonly strides: number[];
  readonly dtype: number;
  readonly device: string;
  readonly isContiguous: boolean;
  readonly disposed: boolean;
  dispose(): void;
}

export interface MemoryStats {
  liveTensors: number;
  storages: number;
  hostBytes: number;
  hostPeakBytes: number;
  mappedBytes: number;
  deviceBytes: number;
  devicePeakBytes: number;
}

/**
 * Functions exported by the addon. Op families declare their own functions by augmenting
 * this interface next to their TypeScript wrappers (declare module './native.js').
 */
export interface NativeAddon {
  NativeTensor: new () => NativeTensor;
  empty(shape: number[], dtype: number, device: string): NativeTensor;
  fromBytes(data: ArrayBufferView, shape: number[], dtype: number, device: string): NativeTensor;
  toBytes(t: NativeTensor): ArrayBuffer;
  mapFile(path: string): NativeTensor;
  viewBytes(bytes: NativeTensor, byteOffset: number, dtype: number, shape: number[]): NativeTensor;
  reshapeView(t: NativeTensor, shape: number[]): NativeTensor;
  permute(t: NativeTensor, order: number[]): NativeTensor;
  slice(t: NativeTensor, dim: number, start: number, end: number, step: number): NativeTensor;
  expand(t: NativeTensor, shape: number[]): NativeTensor;
  unsqueeze(t: NativeTensor, dim: number): NativeTensor;
  squeeze(t: NativeTensor, dim: number): NativeTensor;
  storageInfo(t: NativeTensor): { offset: number; nbytes: number; kind: 'owned' | 'mapped' | 'borrowed'; useCount: number };
  // bind_basic.cpp
  toDevice(t: NativeTensor, device: string): NativeTensor;
  contiguous(t: NativeTensor): NativeTensor;
  cast(t: NativeTensor, dtype: number): NativeTensor;
  reshape(t: NativeTensor, shape: number[]): NativeTensor;
  copyInto(dst: NativeTensor, src: NativeTensor): void;
  full(shape: number[], dtype: number, device: string, value: number): NativeTensor;
  arange(start: number, end: number, step: number, dtype: number, device: string): NativeTensor;
  linspace(start: number, end: number, steps: number, dtype: number, device: string): NativeTensor;
  randn(shape: number[], dtype: number, device: string, seed: number, offset: number): NativeTensor;
  unary(op: number, x: NativeTensor): NativeTensor;
  binary(op: number, a: NativeTensor, b: NativeTensor): NativeTensor;
  affine(x: NativeTensor, mul: number, add: number): NativeTensor;
  clamp(x: NativeTensor, lo: number, hi: number): NativeTensor;
  powScalar(x: NativeTensor, exponent: number): NativeTensor;
  reduce(op: number, x: NativeTensor, dim: number, keepdim: boolean): NativeTensor;
  softmax(x: NativeTensor, dim: number): NativeTensor;
  concat(xs: NativeTensor[], dim: number): NativeTensor;
  pad(x: NativeTensor, pads: number[], value: number): NativeTensor;
  /** the vector-math kernel of the CPU activations and softmax: 'avx512', 'avx2' or 'generic' */
  vecKernelName(): string;
  // bind_tensor.cpp
  memoryStats(): MemoryStats;
  resetPeakMemory(): void;
  numThreads(): number;
  setNumThreads(n: number): void;
}

const here = dirname(fileURLToPath(import.meta.url));
/** Package root: two levels above lib/engine (sources) and dist/engine (compiled). */
export const packageRoot = join(here, '..', '..');

function load(): NativeAddon {
  const require = createRequire(import.meta.url);
  const gypBuild = require('node-gyp-build') as (dir: string) => unknown;
  try {
    return gypBuild(packageRoot) as NativeAddon;
  } catch (err) {
    throw new Error(
      `node-diffusion: the native addon could not be loaded (${(err as Error).message}). ` +
        'Run `npm rebuild node-diffusion` (needs cmake and a C++17 compiler) or install a package with prebuilds.',
    );
  }
}

export const native: NativeAddon = load();
