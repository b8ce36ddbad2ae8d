// `node-diffusion generate --num-gpus 2 --device cpu` on demo:wan: the generation runs on two rank
// processes; with Ulysses the image is bit-identical to one process's, several videos are written
// one per output, and a model that cannot run on ranks is refused with a clear error.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { runCli } from '../helpers/cli.js';


const tmp = mkdtempSync(join(tmpdir(), 'nd-parallel-cli-'));
process.env.ND_DEMO_CACHE = join(tmp, 'demo');
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

const BASE = ['generate', '--model-path', 'demo:wan', '--prompt', 'a red fox trotting through fresh snow', '--device', 'cpu', '--num-inference-steps', '2'];

t.test('an image on 2 ranks (Ulysses) is bit-identical to one process\'s', async (t) => {
  const dir = join(tmp, 'png');
  const image = ['--num-frames', '1', '--width', '48', '--height', '32', '--output-path', dir];
  const one = await runCli([...BASE, ...image, '--output-file-name', 'one']);
  if (!t.equal(one.code, 0, 'exit code 0')) t.comment(one.err);
  const two = await runCli([...BASE, ...image, '--output-file-name', 'two', '--num-gpus', '2']);
  if (!t.equal(two.code, 0, 'exit code 0')) t.comment(two.err);
  t.match(two.out, `wrote ${join(dir, 'two.png')}`);
  t.match(two.out, /48x32, 1 frame\(s\), seed 42, 2 ranks/);
  t.match(two.out, /denoising: 2 steps/);
  t.ok(readFileSync(join(dir, 'two.png')).equals(readFileSync(join(dir, 'one.png'))), 'same PNG bytes');
});

t.test('two videos on 2 ranks with CFG-parallel: one file per output', async (t) => {
  const dir = join(tmp, 'mp4');
  const r = await runCli([...BASE, '--num-frames', '5', '--width', '32', '--height', '32', '--num-outputs-per-prompt', '2', '--num-gpus', '2', '--enable-cfg-parallel', '--output-path', dir, '--output-file-name', 'v']);
  if (!t.equal(r.code, 0, 'exit code 0')) t.comment(r.err);
  for (const f of ['v_0.mp4', 'v_1.mp4']) t.ok(existsSync(join(dir, f)), f);
  t.match(r.out, /32x32, 5 frame\(s\), seed 42, 2 ranks/);
});

t.test('errors: a request the pipeline rejects, a model that cannot run on ranks', async (t) => {
  const bad = await runCli([...BASE, '--num-gpus', '2', '--width', '100', '--output-path', join(tmp, 'bad')]);
  t.equal(bad.code, 2);
  t.match(bad.err, /multiples of 16/);
  const zimage = await runCli(['generate', '--model-path', 'demo:zimage', '--prompt', 'x', '--device', 'cpu', '--num-gpus', '2', '--output-path', join(tmp, 'z')]);
  t.equal(zimage.code, 1);
  t.match(zimage.err, /cannot load demo:zimage: rank \d of 2: could not load model 'demo:zimage': ZImagePipeline does not run on several ranks \(--num-gpus 2\); serve it with --num-gpus 1/);
});
