// Reference images of FLUX.2 image editing, prepared exactly as Flux2KleinPipeline does
// (Flux2ImageProcessor): each image must have sides of at least 64 pixels and an aspect ratio of at
// most 8:1; one larger than 1024x1024 pixels is resized (PIL LANCZOS) to that area keeping its aspect
// (sides truncated to integers); both sides are then floored to a multiple of 16 by a centred crop
// (no resampling), and the pixels map to [-1, 1] as 2 (v / 255) - 1 in float32.
import { resizeLanczos } from './pil-resample.js';
import { type Device, type Tensor, tensor } from '../engine/tensor.js';
import { RequestError, type RgbImage } from './types.js';

/** check_image_input's bounds and the area limit applied before cropping. */
export const FLUX2_REFERENCE_LIMITS = { minSide: 64, maxAspectRatio: 8, maxArea: 1024 * 1024 } as const;

/** Flux2ImageProcessor.check_image_input, as a RequestError naming the image. */
export function checkReferenceImage(img: RgbImage, param: string): void {
  const { width, height } = img;
  const { minSide, maxAspectRatio } = FLUX2_REFERENCE_LIMITS;
  if (width < minSide || height < minSide)
    throw new RequestError(`${param} is too small: ${width}x${height}; both sides must be at least ${minSide} pixels`, param);
  const ratio = Math.max(width / height, height / width);
  if (ratio > maxAspectRatio)
    throw new RequestError(`${param} has an aspect ratio too extreme for FLUX.2: ${width}x${height} (${ratio.toFixed(1)}:1, at most ${maxAspectRatio}:1)`, param);
}

/** _resize_to_target_area's size: over maxArea, both sides scaled by sqrt(maxArea / (W H)) and truncated. */
function areaLimitedSize(width: number, height: number, maxArea: number): { width: number; height: number } {
  if (width * height <= maxArea) return { width, height };
  const scale = Math.sqrt(maxArea / (width * height));
  return { width: Math.trunc(width * scale), height: Math.trunc(height * scale) };
}

/** Pixel size of a reference image once prepared: area-limited, then floored to multiples of `multipleOf`. */
export function referenceImageSize(
  width: number,
  height: number,
  multipleOf: number,
  maxArea: number = FLUX2_REFERENCE_LIMITS.maxArea,
): { width: number; height: number } {
  const sized = areaLimitedSize(width, height, maxArea);
  return { width: Math.floor(sized.width / multipleOf) * multipleOf, height: Math.floor(sized.height / multipleOf) * multipleOf };
}

/** Flux2ImageProcessor._resize_and_crop: the centred width x height window. */
function centerCrop(img: RgbImage, width: number, height: number): RgbImage {
  if (width === img.width && height === img.height) return img;
  const left = Math.floor((img.width - width) / 2);
  const top = Math.floor((img.height - height) / 2);
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; ++y) {
    const from = ((top + y) * img.width + left) * 3;
    data.set(img.data.subarray(from, from + width * 3), y * width * 3);
  }
  return { width, height, data };
}

/**
 * The pixels the pipeline encodes for one reference image: area-limited (maxArea, default 1024^2),
 * then centre-cropped to multiples of `multipleOf` (the VAE scale factor x 2).
 */
export function prepareReferenceImage(img: RgbImage, multipleOf: number, maxArea: number = FLUX2_REFERENCE_LIMITS.maxArea): RgbImage {
  const area = areaLimitedSize(img.width, img.height, maxArea);
  const sized = area.width !== img.width || area.height !== img.height ? resizeLanczos(img, area.width, area.height) : img;
  const { width, height } = referenceImageSize(img.width, img.height, multipleOf, maxArea);
  if (width === 0 || height === 0) throw new RequestError(`a reference image of ${img.width}x${img.height} has no ${multipleOf}x${multipleOf} area to encode`, 'image');
  return centerCrop(sized, width, height);
}

/** An 8-bit RGB image -> float32 [1, 3, H, W] in [-1, 1]: 2 (v / 255) - 1 with float32 roundings (pil_to_numpy, normalize). */
export function imageToTensor(img: RgbImage, device: Device = 'cpu'): Tensor {
  const { width, height, data } = img;
  const plane = width * height;
  const out = new Float32Array(3 * plane);
  const values = Float32Array.from({ length: 256 }, (_, v) => Math.fround(2 * Math.fround(v / 255) - 1));
  for (let i = 0; i < plane; ++i)
    for (let c = 0; c < 3; ++c) out[c * plane + i] = values[data[i * 3 + c] as number] as number;
  return tensor(out, [1, 3, height, width], { device });
}
