// `node-diffusion generate --num-gpus 2 --device cpu` on demo:wan: the generation runs on two rank
// processes; with Ulysses the image is bit-identical to one process's, several videos are written
// one per output, and a model that cannot run on ranks is refused with a clear error.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

import { main } from '../../lib/cli/main.js';

const tmp = mkdtempSync(join(tmpdir(), 'nd-parallel-cli-'));
process.env.ND_DEMO_CACHE = join(tmp, 'demo');
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const log = console.log;
  const error = console.error;
  const write = process.stderr.write.bind(process.stderr);
  console.log = (...a: unknown[]) => void out.push(a.join(' '));
  console.error = (...a: unknown[]) => void err.push(a.join(' '));
  process.stderr.write = ((chunk: string | Uint8Array) => {
    err.push(String(chunk));
    return true;
  }) as typeof process.stderr.write;
  try {
    const code = await main(args);
    return { code, out: out.join('\n'), err: err.join('\n') };
  } finally {
    console.log = log;
    console.error = error;
    process.stderr.write = write;
  }
}

const BASE = ['generate', '--model-path', 'demo:wan', '--prompt', 'a red fox trotting through fresh snow', '--device', 'cpu', '--num-inference-steps', '2'];

t.test('an image on 2 ranks (Ulysses) is bit-identical to one process\'s', async (t) => {
  const dir = join(tmp, 'png');
  const image = ['--num-frames', '1', '--width', '48', '--height', '32', '--output-path', dir];
  const one = await cli([...BASE, ...image, '--output-file-name', 'one']);
  if (!t.equal(one.code, 0, 'exit code 0')) t.comment(one.err);
  const two = await cli([...BASE, ...image, '--output-file-name', 'two', '--num-gpus', '2']);
  if (!t.equal(two.code, 0, 'exit code 0')) t.comment(two.err);
  t.match(two.out, `wrote ${join(dir, 'two.png')}`);
  t.match(two.out, /48x32, 1 frame\(s\), seed 42, 2 ranks/);
  t.match(two.out, /denoising: 2 steps/);
  t.ok(readFileSync(join(dir, 'two.png')).equals(readFileSync(join(dir, 'one.png'))), 'same PNG bytes');
});

t.test('two videos on 2 ranks with CFG-parallel: one file per output', async (t) => {
  const dir = join(tmp, 'mp4');
  const r = await cli([...BASE, '--num-frames', '5', '--width', '32', '--height', '32', '--num-outputs-per-prompt', '2', '--num-gpus', '2', '--enable-cfg-parallel', '--output-path', dir, '--output-file-name', 'v']);
  if (!t.equal(r.code, 0, 'exit code 0')) t.comment(r.err);
  for (const f of ['v_0.mp4', 'v_1.mp4']) t.ok(existsSync(join(dir, f)), f);
  t.match(r.out, /32x32, 5 frame\(s\), seed 42, 2 ranks/);
});

t.test('errors: a request the pipeline rejects, a model that cannot run on ranks', async (t) => {
  const bad = await cli([...BASE, '--num-gpus', '2', '--width', '100', '--output-path', join(tmp, 'bad')]);
  t.equal(bad.code, 2);
  t.match(bad.err, /multiples of 16/);
  const zimage = await cli(['generate', '--model-path', 'demo:zimage', '--prompt', 'x', '--device', 'cpu', '--num-gpus', '2', '--output-path', join(tmp, 'z')]);
  t.equal(zimage.code, 1);
  t.match(zimage.err, /cannot load demo:zimage: rank \d of 2: could not load model 'demo:zimage': ZImagePipeline does not run on several ranks \(--num-gpus 2\); serve it with --num-gpus 1/);
});
