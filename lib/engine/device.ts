// Device discovery and selection: what CUDA offers on this machine (cudaInfo), the default device
// (CUDA when usable, else CPU; ND_DEVICE overrides) and the resolution of a requested device.
import { native } from './native.js';
import type { Device } from './tensor.js';

declare module './native.js' {
  interface NativeAddon {
    cudaInfo(): CudaInfo;
    synchronize(device: string): void;
  }
}

export interface CudaDevice {
  name: string;
  /** total memory in bytes */
  memory: number;
  /** compute capability as major * 10 + minor (80 = A100, 89 = L40/L4, 90 = H100) */
  sm: number;
}

export interface CudaInfo {
  /** the CUDA backend is loaded and ops may use device 'cuda' */
  available: boolean;
  /** why CUDA is not available ('' when it is) */
  reason: string;
  /** CUDA version the driver supports (e.g. 13000), 0 without a driver */
  driverVersion: number;
  devices: CudaDevice[];
  /** the CUDA library built from csrc/cuda (next to the addon) */
  library: { path: string; present: boolean; loaded: boolean; error: string; build: string };
  /** path of the cuBLASLt library found, null when none */
  cublasLt: string | null;
  /** path of the NCCL library found, null when none */
  nccl: string | null;
}

/** What CUDA offers here; probed once per process (never throws). */
export function cudaInfo(): CudaInfo {
  return native.cudaInfo();
}

export type DeviceRequest = 'auto' | 'cpu' | 'cuda' | `cuda:${number}`;

function parseDevice(value: string, source: string): DeviceRequest {
  if (value === 'auto' || value === 'cpu' || value === 'cuda' || /^cuda:\d{1,3}$/.test(value)) return value as DeviceRequest;
  throw new Error(`${source}: unknown device '${value}' (expected auto, cpu, cuda or cuda:N)`);
}

/**
 * Resolves a requested device: 'auto' picks CUDA when it is available and the CPU otherwise;
 * 'cuda'/'cuda:N' throw a clear error when CUDA is not usable or device N does not exist.
 */
export function resolveDevice(requested: string = 'auto'): Device {
  const req = parseDevice(requested, 'device');
  if (req === 'cpu') return 'cpu';
  const info = cudaInfo();
  if (req === 'auto') return info.available ? 'cuda' : 'cpu';
  if (!info.available) throw new Error(`device '${req}' was requested but CUDA is not available: ${info.reason}`);
  const index = req === 'cuda' ? 0 : Number(req.slice(5));
  if (index >= info.devices.length)
    throw new Error(`device '${req}' does not exist: this machine has ${info.devices.length} CUDA device(s)`);
  return req === 'cuda' ? 'cuda' : (req as Device);
}

/** The device used when none is requested: ND_DEVICE if set, else 'auto' resolution. */
export function defaultDevice(): Device {
  const env = process.env.ND_DEVICE;
  if (env !== undefined && env !== '') return resolveDevice(parseDevice(env, 'ND_DEVICE'));
  return resolveDevice('auto');
}

/** Waits until all queued work on the device has finished (a no-op for the CPU). */
export function synchronize(device: Device): void {
  native.synchronize(device);
}
