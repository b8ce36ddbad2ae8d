// WanPipeline through loadPipeline('demo:wan'): request validation, seeded determinism, output
// types, progress and cancellation, memory release, and the demo model cache.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

import * as E from '../../lib/engine/index.js';
import { demoModelDir, loadPipeline, registerDemo, registerPipeline } from '../../lib/pipelines/load.js';
import { type GenerateRequest, type Pipeline, RequestError } from '../../lib/pipelines/types.js';
import { WAN_DEFAULT_NEGATIVE_PROMPT, WanPipeline } from '../../lib/pipelines/wan.js';
import {
  expectCancelledAtStepBoundary, expectDemoCache, expectDisposeFreesAll, expectRequestErrors, expectTextEncoderReleased, progressReports,
  stageReports,
} from '../helpers/pipeline.js';

const tmp = mkdtempSync(join(tmpdir(), 'nd-wan-pipeline-'));
process.env.ND_DEMO_CACHE = join(tmp, 'demo');
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

const SMALL: GenerateRequest = { prompt: 'a red fox trotting through snow', width: 48, height: 32, numFrames: 5, numInferenceSteps: 2 };

let pipeline: Pipeline;
t.before(async () => {
  pipeline = await loadPipeline('demo:wan');
});
t.teardown(() => pipeline.dispose());

const bytesOf = (r: { outputs: Array<Array<{ data: Uint8Array }>> }) => r.outputs.map((frames) => Buffer.concat(frames.map((f) => f.data)));
/** Largest difference in 8-bit levels (a batch of 2 runs other GEMM shapes, whose float rounding may move a pixel by one level). */
const maxLevelDiff = (a: Buffer, b: Buffer) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);

t.test('pipeline info and defaults', async (tt) => {
  tt.match(pipeline.info, {
    modelPath: 'demo:wan',
    pipelineClass: 'WanPipeline',
    pipelineName: 'WanPipeline',
    taskType: 'T2V',
    device: 'cpu',
    ditPrecision: 'fp32',
    vaePrecision: 'fp32',
    maxInputImages: 0,
  });
  // the demo folder sizes its defaults for speed; everything else is Wan2.1's
  tt.same(pipeline.info.defaults, { width: 64, height: 64, numFrames: 17, fps: 16, numInferenceSteps: 4, guidanceScale: 3, negativePrompt: WAN_DEFAULT_NEGATIVE_PROMPT });
  tt.ok(WAN_DEFAULT_NEGATIVE_PROMPT.startsWith('Bright tones, overexposed, static, blurred details'), 'upstream default negative prompt');
});

t.test('generate: frames of the requested size, deterministic per seed, seed + i per output', async (tt) => {
  const a = await pipeline.generate({ ...SMALL, seed: 7 });
  tt.equal(a.outputs.length, 1);
  tt.equal(a.outputs[0]!.length, 5, '5 frames');
  for (const f of a.outputs[0]!) tt.same([f.width, f.height, f.data.length], [48, 32, 48 * 32 * 3]);
  tt.same([a.width, a.height, a.numFrames, a.fps, a.seed], [48, 32, 5, 16, 7]);
  tt.ok(a.timings.encode_prompt! >= 0 && a.timings.denoise! > 0 && a.timings.decode! > 0, 'stage timings');
  tt.ok(a.peakMemoryMb > 0, 'peak memory reported');
  const again = await pipeline.generate({ ...SMALL, seed: 7 });
  tt.ok(bytesOf(a)[0]!.equals(bytesOf(again)[0]!), 'same seed, same frames');
  const other = await pipeline.generate({ ...SMALL, seed: 8 });
  tt.notOk(bytesOf(a)[0]!.equals(bytesOf(other)[0]!), 'another seed, other frames');
  const two = await pipeline.generate({ ...SMALL, seed: 7, numOutputs: 2 });
  tt.equal(two.outputs.length, 2);
  tt.ok(maxLevelDiff(bytesOf(two)[0]!, bytesOf(a)[0]!) <= 1, 'output 0 uses the seed');
  tt.ok(maxLevelDiff(bytesOf(two)[1]!, bytesOf(other)[0]!) <= 1, 'output 1 uses seed + 1');
  const image = await pipeline.generate({ ...SMALL, numFrames: 1 });
  tt.equal(image.outputs[0]!.length, 1, 'one frame');
});

t.test('output types: latents, float video and their relation to the RGB frames', async (tt) => {
  const latent = await pipeline.generate({ ...SMALL, outputType: 'latent' });
  tt.same(latent.latents!.shape, [1, 16, 2, 4, 6]);
  tt.equal(latent.outputs.length, 0, 'no decode');
  const float = await pipeline.generate({ ...SMALL, outputType: 'float' });
  const rgb = await pipeline.generate(SMALL);
  const video = float.floatOutput!;
  tt.same(video.shape, [1, 5, 32, 48, 3]);
  const v = video.toFloat32();
  tt.ok(v.every((x) => x >= 0 && x <= 1), 'float frames in [0, 1]');
  const bytes = bytesOf(rgb)[0]!;
  let maxDiff = 0;
  let exact = 0;
  for (let i = 0; i < v.length; ++i) {
    const d = Math.abs(Math.round(v[i]! * 255) - bytes[i]!);
    maxDiff = Math.max(maxDiff, d);
    if (d === 0) ++exact;
  }
  tt.equal(maxDiff, 0, `rgb = round(255 x) (${exact}/${v.length} exact)`);
  const lat = latent.latents!.toArray();
  tt.same(float.latents!.toArray(), lat, 'same latents whatever the output type');
  E.disposeAll([latent.latents, float.latents, float.floatOutput]);
});

t.test('given latents replace the noise and are not modified', async (tt) => {
  const noise = E.randn([1, 16, 2, 4, 6], { seed: 42 });
  const copy = noise.toArray();
  const a = await pipeline.generate({ ...SMALL, latents: noise, seed: 999 });
  const b = await pipeline.generate({ ...SMALL, seed: 42 });
  tt.ok(bytesOf(a)[0]!.equals(bytesOf(b)[0]!), 'randn(seed 42) as latents == seed 42');
  tt.same(noise.toArray(), copy, 'caller latents untouched');
  noise.dispose();
});

t.test('validation: clear RequestErrors naming the parameter', async (tt) => {
  const bad: Array<[Partial<GenerateRequest>, string, RegExp]> = [
    [{ numFrames: 6 }, 'num_frames', /4k\+1/],
    [{ numFrames: 0 }, 'num_frames', /integer in \[1, /],
    [{ width: 70 }, 'size', /multiples of 16/],
    [{ height: 8 }, 'height', /\[16, 4096\]/],
    [{ width: 8192 }, 'width', /\[16, 4096\]/],
    [{ numInferenceSteps: 0 }, 'num_inference_steps', /\[1, 1000\]/],
    [{ numInferenceSteps: 2.5 }, 'num_inference_steps', /integer/],
    [{ guidanceScale: -1 }, 'guidance_scale', /\[0, 100\]/],
    [{ guidanceScale: Number.NaN }, 'guidance_scale', /number/],
    [{ numOutputs: 11 }, 'n', /\[1, 10\]/],
    [{ seed: -1 }, 'seed', /seed/],
    [{ prompt: [] }, 'prompt', /non-empty list/],
    [{ images: [{ width: 1, height: 1, data: new Uint8Array(3) }] }, 'images', /text-to-video/],
  ];
  expectRequestErrors(tt, pipeline, SMALL, bad);
  const wrong = E.zeros([1, 16, 3, 4, 6]);
  tt.throws(() => pipeline.validate({ ...SMALL, latents: wrong }), /latents must be \[1,16,2,4,6\]/);
  wrong.dispose();
  await tt.rejects(pipeline.generate({ ...SMALL, numFrames: 6 }), RequestError, 'generate validates too');
  const v = pipeline.validate({ prompt: 'x' });
  tt.match(v, { width: 64, height: 64, numFrames: 17, numInferenceSteps: 4, guidanceScale: 3, seed: 42, negativePrompt: WAN_DEFAULT_NEGATIVE_PROMPT });
});

t.test('progress per stage and step (awaited), cancellation at a step boundary frees everything', async (tt) => {
  let previewFrames = 0;
  const seen = await progressReports(pipeline, { ...SMALL, numInferenceSteps: 3 }, (p) => {
    tt.ok(p.stepMs > 0, 'step time');
    if (p.step === 2) previewFrames = p.preview!().length;
  });
  tt.same(seen, stageReports(3, ['encode_prompt', 'prepare_latents']));
  tt.equal(previewFrames, 5, 'the preview decodes the current latents');
  await expectCancelledAtStepBoundary(tt, pipeline, SMALL);
});

t.test('the text encoder is released after encoding on the CPU', async (tt) => {
  await expectTextEncoderReleased(tt, pipeline, SMALL);
});

t.test('demo cache: generated once, reused, regenerated when incomplete; dispose frees the model', async (tt) => {
  const dir = await expectDemoCache(tt, 'demo:wan');
  await tt.rejects(loadPipeline('demo:nope'), /unknown demo model 'demo:nope' \(available: demo:wan/);
  await expectDisposeFreesAll(tt, dir, SMALL, (p) => {
    tt.ok(p instanceof WanPipeline, 'a local folder loads the same pipeline');
    tt.equal(p.info.modelPath, dir);
  });
});

t.test('loadPipeline errors: unknown pipeline class, missing folder, unsupported Wan variants', async (tt) => {
  const dir = await demoModelDir('demo:wan');
  const copy = join(tmp, 'copy');
  cpSync(dir, copy, { recursive: true });
  const index = JSON.parse(readFileSync(join(copy, 'model_index.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(copy, 'model_index.json'), JSON.stringify({ ...index, _class_name: 'StableDiffusionPipeline' }));
  await tt.rejects(loadPipeline(copy), /pipeline class StableDiffusionPipeline is not supported \(supported: .*WanPipeline/);
  writeFileSync(join(copy, 'model_index.json'), JSON.stringify({ ...index, boundary_ratio: 0.875 }));
  await tt.rejects(loadPipeline(copy), /two-expert Wan2\.2 models/);
  await tt.rejects(loadPipeline(join(tmp, 'nothing-here')), /nothing-here/);
  await tt.rejects(loadPipeline('demo:wan', { device: 'tpu' as never }), /unknown device 'tpu'/);
  tt.throws(() => registerPipeline('WanPipeline', async () => pipeline), /a pipeline for WanPipeline is already registered/);
  tt.throws(() => registerDemo('wan', 1, async () => {}), /a demo model 'wan' is already registered/);
});
