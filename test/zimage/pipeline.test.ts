// ZImagePipeline through loadPipeline('demo:zimage'): defaults (Turbo vs base Z-Image), request
// validation, seeded determinism, output types, CFG with its normalisation and truncation, progress
// with previews, cancellation, memory release, and the demo model cache.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

import { relL2Error } from '../../lib/check/run.js';
import * as E from '../../lib/engine/index.js';
import { demoModelDir, loadPipeline } from '../../lib/pipelines/load.js';
import { type GenerateRequest, RequestError } from '../../lib/pipelines/types.js';
import {
  ZIMAGE_BASE_DEFAULTS, ZIMAGE_TURBO_DEFAULTS, ZImagePipeline, type ZImageRunParams, zimageDefaults, zimageDefaultSigmas,
} from '../../lib/pipelines/zimage.js';
import {
  expectCancelledAtStepBoundary, expectDemoCache, expectDisposeFreesAll, expectRequestErrors, expectTextEncoderReleased, progressReports,
  stageReports,
} from '../helpers/pipeline.js';

const tmp = mkdtempSync(join(tmpdir(), 'nd-zimage-pipeline-'));
process.env.ND_DEMO_CACHE = join(tmp, 'demo');
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

const SMALL: GenerateRequest = { prompt: 'a red fox trotting through snow', width: 48, height: 32, numInferenceSteps: 2 };

let pipeline: ZImagePipeline;
t.before(async () => {
  const p = await loadPipeline('demo:zimage');
  if (!(p instanceof ZImagePipeline)) throw new Error('demo:zimage did not load a ZImagePipeline');
  pipeline = p;
});
t.teardown(() => pipeline.dispose());

const bytesOf = (r: { outputs: Array<Array<{ data: Uint8Array }>> }) => r.outputs.map((frames) => Buffer.from(frames[0]!.data));
/**
 * The same picture up to float rounding: a batch computes the same values as single runs, but the
 * GEMM may block its rows differently, so a pixel may land one level apart (another seed changes most pixels).
 */
const samePicture = (a: Buffer, b: Buffer) => a.length === b.length && a.every((v, i) => Math.abs(v - b[i]!) <= 1);

t.test('pipeline info and defaults: Turbo, base Z-Image by model id, folder overrides', async (tt) => {
  tt.match(pipeline.info, {
    modelPath: 'demo:zimage',
    pipelineClass: 'ZImagePipeline',
    pipelineName: 'ZImagePipeline',
    taskType: 'T2I',
    device: 'cpu',
    ditPrecision: 'bf16',
    vaePrecision: 'fp32',
    maxInputImages: 0,
    loraTargets: ['transformer'],
  });
  // the demo folder sizes its defaults for speed; everything else is Turbo's
  tt.same(pipeline.info.defaults, { width: 64, height: 64, numFrames: 1, fps: 0, numInferenceSteps: 9, guidanceScale: 0, negativePrompt: '' });
  tt.same([pipeline.sampling.cfgNormalization, pipeline.sampling.cfgTruncation], [0, 1]);
  tt.match(ZIMAGE_TURBO_DEFAULTS, { width: 1024, height: 1024, numInferenceSteps: 9, guidanceScale: 0 });
  tt.match(ZIMAGE_BASE_DEFAULTS, { width: 1024, height: 1024, numInferenceSteps: 50, guidanceScale: 5, cfgNormalization: 1, negativePrompt: ' ' });
  tt.same(zimageDefaults('Tongyi-MAI/Z-Image-Turbo', {}), ZIMAGE_TURBO_DEFAULTS);
  tt.same(zimageDefaults('/models/z-image-turbo', {}), ZIMAGE_TURBO_DEFAULTS);
  tt.same(zimageDefaults('Tongyi-MAI/Z-Image', {}), ZIMAGE_BASE_DEFAULTS);
  tt.same(zimageDefaults('/models/Z-Image', {}), ZIMAGE_BASE_DEFAULTS);
  tt.same(zimageDefaults('/models/my-finetune', {}), ZIMAGE_TURBO_DEFAULTS, 'an unnamed folder: Turbo');
  tt.match(zimageDefaults('Tongyi-MAI/Z-Image', { _sampling_defaults: { num_inference_steps: 28, cfg_truncation: 0.9 } }), {
    numInferenceSteps: 28, cfgTruncation: 0.9, guidanceScale: 5,
  });
  tt.throws(() => zimageDefaults('x', { _sampling_defaults: { num_frames: 5 } }), /_sampling_defaults\.num_frames is not a sampling default/);
  tt.throws(() => zimageDefaults('x', { _sampling_defaults: { guidance_scale: 'high' } }), /guidance_scale must be a number/);
});

t.test('sigmas: torch.linspace(1, 1/n, n) in float32, as get_default_z_image_sigmas', async (tt) => {
  tt.same(zimageDefaultSigmas(4), [1, 0.75, 0.5, 0.25]);
  tt.same(zimageDefaultSigmas(1), [1]);
  // values printed by torch 2.13 (CPU): torch.linspace(1.0, 1/n, n).tolist()
  tt.same(zimageDefaultSigmas(9).slice(3, 5), [0.6666666865348816, 0.5555555820465088]);
  tt.same(zimageDefaultSigmas(50).slice(8, 12), [0.8400000333786011, 0.8199999928474426, 0.800000011920929, 0.7800000309944153]);
});

t.test('generate: images of the requested size, deterministic per seed, seed + i per output', async (tt) => {
  const a = await pipeline.generate({ ...SMALL, seed: 7 });
  tt.equal(a.outputs.length, 1);
  tt.equal(a.outputs[0]!.length, 1, 'one image');
  const img = a.outputs[0]![0]!;
  tt.same([img.width, img.height, img.data.length], [48, 32, 48 * 32 * 3]);
  tt.same([a.width, a.height, a.numFrames, a.fps, a.seed], [48, 32, 1, 0, 7]);
  tt.ok(a.timings.encode_prompt! >= 0 && a.timings.denoise! > 0 && a.timings.decode! > 0, 'stage timings');
  tt.ok(a.peakMemoryMb > 0, 'peak memory reported');
  const again = await pipeline.generate({ ...SMALL, seed: 7 });
  tt.ok(bytesOf(a)[0]!.equals(bytesOf(again)[0]!), 'same seed, same image');
  const other = await pipeline.generate({ ...SMALL, seed: 8 });
  tt.notOk(bytesOf(a)[0]!.equals(bytesOf(other)[0]!), 'another seed, another image');
  const two = await pipeline.generate({ ...SMALL, seed: 7, numOutputs: 2 });
  tt.equal(two.outputs.length, 2);
  tt.notOk(samePicture(bytesOf(a)[0]!, bytesOf(other)[0]!), 'seeds 7 and 8 give different pictures');
  tt.ok(samePicture(bytesOf(two)[0]!, bytesOf(a)[0]!), 'output 0 uses the seed');
  tt.ok(samePicture(bytesOf(two)[1]!, bytesOf(other)[0]!), 'output 1 uses seed + 1');
  const prompts = await pipeline.generate({ ...SMALL, prompt: ['a red fox trotting through snow', 'a lighthouse at night'], seed: 7 });
  tt.ok(samePicture(bytesOf(prompts)[0]!, bytesOf(a)[0]!), 'a batch of prompts: each as alone');
  const lighthouse = await pipeline.generate({ ...SMALL, prompt: 'a lighthouse at night', seed: 8 });
  tt.ok(samePicture(bytesOf(prompts)[1]!, bytesOf(lighthouse)[0]!), 'the second prompt uses seed + 1');
  const defaults = await pipeline.generate({ prompt: 'x', numInferenceSteps: 1 });
  tt.same([defaults.width, defaults.height], [64, 64]);
});

t.test('output types: latents, float images and their relation to the RGB image', async (tt) => {
  const latent = await pipeline.generate({ ...SMALL, outputType: 'latent' });
  tt.same(latent.latents!.shape, [1, 16, 4, 6]);
  tt.equal(latent.outputs.length, 0, 'no decode');
  const float = await pipeline.generate({ ...SMALL, outputType: 'float' });
  const rgb = await pipeline.generate(SMALL);
  const images = float.floatOutput!;
  tt.same(images.shape, [1, 32, 48, 3]);
  const v = images.toFloat32();
  tt.ok(v.every((x) => x >= 0 && x <= 1), 'float image in [0, 1]');
  const bytes = bytesOf(rgb)[0]!;
  let maxDiff = 0;
  for (let i = 0; i < v.length; ++i) maxDiff = Math.max(maxDiff, Math.abs(Math.round(v[i]! * 255) - bytes[i]!));
  tt.equal(maxDiff, 0, 'rgb = round(255 x)');
  tt.same(float.latents!.toArray(), latent.latents!.toArray(), 'same latents whatever the output type');
  E.disposeAll([latent.latents, float.latents, float.floatOutput]);
});

t.test('given latents replace the noise and are not modified', async (tt) => {
  const noise = E.randn([1, 16, 4, 6], { seed: 42 });
  const copy = noise.toArray();
  const a = await pipeline.generate({ ...SMALL, latents: noise, seed: 999 });
  const b = await pipeline.generate({ ...SMALL, seed: 42 });
  tt.ok(bytesOf(a)[0]!.equals(bytesOf(b)[0]!), 'randn(seed 42) as latents == seed 42');
  tt.same(noise.toArray(), copy, 'caller latents untouched');
  noise.dispose();
});

/** Runs the pipeline on fixed latents without decoding and returns the latents after each step. */
async function steps(overrides: Partial<ZImageRunParams>): Promise<E.Tensor[]> {
  const latents = E.randn([1, 16, 4, 6], { seed: 3 });
  const out: E.Tensor[] = [];
  const r = await pipeline.run({
    prompts: ['a red fox trotting through snow'],
    negativePrompt: 'blurry',
    width: 48,
    height: 32,
    numInferenceSteps: 2,
    guidanceScale: 0,
    cfgNormalization: 0,
    cfgTruncation: 1,
    numOutputs: 1,
    seed: 0,
    latents,
    decode: false,
    onStepLatents: (_, x) => out.push(E.keep(x.clone())),
    ...overrides,
  });
  E.disposeAll([r.latents, latents]);
  return out;
}

t.test('CFG: guidance_scale > 0 runs the negative prompt; normalisation clips to ||pos||; truncation skips late steps', async (tt) => {
  const x0 = E.randn([1, 16, 4, 6], { seed: 3 });
  const sigmas = [...zimageDefaultSigmas(2).map((s) => Math.fround((3 * s) / (1 + 2 * s))), 0];
  const dt = Math.fround(sigmas[1]! - sigmas[0]!);
  // the first step's model prediction, recovered from x1 = x0 - dt pred
  const predOf = (x1: E.Tensor) => E.div(E.sub(x0, x1), dt);
  const norm = (x: E.Tensor) => Math.sqrt(E.sum(E.square(x.reshape(-1)), 0).item());

  const pos = await steps({ guidanceScale: 0 });
  const cfg = await steps({ guidanceScale: 4 });
  const clipped = await steps({ guidanceScale: 4, cfgNormalization: 1 });
  const truncated = await steps({ guidanceScale: 4, cfgTruncation: 0.1 });
  E.scope(() => {
    const pPos = predOf(pos[0]!);
    const pCfg = predOf(cfg[0]!);
    const pClipped = predOf(clipped[0]!);
    tt.ok(relL2Error(pCfg.toFloat32(), pPos.toFloat32()) > 1e-3, 'guidance changes the prediction');
    tt.ok(norm(pCfg) > norm(pPos), 'pos + 4 (pos - neg) is longer than pos here');
    const expected = E.mul(pCfg, norm(pPos) / norm(pCfg));
    tt.ok(relL2Error(pClipped.toFloat32(), expected.toFloat32()) < 1e-4, 'clipped to ||pos|| (factor 1)');
    // step 1 has t_norm = (1000 - 1000) / 1000 = 0 <= 0.1: guided; step 2 (t = 750) has t_norm 0.25 > 0.1: not guided
    tt.ok(relL2Error(truncated[0]!.toFloat32(), cfg[0]!.toFloat32()) < 1e-6, 'first step guided as without truncation');
    tt.ok(relL2Error(truncated[1]!.toFloat32(), cfg[1]!.toFloat32()) > 1e-3, 'second step is not guided');
  });
  E.disposeAll([x0, pos, cfg, clipped, truncated]);
});

t.test('validation: clear RequestErrors naming the parameter', async (tt) => {
  const bad: Array<[Partial<GenerateRequest>, string, RegExp]> = [
    [{ width: 40 }, 'size', /multiples of 16, got 40x32/],
    [{ height: 8 }, 'height', /\[16, 4096\]/],
    [{ width: 8192 }, 'width', /\[16, 4096\]/],
    [{ numFrames: 5 }, 'num_frames', /makes images: num_frames must be 1/],
    [{ numInferenceSteps: 0 }, 'num_inference_steps', /\[1, 1000\]/],
    [{ numInferenceSteps: 2.5 }, 'num_inference_steps', /integer/],
    [{ guidanceScale: -1 }, 'guidance_scale', /\[0, 100\]/],
    [{ guidanceScale: Number.NaN }, 'guidance_scale', /number/],
    [{ numOutputs: 11 }, 'n', /\[1, 10\]/],
    [{ seed: -1 }, 'seed', /seed/],
    [{ prompt: [] }, 'prompt', /non-empty list/],
    [{ negativePrompt: 3 as unknown as string }, 'negative_prompt', /string/],
    [{ outputType: 'png' as never }, 'output_type', /rgb, float or latent/],
    [{ images: [{ width: 1, height: 1, data: new Uint8Array(3) }] }, 'images', /text-to-image/],
  ];
  expectRequestErrors(tt, pipeline, SMALL, bad);
  const wrong = E.zeros([1, 16, 2, 6]);
  tt.throws(() => pipeline.validate({ ...SMALL, latents: wrong }), /latents must be \[1,16,4,6\]/);
  wrong.dispose();
  await tt.rejects(pipeline.generate({ ...SMALL, width: 40 }), RequestError, 'generate validates too');
  tt.match(pipeline.validate({ prompt: 'x' }), { width: 64, height: 64, numFrames: 1, numInferenceSteps: 9, guidanceScale: 0, seed: 42, negativePrompt: '' });
});

t.test('progress per stage and step (awaited) with previews; cancellation at a step boundary frees everything', async (tt) => {
  let preview: { width: number; height: number; bytes: number } | null = null;
  const seen = await progressReports(pipeline, { ...SMALL, numInferenceSteps: 3 }, (p) => {
    tt.ok(p.stepMs > 0, 'step time');
    if (p.step === 2) {
      const images = p.preview!();
      tt.equal(images.length, 1);
      preview = { width: images[0]!.width, height: images[0]!.height, bytes: images[0]!.data.length };
    }
  });
  tt.same(seen, stageReports(3, ['encode_prompt', 'prepare_latents']));
  tt.same(preview, { width: 48, height: 32, bytes: 48 * 32 * 3 }, 'the preview decodes the current latents');
  await expectCancelledAtStepBoundary(tt, pipeline, { ...SMALL, guidanceScale: 2 });
});

t.test('the text encoder is released after encoding on the CPU', async (tt) => {
  await expectTextEncoderReleased(tt, pipeline, SMALL);
});

t.test('demo cache: generated once, reused, regenerated when incomplete; dispose frees the model', async (tt) => {
  const dir = await expectDemoCache(tt, 'demo:zimage');
  await expectDisposeFreesAll(tt, dir, SMALL, (p) => {
    tt.ok(p instanceof ZImagePipeline, 'a local folder loads the same pipeline');
    tt.equal(p.info.modelPath, dir);
  });
});

t.test('load errors: mismatched components are named', async (tt) => {
  const dir = await demoModelDir('demo:zimage');
  const copy = join(tmp, 'copy');
  cpSync(dir, copy, { recursive: true });
  const vaeConfig = JSON.parse(readFileSync(join(copy, 'vae', 'config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(copy, 'vae', 'config.json'), JSON.stringify({ ...vaeConfig, latent_channels: 8 }));
  await tt.rejects(loadPipeline(copy), /AutoencoderKL: weight 'encoder\.conv_out\.weight' has shape \[32, 32, 3, 3\], the config needs \[16, 32, 3, 3\]/);
  writeFileSync(join(copy, 'vae', 'config.json'), JSON.stringify(vaeConfig));
  const tc = JSON.parse(readFileSync(join(copy, 'transformer', 'config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(copy, 'transformer', 'config.json'), JSON.stringify({ ...tc, n_layers: 1 }));
  await tt.rejects(loadPipeline(copy), /ZImageTransformer2DModel: the checkpoint holds 15 tensor\(s\) this config does not use: layers\.1\./);
  writeFileSync(join(copy, 'transformer', 'config.json'), JSON.stringify({ ...tc, siglip_feat_dim: 64 }));
  await tt.rejects(loadPipeline(copy), /Omni variant .* is not supported/);
});
