// `node-diffusion generate` on demo:flux2-klein: text-to-image with the model's defaults, image editing
// with one or several --image-path references (output size from the first one), --image-path in a
// config file, and usage errors for unreadable, corrupt, too small or unwanted reference images.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import t from 'tap';

import { generateConfig } from '../../lib/cli/generate.js';
import { decodeImage } from '../../lib/encode/image.js';
import { runCli } from '../helpers/cli.js';

const tmp = mkdtempSync(join(tmpdir(), 'nd-flux2-cli-'));
process.env.ND_DEMO_CACHE = join(tmp, 'demo');
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

/** A PNG file of a gradient picture. */
async function pngFile(name: string, width: number, height: number, phase: number): Promise<string> {
  const data = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; ++y)
    for (let x = 0; x < width; ++x) data.set([(x * 255) / width, (y * 255) / height, phase].map(Math.round), (y * width + x) * 3);
  const path = join(tmp, name);
  writeFileSync(path, await sharp(data, { raw: { width, height, channels: 3 } }).png().toBuffer());
  return path;
}

const OUT = join(tmp, 'out');
const BASE = ['generate', '--model-path', 'demo:flux2-klein', '--prompt', 'a red fox in the snow', '--device', 'cpu', '--output-path', OUT];

t.test('text-to-image with the model defaults, and editing with --image-path (size from the first reference)', async (tt) => {
  const plain = await runCli([...BASE, '--num-inference-steps', '2', '--output-file-name', 'plain']);
  tt.equal(plain.code, 0, plain.err);
  tt.match(plain.out, /64x64, 1 frame\(s\), seed 42/);
  tt.match(plain.out, /denoising: 2 steps/);
  const a = await pngFile('a.png', 72, 100, 30);
  const b = await pngFile('b.png', 128, 64, 220);
  const one = await runCli([...BASE, '--image-path', a, '--output-file-name', 'one']);
  tt.equal(one.code, 0, one.err);
  tt.match(one.out, /64x96, 1 frame\(s\)/, '72x100 reference -> 64x96 output');
  tt.match(one.out, /denoising: 4 steps/, "klein's 4 steps by default");
  tt.match(one.out, /encode_images \d/, 'reference encoding timed');
  const two = await runCli([...BASE, '--image-path', a, `--image-path=${b}`, '--output-file-name', 'two']);
  tt.equal(two.code, 0, two.err);
  const imgOne = await decodeImage(readFileSync(join(OUT, 'one.png')));
  const imgTwo = await decodeImage(readFileSync(join(OUT, 'two.png')));
  tt.same([imgOne.width, imgOne.height, imgTwo.width, imgTwo.height], [64, 96, 64, 96]);
  tt.notOk(Buffer.from(imgOne.data).equals(Buffer.from(imgTwo.data)), 'the second reference changes the image');
  const sized = await runCli([...BASE, '--image-path', a, '--width', '48', '--height', '32', '--num-inference-steps', '1', '--output-file-name', 'sized']);
  tt.equal(sized.code, 0, sized.err);
  tt.match(sized.out, /48x32, 1 frame\(s\)/, 'an explicit size wins');
});

t.test('--image-path repeats on the command line and is a list in a config file', async (tt) => {
  const cfg = generateConfig(['--model-path', 'demo:flux2-klein', '--prompt', 'x', '--image-path', 'a,b.png', '--image-path', 'c.png']);
  tt.same(cfg !== 'help' && cfg.imagePaths, ['a,b.png', 'c.png'], 'each occurrence is one path (commas kept)');
  const file = join(tmp, 'gen.yaml');
  writeFileSync(file, 'model_path: demo:flux2-klein\nprompt: x\nimage_path:\n  - one.png\n  - two.png\n');
  const fromFile = generateConfig(['--config', file]);
  tt.same(fromFile !== 'help' && fromFile.imagePaths, ['one.png', 'two.png']);
  const none = generateConfig(['--model-path', 'demo:flux2-klein', '--prompt', 'x']);
  tt.same(none !== 'help' && none.imagePaths, []);
});

t.test('bad reference images are usage errors naming the file', async (tt) => {
  const missing = await runCli([...BASE, '--image-path', join(tmp, 'nope.png')]);
  tt.equal(missing.code, 2);
  tt.match(missing.err, /--image-path .*nope\.png: cannot read/);
  const corrupt = join(tmp, 'corrupt.png');
  writeFileSync(corrupt, Buffer.from('not an image at all'));
  const bad = await runCli([...BASE, '--image-path', corrupt]);
  tt.equal(bad.code, 2);
  tt.match(bad.err, /--image-path .*corrupt\.png is not a readable image/);
  const small = await runCli([...BASE, '--image-path', await pngFile('small.png', 40, 80, 0)]);
  tt.equal(small.code, 2);
  tt.match(small.err, /image is too small: 40x80; both sides must be at least 64 pixels/);
  const zimage = await runCli(['generate', '--model-path', 'demo:zimage', '--prompt', 'x', '--device', 'cpu', '--output-path', OUT, '--image-path', await pngFile('c.png', 64, 64, 0)]);
  tt.equal(zimage.code, 2);
  tt.match(zimage.err, /text-to-image: it takes no input images/);
});
