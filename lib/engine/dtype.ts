// Element types shared with the native addon (codes match csrc/core/dtype.h).
export type DType = 'float32' | 'float16' | 'bfloat16' | 'int32' | 'int64' | 'float8_e4m3' | 'uint8';

export const DTYPE_CODES: Record<DType, number> = {
  float32: 0,
  float16: 1,
  bfloat16: 2,
  int32: 3,
  int64: 4,
  float8_e4m3: 5,
  uint8: 6,
};

const NAMES: DType[] = ['float32', 'float16', 'bfloat16', 'int32', 'int64', 'float8_e4m3', 'uint8'];

export const DTYPE_SIZES: Record<DType, number> = {
  float32: 4,
  float16: 2,
  bfloat16: 2,
  int32: 4,
  int64: 8,
  float8_e4m3: 1,
  uint8: 1,
};

export function dtypeName(code: number): DType {
  const n = NAMES[code];
  if (!n) throw new Error(`unknown dtype code ${code}`);
  return n;
}

export function dtypeCode(dtype: DType): number {
  const c = DTYPE_CODES[dtype];
  if (c === undefined) throw new TypeError(`unknown dtype '${String(dtype)}'`);
  return c;
}

export function isFloat(dtype: DType): boolean {
  return dtype === 'float32' || dtype === 'float16' || dtype === 'bfloat16' || dtype === 'float8_e4m3';
}

/** safetensors dtype strings (F32, BF16, ...) to engine dtypes; undefined if unsupported. */
export function dtypeFromSafetensors(s: string): DType | undefined {
  switch (s) {
    case 'F32': return 'float32';
    case 'F16': return 'float16';
    case 'BF16': return 'bfloat16';
    case 'I32': return 'int32';
    case 'I64': return 'int64';
    case 'F8_E4M3': return 'float8_e4m3';
    case 'U8': return 'uint8';
    default: return undefined;
  }
}

export function dtypeToSafetensors(d: DType): string {
  switch (d) {
    case 'float32': return 'F32';
    case 'float16': return 'F16';
    case 'bfloat16': return 'BF16';
    case 'int32': return 'I32';
    case 'int64': return 'I64';
    case 'float8_e4m3': return 'F8_E4M3';
    case 'uint8': return 'U8';
  }
}
