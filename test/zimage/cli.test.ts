// `node-diffusion generate` on demo:zimage: decodable PNG/JPEG/WebP images of the requested size per
// --output-format, quality flags reaching the encoder, and usage errors.
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import t from 'tap';

import { decodeImage } from '../../lib/encode/image.js';
import { runCli } from '../helpers/cli.js';

const tmp = mkdtempSync(join(tmpdir(), 'nd-zimage-cli-'));
process.env.ND_DEMO_CACHE = join(tmp, 'demo');
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

const BASE = ['generate', '--model-path', 'demo:zimage', '--prompt', 'a lighthouse on a cliff at dusk', '--device', 'cpu', '--num-inference-steps', '2'];

t.test('each --output-format writes a decodable image of the requested size', async (tt) => {
  const outDir = join(tmp, 'formats');
  const formats: Array<[string, string, string]> = [
    ['png', 'png', 'png'],
    ['jpeg', 'jpg', 'jpeg'],
    ['webp', 'webp', 'webp'],
  ];
  const pixels: Buffer[] = [];
  for (const [flag, ext, sharpFormat] of formats) {
    const r = await runCli([...BASE, '--width', '96', '--height', '64', '--seed', '5', '--output-format', flag, '--output-path', outDir, '--output-file-name', `out-${flag}`]);
    tt.equal(r.code, 0, r.err);
    const file = join(outDir, `out-${flag}.${ext}`);
    tt.match(r.out, `wrote ${file}`);
    tt.match(r.out, /96x64, 1 frame\(s\), seed 5/);
    tt.match(r.out, /denoising: 2 steps/);
    const meta = await sharp(file).metadata();
    tt.same([meta.format, meta.width, meta.height], [sharpFormat, 96, 64], `${flag}: format and size`);
    const img = await decodeImage(readFileSync(file));
    tt.same([img.width, img.height, img.data.length], [96, 64, 96 * 64 * 3]);
    pixels.push(Buffer.from(img.data));
  }
  // the same seed gives the same picture: lossy formats stay close to the lossless PNG
  for (const [i, name] of [[1, 'jpeg'], [2, 'webp']] as const) {
    let diff = 0;
    for (let k = 0; k < pixels[0]!.length; ++k) diff += Math.abs(pixels[i]![k]! - pixels[0]![k]!);
    tt.ok(diff / pixels[0]!.length < 20, `${name} decodes close to the PNG (mean abs diff ${(diff / pixels[0]!.length).toFixed(1)})`);
  }
});

t.test('quality flags reach the encoder; PNG ignores them', async (tt) => {
  const outDir = join(tmp, 'quality');
  const size = async (extra: string[], name: string, ext: string) => {
    const r = await runCli([...BASE, '--width', '128', '--height', '128', ...extra, '--output-path', outDir, '--output-file-name', name]);
    tt.equal(r.code, 0, r.err);
    return statSync(join(outDir, `${name}.${ext}`)).size;
  };
  const low = await size(['--output-format', 'jpeg', '--output-compression', '5'], 'low', 'jpg');
  const high = await size(['--output-format', 'jpeg', '--output-compression', '98'], 'high', 'jpg');
  tt.ok(low < high, `JPEG quality 5 (${low} B) is smaller than quality 98 (${high} B)`);
  const presetLow = await size(['--output-format', 'webp', '--output-quality', 'low'], 'wlow', 'webp');
  const presetMax = await size(['--output-format', 'webp', '--output-quality', 'maximum'], 'wmax', 'webp');
  tt.ok(presetLow < presetMax, `WebP preset low (${presetLow} B) is smaller than maximum (${presetMax} B)`);
  const pngA = await size(['--output-compression', '5'], 'pnga', 'png');
  const pngB = await size(['--output-compression', '98'], 'pngb', 'png');
  tt.equal(pngA, pngB, 'PNG is lossless whatever the quality');
  tt.same(readdirSync(outDir).sort(), ['high.jpg', 'low.jpg', 'pnga.png', 'pngb.png', 'wlow.webp', 'wmax.webp']);
});

t.test('usage errors exit 2 and write nothing', async (tt) => {
  const outDir = join(tmp, 'errors');
  const bad: Array<[string[], RegExp]> = [
    [['--output-format', 'gif'], /--output-format/],
    [['--width', '40'], /multiples of 16, got 40x64/],
    [['--num-frames', '5'], /num_frames must be 1/],
    [['--output-quality', 'ultra'], /--output-quality/],
  ];
  for (const [extra, message] of bad) {
    const r = await runCli([...BASE, '--height', '64', ...extra, '--output-path', outDir]);
    tt.equal(r.code, 2, `${extra.join(' ')}: exit 2`);
    tt.match(r.err, message);
  }
  tt.throws(() => statSync(outDir), 'no output folder created');
});
