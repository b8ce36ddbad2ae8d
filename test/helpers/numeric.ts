// Shared numeric helpers for tests: seeded random inputs, naive float64 references, errors.

/** Deterministic pseudo-random generator (mulberry32) for test inputs. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n values uniform in [lo, hi). */
export function randomArray(n: number, seed: number, lo = -1, hi = 1): Float64Array {
  const r = rng(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; ++i) out[i] = lo + (hi - lo) * r();
  return out;
}

/** ||a - b||_2 / ||b||_2 in float64 (b is the reference). */
export function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; ++i) {
    const d = (a[i] as number) - (b[i] as number);
    num += d * d;
    den += (b[i] as number) * (b[i] as number);
  }
  if (den === 0) return Math.sqrt(num);
  return Math.sqrt(num / den);
}

/** Row-major strides of a shape. */
export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; --i) {
    s[i] = acc;
    acc *= shape[i] as number;
  }
  return s;
}

/** Rounds float64 values through bfloat16 (round to nearest even), as stored in bf16. */
export function roundBf16(x: Float64Array): Float64Array {
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; ++i) {
    f[0] = x[i] as number;
    const v = u[0] as number;
    u[0] = ((v + 0x7fff + ((v >>> 16) & 1)) >>> 16) << 16;
    out[i] = f[0] as number;
  }
  return out;
}
