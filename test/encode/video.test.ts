// MP4 encoding through the bundled ffmpeg: decoded back to frames, stream parameters, box order, CRF mapping.
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import sharp from 'sharp';
import t from 'tap';

import { encodeMp4, encodeThumbnail, ffmpegPath, qualityToCrf } from '../../lib/encode/video.js';
import { decodeMp4, gradientImage, meanAbsDiff } from '../helpers/media.js';

const dir = await mkdtemp(join(tmpdir(), 'nd-video-test-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));

t.test('qualityToCrf follows the upstream mapping, floored at 1', async (t) => {
  t.equal(qualityToCrf(100), 1);
  t.equal(qualityToCrf(90), 5);
  t.equal(qualityToCrf(75), 12);
  t.equal(qualityToCrf(55), 22);
  t.equal(qualityToCrf(50), 25);
  t.equal(qualityToCrf(35), 33);
  t.equal(qualityToCrf(0), 51);
  t.throws(() => qualityToCrf(-1), /quality must be in 0..100/);
  t.throws(() => qualityToCrf(Number.NaN), /quality must be in 0..100/);
});

t.test('ffmpegPath honours FFMPEG_PATH', async (t) => {
  const bundled = ffmpegPath();
  t.ok((await stat(bundled)).isFile(), 'bundled binary exists');
  process.env.FFMPEG_PATH = '/opt/custom/ffmpeg';
  t.equal(ffmpegPath(), '/opt/custom/ffmpeg');
  delete process.env.FFMPEG_PATH;
  t.equal(ffmpegPath(), bundled);
});

t.test('encodeMp4 writes H.264 yuv420p faststart with every frame', async (t) => {
  const frames = Array.from({ length: 9 }, (_, i) => gradientImage(64, 48, i * 3));
  const out = join(dir, 'a.mp4');
  await encodeMp4(frames, { fps: 16, quality: 90 }, out);
  const v = await decodeMp4(out);
  t.equal(v.codec, 'h264');
  t.equal(v.profile, 'High', 'High profile (browser-playable)');
  t.equal(v.pixFmt, 'yuv420p');
  t.match(v.colorDesc, /bt709/, 'tagged BT.709');
  t.equal(v.width, 64);
  t.equal(v.height, 48);
  t.equal(v.fps, 16);
  t.equal(v.frames.length, 9, 'frame count');
  t.ok(v.boxes.indexOf('moov') >= 0 && v.boxes.indexOf('moov') < v.boxes.indexOf('mdat'), `moov before mdat: ${v.boxes}`);
  for (let i = 0; i < 9; ++i) {
    const err = meanAbsDiff(v.frames[i] as Buffer, (frames[i] as { data: Uint8Array }).data);
    t.ok(err < 6, `frame ${i} mean abs error ${err.toFixed(2)} < 6 (4:2:0 chroma on a sharp edge)`);
  }
  t.same(await readdir(dir), ['a.mp4'], 'no temporary file left');
});

t.test('flat colours survive the BT.709 YUV round trip', async (t) => {
  const colours = [
    [200, 50, 100],
    [20, 180, 240],
    [128, 128, 128],
    [250, 240, 10],
  ];
  const frames = colours.map(([r, g, b]) => {
    const data = new Uint8Array(32 * 32 * 3);
    for (let i = 0; i < 32 * 32; ++i) data.set([r as number, g as number, b as number], i * 3);
    return { width: 32, height: 32, data };
  });
  await encodeMp4(frames, { fps: 4, quality: 100 }, join(dir, 'flat.mp4'));
  const v = await decodeMp4(join(dir, 'flat.mp4'));
  t.equal(v.frames.length, 4);
  v.frames.forEach((f, i) => {
    const err = meanAbsDiff(f, (frames[i] as { data: Uint8Array }).data);
    t.ok(err < 2, `colour ${colours[i]} error ${err.toFixed(2)} < 2`);
  });
});

t.test('quality changes size and fidelity', async (t) => {
  const frames = Array.from({ length: 5 }, (_, i) => gradientImage(96, 64, i * 7));
  await encodeMp4(frames, { fps: 8, quality: 10 }, join(dir, 'low.mp4'));
  await encodeMp4(frames, { fps: 8, quality: 100 }, join(dir, 'high.mp4'));
  const low = await stat(join(dir, 'low.mp4'));
  const high = await stat(join(dir, 'high.mp4'));
  t.ok(high.size > low.size, `quality 100 (${high.size} B) larger than 10 (${low.size} B)`);
  const vl = await decodeMp4(join(dir, 'low.mp4'));
  const vh = await decodeMp4(join(dir, 'high.mp4'));
  const el = meanAbsDiff(vl.frames[2] as Buffer, (frames[2] as { data: Uint8Array }).data);
  const eh = meanAbsDiff(vh.frames[2] as Buffer, (frames[2] as { data: Uint8Array }).data);
  t.ok(eh < el, `error at quality 100 (${eh.toFixed(2)}) below quality 10 (${el.toFixed(2)})`);
  t.equal(vh.profile, 'High', 'quality 100 stays in the High profile (CRF >= 1)');
});

t.test('a single frame is a valid video', async (t) => {
  await encodeMp4([gradientImage(16, 16)], { fps: 16, quality: 50 }, join(dir, 'one.mp4'));
  const v = await decodeMp4(join(dir, 'one.mp4'));
  t.equal(v.frames.length, 1);
  t.equal(v.width, 16);
});

t.test('encodeMp4 rejects bad input and leaves no file', async (t) => {
  const out = join(dir, 'bad.mp4');
  await t.rejects(encodeMp4([], { fps: 16, quality: 50 }, out), /at least one frame/);
  await t.rejects(encodeMp4([gradientImage(15, 16)], { fps: 16, quality: 50 }, out), /even width and height, got 15x16/);
  await t.rejects(encodeMp4([gradientImage(16, 16), gradientImage(32, 16)], { fps: 16, quality: 50 }, out), /frame 1 is 32x16/);
  await t.rejects(encodeMp4([{ width: 16, height: 16, data: new Uint8Array(10) }], { fps: 16, quality: 50 }, out), /10 bytes/);
  await t.rejects(encodeMp4([gradientImage(16, 16)], { fps: 0, quality: 50 }, out), /fps must be/);
  await t.rejects(encodeMp4([gradientImage(16, 16)], { fps: 16, quality: 500 }, out), /quality must be/);
  await t.rejects(
    encodeMp4([gradientImage(16, 16)], { fps: 16, quality: 50 }, join(dir, 'missing-dir', 'x.mp4')),
    /ffmpeg failed \(exit \d+\)/,
  );
  const old = process.env.FFMPEG_PATH;
  process.env.FFMPEG_PATH = join(dir, 'no-such-ffmpeg');
  await t.rejects(encodeMp4([gradientImage(16, 16)], { fps: 16, quality: 50 }, out), /ENOENT/);
  if (old === undefined) delete process.env.FFMPEG_PATH;
  else process.env.FFMPEG_PATH = old;
  const left = (await readdir(dir)).filter((f) => f.startsWith('bad'));
  t.same(left, [], 'nothing written');
});

t.test('encodeThumbnail gives a WebP of the frame', async (t) => {
  const f = gradientImage(40, 24);
  const webp = await encodeThumbnail(f);
  const meta = await sharp(webp).metadata();
  t.equal(meta.format, 'webp');
  t.equal(meta.width, 40);
  t.equal(meta.height, 24);
  const px = new Uint8Array(await sharp(webp).removeAlpha().raw().toBuffer());
  t.ok(meanAbsDiff(px, f.data) < 6, 'looks like the frame');
  await t.rejects(encodeThumbnail({ width: 2, height: 2, data: new Uint8Array(3) }), /has 3 bytes/);
});
