// Test helpers that read encoded media back: MP4 box order, stream parameters and decoded frames via ffmpeg.
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';

import { ffmpegPath } from '../../lib/encode/video.js';

/** Top-level MP4 box types in file order. */
export function mp4TopLevelBoxes(buf: Buffer): string[] {
  const boxes: string[] = [];
  let off = 0;
  while (off + 8 <= buf.length) {
    let size = buf.readUInt32BE(off);
    const type = buf.toString('latin1', off + 4, off + 8);
    if (size === 1) size = Number(buf.readBigUInt64BE(off + 8));
    else if (size === 0) size = buf.length - off;
    if (size < 8) throw new Error(`bad box size ${size} at ${off}`);
    boxes.push(type);
    off += size;
  }
  return boxes;
}

export interface DecodedVideo {
  codec: string;
  profile: string;
  pixFmt: string;
  colorDesc: string;
  width: number;
  height: number;
  fps: number;
  /** decoded RGB frames */
  frames: Buffer[];
  boxes: string[];
}

function run(args: string[]): Promise<{ stdout: Buffer; stderr: string; code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(ffmpegPath(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ stdout: Buffer.concat(out), stderr, code }));
  });
}

/** Decodes an MP4 (file path or bytes) fully to RGB frames and reports its stream parameters. */
export async function decodeMp4(input: string | Buffer): Promise<DecodedVideo> {
  const bytes = typeof input === 'string' ? await readFile(input) : input;
  const { mkdtemp, writeFile, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const dir = await mkdtemp(join(tmpdir(), 'nd-mp4-'));
  try {
    const file = join(dir, 'v.mp4');
    await writeFile(file, bytes);
    const { stdout, stderr, code } = await run(['-hide_banner', '-nostdin', '-i', file, '-f', 'rawvideo', '-pix_fmt', 'rgb24', 'pipe:1']);
    if (code !== 0) throw new Error(`ffmpeg could not decode: ${stderr}`);
    const m = /Stream #0:0[^\n]*Video: (\w+)(?: \(([^)]*)\))?[^,]*, (\w+)(\([^)]*\))?, (\d+)x(\d+)[^\n]*?, ([\d.]+) fps/.exec(stderr);
    if (!m) throw new Error(`no video stream line in ffmpeg output:\n${stderr}`);
    const width = Number(m[5]);
    const height = Number(m[6]);
    const frameBytes = width * height * 3;
    if (stdout.length % frameBytes !== 0) throw new Error(`decoded ${stdout.length} bytes, not a multiple of ${frameBytes}`);
    const frames: Buffer[] = [];
    for (let o = 0; o < stdout.length; o += frameBytes) frames.push(stdout.subarray(o, o + frameBytes));
    return {
      codec: m[1] as string,
      profile: m[2] ?? '',
      pixFmt: m[3] as string,
      colorDesc: m[4] ?? '',
      width,
      height,
      fps: Number(m[7]),
      frames,
      boxes: mp4TopLevelBoxes(bytes),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Mean absolute difference of two equally sized byte arrays. */
export function meanAbsDiff(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let s = 0;
  for (let i = 0; i < a.length; ++i) s += Math.abs((a[i] as number) - (b[i] as number));
  return s / a.length;
}

/** A smooth deterministic RGB test picture (gradients plus a frame-dependent shift). */
export function gradientImage(width: number, height: number, shift = 0): { width: number; height: number; data: Uint8Array } {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; ++y) {
    for (let x = 0; x < width; ++x) {
      const o = (y * width + x) * 3;
      data[o] = Math.round((255 * ((x + shift) % width)) / Math.max(1, width - 1));
      data[o + 1] = Math.round((255 * y) / Math.max(1, height - 1));
      data[o + 2] = 128 + Math.round(60 * Math.sin((x + y + shift) / 5));
    }
  }
  return { width, height, data };
}
