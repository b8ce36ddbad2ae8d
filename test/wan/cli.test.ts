// `node-diffusion generate` on demo:wan: the MP4 (frame count, size, fps, H.264 yuv420p) and PNG
// outputs, the printed timings, and usage errors.
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import t from 'tap';

import { defaultFileName } from '../../lib/cli/generate.js';
import { ffmpegPath } from '../../lib/encode/video.js';
import { demoModelDir } from '../../lib/pipelines/load.js';
import { runCli } from '../helpers/cli.js';

const tmp = mkdtempSync(join(tmpdir(), 'nd-wan-cli-'));
process.env.ND_DEMO_CACHE = join(tmp, 'demo');
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

/** Stream properties and decoded frame count of a video, read with the bundled ffmpeg. */
function probe(file: string): { codec: string; pixFmt: string; width: number; height: number; fps: number; frames: number } {
  const info = spawnSync(ffmpegPath(), ['-hide_banner', '-i', file], { encoding: 'utf8' }).stderr;
  const m = /Stream #0:0.*Video: (\w+).*?, (\w+)\(.*?\), (\d+)x(\d+).*?, ([\d.]+) fps/.exec(info);
  if (!m) throw new Error(`no video stream in ffmpeg output:\n${info}`);
  const decoded = spawnSync(ffmpegPath(), ['-hide_banner', '-i', file, '-map', '0:v:0', '-f', 'null', '-'], { encoding: 'utf8' }).stderr;
  const frames = [...decoded.matchAll(/frame=\s*(\d+)/g)].pop();
  return { codec: m[1]!, pixFmt: m[2]!, width: Number(m[3]), height: Number(m[4]), fps: Number(m[5]), frames: Number(frames?.[1]) };
}

const BASE = ['generate', '--model-path', 'demo:wan', '--prompt', 'a red fox trotting through fresh snow', '--device', 'cpu'];

t.test('generate writes an H.264 MP4 with the requested frames, size and fps, and reports timings', async (tt) => {
  const outDir = join(tmp, 'mp4');
  const r = await runCli([...BASE, '--num-frames', '9', '--width', '96', '--height', '64', '--fps', '8', '--num-inference-steps', '3', '--output-path', outDir, '--output-file-name', 'fox']);
  tt.equal(r.code, 0, 'exit code 0');
  const file = join(outDir, 'fox.mp4');
  tt.match(r.out, `wrote ${file}`);
  const time = '(\\d+ ms|[\\d.]+ s)';
  tt.match(r.out, new RegExp(`timings: load ${time}, encode_prompt ${time}, prepare_latents ${time}, denoise ${time}, decode ${time}, encode_output ${time}`));
  tt.match(r.out, new RegExp(`denoising: 3 steps, ${time}/step`));
  tt.match(r.out, /peak memory: \d+ MB of tensors, \d+ MB process RSS/);
  tt.match(r.err, /denoising/, 'progress on stderr');
  tt.same(probe(file), { codec: 'h264', pixFmt: 'yuv420p', width: 96, height: 64, fps: 8, frames: 9 });
  // faststart: the moov atom precedes mdat
  const head = execFileSync('head', ['-c', '4096', file]);
  tt.ok(head.indexOf('moov') >= 0 && (head.indexOf('mdat') < 0 || head.indexOf('moov') < head.indexOf('mdat')), 'moov before mdat');
});

t.test('--num-frames 1 writes a PNG; default file name from prompt, time and parameters; outputs per prompt', async (tt) => {
  const outDir = join(tmp, 'png');
  const r = await runCli([...BASE, '--num-frames', '1', '--width', '48', '--height', '32', '--num-inference-steps', '1', '--num-outputs-per-prompt', '2', '--output-path', outDir]);
  tt.equal(r.code, 0, 'exit code 0');
  const files = readdirSync(outDir).sort();
  tt.equal(files.length, 2);
  for (const [i, f] of files.entries()) {
    tt.match(f, new RegExp(`^a_red_fox_trotting_through_fresh_snow_\\d{8}-\\d{6}_[0-9a-f]{8}_${i}\\.png$`));
    const meta = await sharp(join(outDir, f)).metadata();
    tt.same([meta.format, meta.width, meta.height, meta.channels], ['png', 48, 32, 3]);
  }
  const name = defaultFileName({ prompt: 'Hello, wörld! / ../x', seed: 1 }, new Date(2026, 0, 2, 3, 4, 5));
  tt.match(name, /^Hello__w_rld____\.\._x_20260102-030405_[0-9a-f]{8}$/, 'only [A-Za-z0-9._-] survive');
});

t.test('--<component>-path replaces a component folder', async (tt) => {
  const dir = await demoModelDir('demo:wan');
  const vae = join(tmp, 'other-vae');
  cpSync(join(dir, 'vae'), vae, { recursive: true });
  const outDir = join(tmp, 'override');
  const r = await runCli([...BASE, '--vae-path', vae, '--num-frames', '1', '--width', '32', '--height', '32', '--num-inference-steps', '1', '--output-path', outDir, '--output-file-name', 'x']);
  tt.equal(r.code, 0, 'exit code 0');
  tt.ok(existsSync(join(outDir, 'x.png')));
});

t.test('usage and request errors exit with 2 and a message, writing nothing', async (tt) => {
  const outDir = join(tmp, 'bad');
  const cases: Array<[string[], RegExp]> = [
    [['generate', '--prompt', 'x'], /--model-path is required/],
    [['generate', '--model-path', 'demo:wan'], /--prompt is required/],
    [[...BASE, '--num-frames', '6'], /num_frames must be 4k\+1/],
    [[...BASE, '--width', '100'], /multiples of 16/],
    [[...BASE, '--num-gpus', '4', '--ulysses-degree', '3'], /sp_degree \(4\) must equal ring_degree \* ulysses_degree \(1 \* 3 = 3\)/],
    [[...BASE, '--enable-cfg-parallel'], /CFG Parallelism is enabled via `--enable-cfg-parallel`, but num_gpus == 1/],
    [[...BASE, '--seed', 'abc'], /--seed: expected an integer/],
    [[...BASE, '--output-compression', '101'], /output_compression must be an integer in 0\.\.100/],
    [[...BASE, '--output-file-name', '../escape'], /must be a plain file name/],
    [[...BASE, '--bogus'], /unknown option --bogus/],
  ];
  for (const [args, message] of cases) {
    const r = await runCli([...args, '--output-path', outDir]);
    tt.equal(r.code, 2, args.join(' '));
    tt.match(r.err, message);
  }
  tt.notOk(existsSync(outDir), 'no output folder created');
  const missing = await runCli([...BASE, '--vae-path', join(tmp, 'no-such-vae'), '--output-path', outDir]);
  tt.equal(missing.code, 1);
  tt.match(missing.err, /cannot load demo:wan: --vae-path: .*no-such-vae does not exist/);
  const help = await runCli(['generate', '--help']);
  tt.equal(help.code, 0);
  tt.match(help.out, /--num-frames <int>/);
});
