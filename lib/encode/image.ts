// Still-image encoding and decoding through sharp, and the output-quality rules shared with video.
import sharp, { type Metadata } from 'sharp';

import { RequestError, type RgbImage } from '../pipelines/types.js';

export type ImageFormat = 'png' | 'jpeg' | 'webp';
export const IMAGE_FORMATS: readonly ImageFormat[] = ['png', 'jpeg', 'webp'];

export type QualityPreset = 'maximum' | 'high' | 'medium' | 'low' | 'default';
export const QUALITY_PRESETS: Readonly<Record<Exclude<QualityPreset, 'default'>, number>> = {
  maximum: 100,
  high: 90,
  medium: 55,
  low: 35,
};
/** What `default` means: 75 for images, 50 for video (upstream values). */
export const DEFAULT_QUALITY = { image: 75, video: 50 } as const;

export const MIME_TYPES: Readonly<Record<ImageFormat, string>> = {
  png: 'image/png',
  jpeg: 'image/jpeg',
  webp: 'image/webp',
};

/**
 * Output quality on a 0..100 scale (higher is better). `outputCompression` wins over `outputQuality`;
 * a missing or `default` preset gives 75 for images and 50 for video.
 */
export function resolveQuality(
  opts: { outputCompression?: number | null; outputQuality?: string | null },
  kind: 'image' | 'video',
): number {
  const { outputCompression, outputQuality } = opts;
  if (outputCompression !== undefined && outputCompression !== null) {
    if (!Number.isInteger(outputCompression) || outputCompression < 0 || outputCompression > 100) {
      throw new RequestError(`output_compression must be an integer in 0..100, got ${outputCompression}`, 'output_compression');
    }
    return outputCompression;
  }
  if (outputQuality === undefined || outputQuality === null || outputQuality === 'default') return DEFAULT_QUALITY[kind];
  const preset = QUALITY_PRESETS[outputQuality as keyof typeof QUALITY_PRESETS];
  if (preset === undefined) {
    throw new RequestError(
      `output_quality must be one of maximum, high, medium, low, default; got '${outputQuality}'`,
      'output_quality',
    );
  }
  return preset;
}

function checkRgb(img: RgbImage): void {
  const { width, height, data } = img;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new Error(`image size must be positive integers, got ${width}x${height}`);
  }
  if (data.length !== width * height * 3) {
    throw new Error(`RGB image ${width}x${height} needs ${width * height * 3} bytes, got ${data.length}`);
  }
}

/**
 * Encodes an RGB image. `quality` (0..100) applies to JPEG and WebP; PNG is lossless and ignores it.
 */
export async function encodeImage(img: RgbImage, format: ImageFormat, quality: number): Promise<Buffer> {
  checkRgb(img);
  if (!(quality >= 0 && quality <= 100)) throw new Error(`quality must be in 0..100, got ${quality}`);
  const q = Math.round(quality);
  const raw = sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } });
  switch (format) {
    case 'png':
      return raw.png({ compressionLevel: 6 }).toBuffer();
    case 'jpeg':
      // sharp's JPEG and WebP scales are 1..100; 0 maps to the lowest.
      return raw.jpeg({ quality: Math.max(1, q), chromaSubsampling: q >= 90 ? '4:4:4' : '4:2:0' }).toBuffer();
    case 'webp':
      return raw.webp({ quality: Math.max(1, q) }).toBuffer();
    default:
      throw new Error(`unsupported image format '${String(format)}' (png, jpeg, webp)`);
  }
}

export interface DecodeImageOptions {
  /** largest accepted width x height (default 4096 x 4096) */
  maxPixels?: number;
  /** smallest accepted width and height (default 1) */
  minSide?: number;
  /** request field the bytes came from, named in errors */
  param?: string;
}

const DECODABLE = new Set(['png', 'jpeg', 'webp']);
export const DEFAULT_MAX_DECODE_PIXELS = 4096 * 4096;

/**
 * Decodes PNG, JPEG or WebP bytes to 8-bit RGB: EXIF orientation applied, alpha dropped (the colour
 * channels are kept as they are, like PIL's convert('RGB')), grey expanded to RGB, 16-bit reduced to 8.
 * Anything else, corrupt data, or a picture outside the size bounds throws a RequestError.
 */
export async function decodeImage(buf: Buffer | Uint8Array, opts: DecodeImageOptions = {}): Promise<RgbImage> {
  const maxPixels = opts.maxPixels ?? DEFAULT_MAX_DECODE_PIXELS;
  const minSide = opts.minSide ?? 1;
  const param = opts.param ?? 'image';
  if (buf.length === 0) throw new RequestError(`${param} is empty`, param);
  let meta: Metadata;
  try {
    meta = await sharp(buf, { limitInputPixels: false }).metadata();
  } catch (err) {
    throw new RequestError(`${param} is not a readable image (${(err as Error).message})`, param);
  }
  if (!meta.format || !DECODABLE.has(meta.format)) {
    throw new RequestError(`${param} has unsupported format '${meta.format ?? 'unknown'}' (png, jpeg, webp accepted)`, param);
  }
  const { width, height } = meta;
  if (!width || !height) throw new RequestError(`${param} has no dimensions`, param);
  if (width * height > maxPixels) {
    throw new RequestError(`${param} is too large: ${width}x${height} exceeds ${maxPixels} pixels`, param);
  }
  if (width < minSide || height < minSide) {
    throw new RequestError(`${param} is too small: ${width}x${height}, each side must be at least ${minSide}`, param);
  }
  try {
    const { data, info } = await sharp(buf, { limitInputPixels: maxPixels, failOn: 'error' })
      .autoOrient()
      .toColourspace('srgb')
      .removeAlpha()
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels`);
    return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
  } catch (err) {
    throw new RequestError(`${param} could not be decoded (${(err as Error).message})`, param);
  }
}
