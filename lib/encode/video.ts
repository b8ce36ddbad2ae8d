// MP4 (H.264, yuv420p, faststart) through ffmpeg fed raw RGB frames over a pipe, and the webp thumbnail.
import { spawn } from 'node:child_process';
import { rename, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';

import sharp from 'sharp';

import type { RgbImage } from '../pipelines/types.js';

/** The ffmpeg binary: $FFMPEG_PATH if set, else the one bundled by @ffmpeg-installer/ffmpeg. */
export function ffmpegPath(): string {
  const fromEnv = process.env.FFMPEG_PATH;
  if (fromEnv) return fromEnv;
  const require = createRequire(import.meta.url);
  return (require('@ffmpeg-installer/ffmpeg') as { path: string }).path;
}

/**
 * Maps output quality (0..100, higher is better) to an x264 CRF the way the upstream server does through
 * imageio-ffmpeg: crf = floor((1 - quality/100) * 51). The result is kept >= 1 because CRF 0 makes x264
 * switch to lossless High 4:4:4 Predictive, which browsers do not play.
 * quality 100 -> 1, 90 -> 5, 75 -> 12, 55 -> 22, 50 (video default) -> 25, 35 -> 33, 0 -> 51.
 */
export function qualityToCrf(quality: number): number {
  if (!(quality >= 0 && quality <= 100)) throw new Error(`quality must be in 0..100, got ${quality}`);
  return Math.max(1, Math.floor((1 - quality / 100) * 51 + 1e-9));
}

export interface Mp4Options {
  fps: number;
  /** 0..100, mapped to a CRF by qualityToCrf */
  quality: number;
}

/**
 * Encodes frames to `outPath` as H.264 (yuv420p, BT.709 limited range, tagged) with the moov atom first
 * (+faststart). Writes to a temporary file and renames it, so `outPath` is either complete or absent.
 */
export async function encodeMp4(frames: RgbImage[], opts: Mp4Options, outPath: string): Promise<void> {
  if (frames.length === 0) throw new Error('encodeMp4 needs at least one frame');
  const first = frames[0] as RgbImage;
  const { width, height } = first;
  if (width % 2 !== 0 || height % 2 !== 0) {
    throw new Error(`H.264 yuv420p needs even width and height, got ${width}x${height}`);
  }
  frames.forEach((f, i) => {
    if (f.width !== width || f.height !== height) {
      throw new Error(`frame ${i} is ${f.width}x${f.height}, frame 0 is ${width}x${height}`);
    }
    if (f.data.length !== width * height * 3) throw new Error(`frame ${i} has ${f.data.length} bytes, expected ${width * height * 3}`);
  });
  if (!(opts.fps > 0 && opts.fps <= 240)) throw new Error(`fps must be in (0, 240], got ${opts.fps}`);
  const crf = qualityToCrf(opts.quality);
  const tmpPath = `${outPath}.partial.mp4`;
  const args = [
    '-hide_banner', '-loglevel', 'error', '-nostdin', '-y',
    '-f', 'rawvideo', '-pix_fmt', 'rgb24', '-s', `${width}x${height}`, '-framerate', String(opts.fps), '-i', 'pipe:0',
    '-vf', 'scale=out_color_matrix=bt709:out_range=tv:flags=bicubic+accurate_rnd+full_chroma_int,format=yuv420p',
    '-c:v', 'libx264', '-preset', 'medium', '-crf', String(crf), '-pix_fmt', 'yuv420p',
    '-colorspace', 'bt709', '-color_primaries', 'bt709', '-color_trc', 'bt709', '-color_range', 'tv',
    '-movflags', '+faststart', '-f', 'mp4', tmpPath,
  ];
  const child = spawn(ffmpegPath(), args, { stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (s: string) => {
    stderr = (stderr + s).slice(-4000);
  });
  const exited = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve(code));
  });
  // Awaited below; a spawn failure (ENOENT) may settle it while frames are still being written.
  exited.catch(() => {});
  // A write after ffmpeg died raises EPIPE on stdin; the exit code carries the real reason.
  child.stdin.on('error', () => {});
  try {
    for (const f of frames) {
      if (child.stdin.destroyed) break;
      if (!child.stdin.write(f.data)) {
        await new Promise<void>((resolve) => {
          const done = () => {
            child.stdin.off('drain', done);
            child.stdin.off('close', done);
            resolve();
          };
          child.stdin.on('drain', done);
          child.stdin.on('close', done);
        });
      }
    }
    child.stdin.end();
    const code = await exited;
    if (code !== 0) throw new Error(`ffmpeg failed (exit ${code}): ${stderr.trim() || 'no output'}`);
    await rename(tmpPath, outPath);
  } catch (err) {
    child.kill('SIGKILL');
    await rm(tmpPath, { force: true });
    throw err;
  }
}

/** The video's thumbnail variant: one frame as WebP. */
export async function encodeThumbnail(frame: RgbImage): Promise<Buffer> {
  if (frame.data.length !== frame.width * frame.height * 3 || frame.width < 1 || frame.height < 1) {
    throw new Error(`thumbnail frame ${frame.width}x${frame.height} has ${frame.data.length} bytes`);
  }
  return sharp(frame.data, { raw: { width: frame.width, height: frame.height, channels: 3 } })
    .webp({ quality: 80 })
    .toBuffer();
}
