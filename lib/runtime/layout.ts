// Where the runtime keeps its files under --output-path. Every file name is built from a validated id.
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';

import type { ImageFormat } from '../encode/image.js';
import { assertId } from './ids.js';

export const IMAGE_EXTENSIONS: Readonly<Record<ImageFormat, string>> = { png: 'png', jpeg: 'jpg', webp: 'webp' };

export class OutputLayout {
  readonly root: string;
  readonly videos: string;
  readonly images: string;
  readonly inputs: string;
  readonly database: string;

  constructor(outputPath: string) {
    this.root = resolve(outputPath);
    this.videos = join(this.root, 'videos');
    this.images = join(this.root, 'images');
    this.inputs = join(this.root, 'inputs');
    this.database = join(this.root, 'node-diffusion.sqlite');
  }

  createDirectories(): void {
    for (const d of [this.root, this.videos, this.images, this.inputs]) mkdirSync(d, { recursive: true });
  }

  videoFile(id: string): string {
    return join(this.videos, `${assertId(id, 'video')}.mp4`);
  }

  thumbnailFile(id: string): string {
    return join(this.videos, `${assertId(id, 'video')}.thumbnail.webp`);
  }

  imageFile(id: string, format: ImageFormat): string {
    const ext = IMAGE_EXTENSIONS[format];
    if (!ext) throw new Error(`unknown image format ${JSON.stringify(format)}`);
    return join(this.images, `${assertId(id, 'img')}.${ext}`);
  }

  /** Reference image `index` of job `jobId`, stored as PNG. */
  inputFile(jobId: string, index: number): string {
    if (!Number.isInteger(index) || index < 0 || index > 99) throw new Error(`bad input index ${index}`);
    return join(this.inputs, `${assertId(jobId)}_${index}.png`);
  }
}
