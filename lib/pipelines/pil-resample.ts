// Pillow's Image.resize(size, Image.LANCZOS) for 8-bit RGB images, bit for bit (libImaging
// Resample.c): a separable convolution, horizontal pass then vertical pass, each with a Lanczos-3
// kernel widened by the scale factor when downscaling, weights normalised per output pixel and
// rounded to 22-bit fixed point, sums rounded and clipped to 0..255 after each pass. Pipelines that
// resize their input images with PIL (FLUX.2's reference images) use this to see the same pixels.
import type { RgbImage } from './types.js';

/** Fixed-point precision of the coefficients (PRECISION_BITS = 32 - 8 - 2). */
const PRECISION_BITS = 22;
const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);
const LANCZOS_SUPPORT = 3;

function sinc(x: number): number {
  if (x === 0) return 1;
  const px = x * Math.PI;
  return Math.sin(px) / px;
}

function lanczos(x: number): number {
  return x >= -LANCZOS_SUPPORT && x < LANCZOS_SUPPORT ? sinc(x) * sinc(x / LANCZOS_SUPPORT) : 0;
}

interface Coefficients {
  /** per output pixel: the first input index and the number of taps */
  start: Int32Array;
  count: Int32Array;
  /** kernel size (taps per output pixel, zero-filled past count) */
  size: number;
  /** fixed-point weights [out * size] */
  weights: Int32Array;
}

/** precompute_coeffs + normalize_coeffs_8bpc for a box [0, inSize) mapped onto outSize pixels. */
function coefficients(inSize: number, outSize: number): Coefficients {
  const scale = inSize / outSize;
  const filterScale = Math.max(1, scale);
  const support = LANCZOS_SUPPORT * filterScale;
  const size = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Int32Array(outSize * size);
  const k = new Float64Array(size);
  const inv = 1 / filterScale;
  for (let xx = 0; xx < outSize; ++xx) {
    const center = (xx + 0.5) * scale;
    // C casts truncate toward zero
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    let total = 0;
    for (let x = 0; x < xmax; ++x) {
      const w = lanczos((x + xmin - center + 0.5) * inv);
      k[x] = w;
      total += w;
    }
    for (let x = 0; x < xmax; ++x) {
      const w = total !== 0 ? (k[x] as number) / total : (k[x] as number);
      weights[xx * size + x] = Math.trunc(w < 0 ? -0.5 + w * ONE : 0.5 + w * ONE);
    }
    start[xx] = xmin;
    count[xx] = xmax;
  }
  return { start, count, size, weights };
}

/** clip8: the fixed-point sum shifted down (arithmetic shift) and clamped to 0..255. */
function clip8(sum: number): number {
  const v = Math.floor(sum / ONE);
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** ImagingResampleHorizontal_8bpc: every row resampled to outWidth pixels. */
function resampleHorizontal(src: Uint8Array, width: number, height: number, outWidth: number): Uint8Array {
  const { start, count, size, weights } = coefficients(width, outWidth);
  const out = new Uint8Array(outWidth * height * 3);
  for (let y = 0; y < height; ++y) {
    const row = y * width * 3;
    const outRow = y * outWidth * 3;
    for (let xx = 0; xx < outWidth; ++xx) {
      let r = HALF;
      let g = HALF;
      let b = HALF;
      const k = xx * size;
      const x0 = row + (start[xx] as number) * 3;
      for (let x = 0; x < (count[xx] as number); ++x) {
        const w = weights[k + x] as number;
        const at = x0 + x * 3;
        r += (src[at] as number) * w;
        g += (src[at + 1] as number) * w;
        b += (src[at + 2] as number) * w;
      }
      const o = outRow + xx * 3;
      out[o] = clip8(r);
      out[o + 1] = clip8(g);
      out[o + 2] = clip8(b);
    }
  }
  return out;
}

/** ImagingResampleVertical_8bpc: every column resampled to outHeight pixels. */
function resampleVertical(src: Uint8Array, width: number, height: number, outHeight: number): Uint8Array {
  const { start, count, size, weights } = coefficients(height, outHeight);
  const line = width * 3;
  const out = new Uint8Array(line * outHeight);
  const acc = new Float64Array(line);
  for (let yy = 0; yy < outHeight; ++yy) {
    acc.fill(HALF);
    const k = yy * size;
    for (let y = 0; y < (count[yy] as number); ++y) {
      const w = weights[k + y] as number;
      const row = ((start[yy] as number) + y) * line;
      for (let i = 0; i < line; ++i) acc[i] = (acc[i] as number) + (src[row + i] as number) * w;
    }
    const o = yy * line;
    for (let i = 0; i < line; ++i) out[o + i] = clip8(acc[i] as number);
  }
  return out;
}

/**
 * PIL Image.resize((width, height), Image.LANCZOS) of an RGB image (no reducing_gap, whole-image box).
 * Each dimension is resampled only when its size changes, as Pillow does.
 */
export function resizeLanczos(img: RgbImage, width: number, height: number): RgbImage {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1)
    throw new RangeError(`resize target must be positive integers, got ${width}x${height}`);
  let data = img.data;
  if (width !== img.width) data = resampleHorizontal(data, img.width, img.height, width);
  if (height !== img.height) data = resampleVertical(data, width, img.height, height);
  return { width, height, data: data === img.data ? data.slice() : data };
}
