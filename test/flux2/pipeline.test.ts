// Flux2KleinPipeline through loadPipeline('demo:flux2-klein'): info and defaults, seeded determinism,
// output types, given latents, image editing (reference images: default size, order, several images,
// shared by every output), CFG on an undistilled copy (neg + g (cond - neg), negative prompt) and its
// absence on the distilled model, request validation, progress with previews, cancellation, memory
// release, and load errors naming the mismatch.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

import { relL2Error } from '../../lib/check/run.js';
import * as E from '../../lib/engine/index.js';
import { computeEmpiricalMu, Flux2KleinPipeline, type Flux2KleinRunParams, flux2DefaultSigmas } from '../../lib/pipelines/flux2-klein.js';
import { demoModelDir, loadPipeline } from '../../lib/pipelines/load.js';
import { type GenerateRequest, RequestError, type RgbImage } from '../../lib/pipelines/types.js';
import {
  expectCancelledAtStepBoundary, expectDisposeFreesAll, expectRequestErrors, expectTextEncoderReleased, progressReports, stageReports,
} from '../helpers/pipeline.js';

const tmp = mkdtempSync(join(tmpdir(), 'nd-flux2-pipeline-'));
process.env.ND_DEMO_CACHE = join(tmp, 'demo');
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

const SMALL: GenerateRequest = { prompt: 'a red fox trotting through snow', width: 48, height: 32, numInferenceSteps: 2 };

let pipeline: Flux2KleinPipeline;
let undistilled: Flux2KleinPipeline;
t.before(async () => {
  const p = await loadPipeline('demo:flux2-klein');
  if (!(p instanceof Flux2KleinPipeline)) throw new Error('demo:flux2-klein did not load a Flux2KleinPipeline');
  pipeline = p;
  // the same weights as a klein base model (is_distilled false): CFG runs when guidance_scale > 1
  const copy = join(tmp, 'undistilled');
  cpSync(await demoModelDir('demo:flux2-klein'), copy, { recursive: true });
  const index = JSON.parse(readFileSync(join(copy, 'model_index.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(copy, 'model_index.json'), JSON.stringify({ ...index, is_distilled: false }));
  const u = await loadPipeline(copy);
  if (!(u instanceof Flux2KleinPipeline)) throw new Error('the undistilled copy did not load a Flux2KleinPipeline');
  undistilled = u;
});
t.teardown(() => {
  pipeline.dispose();
  undistilled.dispose();
});

const bytesOf = (r: { outputs: Array<Array<{ data: Uint8Array }>> }) => r.outputs.map((frames) => Buffer.from(frames[0]!.data));

/** The float images [0, 1] of a request, one array per output. */
async function floats(req: GenerateRequest): Promise<Float32Array[]> {
  const r = await pipeline.generate({ ...req, outputType: 'float' });
  const [b, h, w] = r.floatOutput!.shape as [number, number, number];
  const all = r.floatOutput!.toFloat32();
  E.disposeAll([r.latents, r.floatOutput]);
  return Array.from({ length: b }, (_, i) => all.slice(i * h * w * 3, (i + 1) * h * w * 3));
}

/** A smooth test picture (gradients and a square), so VAE encodings differ between pictures. */
function picture(width: number, height: number, phase: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; ++y)
    for (let x = 0; x < width; ++x) {
      const inSquare = Math.abs(x - width / 2) < width / 5 && Math.abs(y - height / 2) < height / 5;
      data.set([(x * 255) / width, (y * 255) / height, inSquare ? 255 - phase : phase].map(Math.round), (y * width + x) * 3);
    }
  return { width, height, data };
}

t.test('pipeline info and defaults', async (tt) => {
  tt.match(pipeline.info, {
    modelPath: 'demo:flux2-klein',
    pipelineClass: 'Flux2KleinPipeline',
    pipelineName: 'Flux2KleinPipeline',
    taskType: 'TI2I',
    device: 'cpu',
    ditPrecision: 'bf16',
    vaePrecision: 'fp32',
    maxInputImages: 4,
    loraTargets: ['transformer'],
  });
  // klein-4B's (distilled) defaults, the size shrunk by the demo folder
  tt.same(pipeline.info.defaults, { width: 64, height: 64, numFrames: 1, fps: 0, numInferenceSteps: 4, guidanceScale: 1, negativePrompt: '' });
  tt.same([pipeline.settings.isDistilled, pipeline.settings.textEncoderOutLayers], [true, [9, 18, 27]]);
  tt.same([undistilled.settings.isDistilled, undistilled.info.defaults.numInferenceSteps, undistilled.info.defaults.guidanceScale], [false, 50, 4]);
  tt.same([pipeline.sizeMultiple, pipeline.usesCfg(4), undistilled.usesCfg(4), undistilled.usesCfg(1)], [16, false, true, false]);
  tt.same(flux2DefaultSigmas(4), [1, 0.75, 0.5, 0.25]);
  tt.equal(computeEmpiricalMu(5000, 4), 0.00016927 * 5000 + 0.45666666, 'past 4300 tokens: the 200-step fit alone');
});

t.test('text-to-image: requested size, deterministic per seed, seed + i per output, prompts batch as alone', async (tt) => {
  const a = await pipeline.generate({ ...SMALL, seed: 7 });
  const img = a.outputs[0]![0]!;
  tt.same([a.outputs.length, img.width, img.height, img.data.length], [1, 48, 32, 48 * 32 * 3]);
  tt.same([a.width, a.height, a.numFrames, a.fps, a.seed], [48, 32, 1, 0, 7]);
  tt.ok(a.timings.encode_prompt! > 0 && a.timings.denoise! > 0 && a.timings.decode! > 0, 'stage timings');
  tt.equal(a.timings.encode_images, undefined, 'no reference images to encode');
  tt.ok(a.peakMemoryMb > 0, 'peak memory reported');
  tt.ok(bytesOf(a)[0]!.equals(bytesOf(await pipeline.generate({ ...SMALL, seed: 7 }))[0]!), 'same seed, same image');
  const other = await pipeline.generate({ ...SMALL, seed: 8 });
  tt.notOk(bytesOf(a)[0]!.equals(bytesOf(other)[0]!), 'another seed, another image');
  // batched items equal single runs up to GEMM rounding (row blocking differs with the batch size)
  const one = await floats({ ...SMALL, seed: 7 });
  const next = await floats({ ...SMALL, seed: 8 });
  const two = await floats({ ...SMALL, seed: 7, numOutputs: 2 });
  tt.ok(relL2Error(two[0]!, one[0]!) < 1e-5 && relL2Error(two[1]!, next[0]!) < 1e-5, 'outputs use seed and seed + 1');
  tt.ok(relL2Error(one[0]!, next[0]!) > 0.01, 'and seeds differ');
  const prompts = await floats({ ...SMALL, prompt: ['a red fox trotting through snow', 'a lighthouse at night'], seed: 7 });
  const lighthouse = await floats({ ...SMALL, prompt: 'a lighthouse at night', seed: 8 });
  tt.ok(relL2Error(prompts[0]!, one[0]!) < 1e-5 && relL2Error(prompts[1]!, lighthouse[0]!) < 1e-5, 'a batch of prompts: each as alone');
  const defaults = await pipeline.generate({ prompt: 'x', numInferenceSteps: 1 });
  tt.same([defaults.width, defaults.height], [64, 64]);
});

t.test('output types and given latents', async (tt) => {
  const latent = await pipeline.generate({ ...SMALL, outputType: 'latent' });
  tt.same(latent.latents!.shape, [1, 32, 4, 6], 'what the VAE decodes: [B, 32, H/8, W/8]');
  tt.equal(latent.outputs.length, 0, 'no decode');
  const float = await pipeline.generate({ ...SMALL, outputType: 'float' });
  const rgb = await pipeline.generate(SMALL);
  const v = float.floatOutput!.toFloat32();
  tt.same(float.floatOutput!.shape, [1, 32, 48, 3]);
  tt.ok(v.every((x) => x >= 0 && x <= 1), 'float image in [0, 1]');
  const bytes = bytesOf(rgb)[0]!;
  let maxDiff = 0;
  for (let i = 0; i < v.length; ++i) maxDiff = Math.max(maxDiff, Math.abs(Math.round(v[i]! * 255) - bytes[i]!));
  tt.equal(maxDiff, 0, 'rgb = round(255 x)');
  tt.same(float.latents!.toArray(), latent.latents!.toArray(), 'same latents whatever the output type');
  // the noise is drawn unpacked, [128, H/16, W/16] per output
  const noise = E.randn([1, 128, 2, 3], { seed: 42 });
  const copy = noise.toArray();
  const given = await pipeline.generate({ ...SMALL, latents: noise, seed: 999 });
  tt.ok(bytesOf(given)[0]!.equals(bytesOf(await pipeline.generate({ ...SMALL, seed: 42 }))[0]!), 'randn(seed 42) as latents == seed 42');
  tt.same(noise.toArray(), copy, 'caller latents untouched');
  E.disposeAll([noise, latent.latents, float.latents, float.floatOutput]);
});

t.test('image editing: reference images condition the result; size defaults to the first prepared image', async (tt) => {
  const ref = picture(72, 100, 40);
  const edit = await pipeline.generate({ prompt: 'make it blue', images: [ref], numInferenceSteps: 2, seed: 3 });
  tt.same([edit.width, edit.height], [64, 96], '72x100 -> centre crop 64x96');
  tt.ok(edit.timings.encode_images! > 0, 'reference encoding timed');
  const plain = await pipeline.generate({ prompt: 'make it blue', width: 64, height: 96, numInferenceSteps: 2, seed: 3 });
  tt.notOk(bytesOf(edit)[0]!.equals(bytesOf(plain)[0]!), 'the reference changes the image');
  const sized = await pipeline.generate({ prompt: 'make it blue', images: [ref], width: 48, height: 32, numInferenceSteps: 2, seed: 3 });
  tt.same([sized.width, sized.height], [48, 32], 'an explicit size wins');
  const other = picture(72, 100, 200);
  const a = await pipeline.generate({ prompt: 'combine', images: [ref, other], numInferenceSteps: 2, seed: 3 });
  const b = await pipeline.generate({ prompt: 'combine', images: [other, ref], numInferenceSteps: 2, seed: 3 });
  tt.notOk(bytesOf(a)[0]!.equals(bytesOf(b)[0]!), 'order matters (t = 10, 20 per image)');
  tt.notOk(bytesOf(a)[0]!.equals(bytesOf(edit)[0]!), 'a second reference changes the image');
  const wide = await pipeline.generate({ prompt: 'combine', images: [picture(160, 64, 90), ref], numInferenceSteps: 1, seed: 3 });
  tt.same([wide.width, wide.height], [160, 64], 'the first image sets the size; references of different sizes mix');
  const shared = await floats({ prompt: 'make it blue', images: [ref], numInferenceSteps: 2, seed: 3, numOutputs: 2 });
  const first = await floats({ prompt: 'make it blue', images: [ref], numInferenceSteps: 2, seed: 3 });
  const second = await floats({ prompt: 'make it blue', images: [ref], numInferenceSteps: 2, seed: 4 });
  tt.ok(relL2Error(shared[0]!, first[0]!) < 1e-5 && relL2Error(shared[1]!, second[0]!) < 1e-5, 'every output sees the references');
  const big = pipeline.validate({ prompt: 'x', images: [picture(1100, 1000, 0)] });
  tt.same([big.width, big.height], [1072, 976], 'over 1024^2: area-limited (1073x975) then floored to 16');
  // what the pipeline encodes: [1, R, 128] tokens at t = 10, 20
  const encoded = pipeline.encodeReferenceImages([ref, picture(160, 64, 90)]);
  tt.same(encoded.latents.shape, [1, 4 * 6 + 10 * 4, 128]);
  tt.same([encoded.ids[0], encoded.ids[4 * 24], encoded.ids[4 * 24 + 2 + 4 * 9]], [10, 20, 9]);
  encoded.latents.dispose();
});

/** Runs on fixed latents without decoding and returns the packed latents after each step. */
async function steps(p: Flux2KleinPipeline, overrides: Partial<Flux2KleinRunParams>): Promise<E.Tensor[]> {
  const latents = E.randn([1, 128, 2, 3], { seed: 3 });
  const out: E.Tensor[] = [];
  const r = await p.run({
    prompts: ['a red fox trotting through snow'],
    negativePrompt: '',
    width: 48,
    height: 32,
    numInferenceSteps: 2,
    guidanceScale: 1,
    numOutputs: 1,
    seed: 0,
    images: [],
    latents,
    decode: false,
    onStepLatents: (_, x) => out.push(E.keep(x.clone())),
    ...overrides,
  });
  E.disposeAll([r.latents, r.packedLatents, latents]);
  return out;
}

t.test('CFG: neg + g (cond - neg) on an undistilled model, the negative prompt used; none on the distilled model', async (tt) => {
  const cond = await steps(undistilled, { guidanceScale: 1 });
  const g2 = await steps(undistilled, { guidanceScale: 2 });
  const g3 = await steps(undistilled, { guidanceScale: 3 });
  const negative = await steps(undistilled, { guidanceScale: 3, negativePrompt: 'blurry, low quality' });
  const distilled = await steps(pipeline, { guidanceScale: 3 });
  const distilledPlain = await steps(pipeline, { guidanceScale: 1 });
  E.scope(() => {
    // after one Euler step x1 = x0 + dt pred, so x1 is affine in g: x1(3) - x1(2) = x1(2) - x1(1)
    const d32 = E.sub(g3[0]!, g2[0]!);
    const d21 = E.sub(g2[0]!, cond[0]!);
    tt.ok(relL2Error(d21.toFloat32(), new Float32Array(d21.numel)) > 0, 'guidance 2 differs from no CFG');
    tt.ok(relL2Error(d32.toFloat32(), d21.toFloat32()) < 1e-4, 'the first step is affine in g (pred = neg + g (cond - neg))');
    tt.ok(relL2Error(negative[0]!.toFloat32(), g3[0]!.toFloat32()) > 1e-3, 'a negative prompt replaces ""');
    tt.equal(relL2Error(distilled[1]!.toFloat32(), distilledPlain[1]!.toFloat32()), 0, 'a distilled model ignores guidance_scale');
  });
  E.disposeAll([cond, g2, g3, negative, distilled, distilledPlain]);
});

t.test('validation: clear RequestErrors naming the parameter', async (tt) => {
  const tiny = picture(63, 80, 0);
  const bad: Array<[Partial<GenerateRequest>, string, RegExp]> = [
    [{ width: 40 }, 'size', /multiples of 16, got 40x32/],
    [{ height: 8 }, 'height', /\[16, 4096\]/],
    [{ width: 8192 }, 'width', /\[16, 4096\]/],
    [{ numFrames: 5 }, 'num_frames', /makes images: num_frames must be 1/],
    [{ numInferenceSteps: 0 }, 'num_inference_steps', /\[1, 1000\]/],
    [{ guidanceScale: -1 }, 'guidance_scale', /\[0, 100\]/],
    [{ numOutputs: 11 }, 'n', /\[1, 10\]/],
    [{ seed: -1 }, 'seed', /seed/],
    [{ prompt: [] }, 'prompt', /non-empty list/],
    [{ negativePrompt: 3 as unknown as string }, 'negative_prompt', /string/],
    [{ outputType: 'png' as never }, 'output_type', /rgb, float or latent/],
    [{ images: [tiny] }, 'image', /image is too small: 63x80; both sides must be at least 64 pixels/],
    [{ images: [picture(64, 64, 0), tiny] }, 'image[1]', /image\[1\] is too small/],
    [{ images: [picture(640, 64, 0)] }, 'image', /aspect ratio too extreme for FLUX\.2: 640x64 \(10\.0:1, at most 8:1\)/],
    [{ images: Array.from({ length: 5 }, () => picture(64, 64, 0)) }, 'image', /at most 4 reference images, got 5/],
  ];
  expectRequestErrors(tt, pipeline, SMALL, bad);
  const wrong = E.zeros([1, 128, 4, 6]);
  tt.throws(() => pipeline.validate({ ...SMALL, latents: wrong }), /latents must be \[1,128,2,3\]/);
  wrong.dispose();
  await tt.rejects(pipeline.generate({ ...SMALL, images: [tiny] }), RequestError, 'generate validates too');
  tt.match(pipeline.validate({ prompt: 'x' }), { width: 64, height: 64, numFrames: 1, numInferenceSteps: 4, guidanceScale: 1, seed: 42, negativePrompt: '' });
});

t.test('progress per stage and step with previews; cancellation at a step boundary frees everything', async (tt) => {
  let preview: { width: number; height: number; bytes: number } | null = null;
  const seen = await progressReports(pipeline, { ...SMALL, images: [picture(64, 64, 10)], numInferenceSteps: 3 }, (p) => {
    if (p.step === 2) {
      const images = p.preview!();
      preview = { width: images[0]!.width, height: images[0]!.height, bytes: images[0]!.data.length };
    }
  });
  tt.same(seen, stageReports(3, ['encode_prompt', 'encode_images', 'prepare_latents']));
  tt.same(preview, { width: 48, height: 32, bytes: 48 * 32 * 3 }, 'the preview decodes the current latents');

  const live = E.memoryStats().liveTensors;
  await expectCancelledAtStepBoundary(tt, undistilled, { ...SMALL, images: [picture(64, 64, 10)] });
  await pipeline.generate({ ...SMALL, images: [picture(64, 64, 10)], outputType: 'rgb' });
  tt.equal(E.memoryStats().liveTensors, live, 'nor by a finished one');
});

t.test('the text encoder is released after encoding on the CPU; dispose frees the model', async (tt) => {
  await expectTextEncoderReleased(tt, pipeline, SMALL);
  await expectDisposeFreesAll(tt, await demoModelDir('demo:flux2-klein'), SMALL);
});

t.test('load errors: mismatched components are named', async (tt) => {
  const copy = join(tmp, 'broken');
  cpSync(await demoModelDir('demo:flux2-klein'), copy, { recursive: true });
  const edit = (file: string, patch: Record<string, unknown>) => {
    const path = join(copy, file);
    const original = readFileSync(path, 'utf8');
    writeFileSync(path, JSON.stringify({ ...(JSON.parse(original) as object), ...patch }));
    return () => writeFileSync(path, original);
  };
  let undo = edit('transformer/config.json', { joint_attention_dim: 32 });
  await tt.rejects(loadPipeline(copy), /3 stacked hidden states of width 16 make 48 features, the transformer takes joint_attention_dim 32/);
  undo();
  undo = edit('model_index.json', { _text_encoder_out_layers: [9, 18, 29] });
  await tt.rejects(loadPipeline(copy), /the text encoder has 28 layers, the pipeline reads hidden state 29/);
  undo();
  undo = edit('scheduler/scheduler_config.json', { use_dynamic_shifting: false });
  await tt.rejects(loadPipeline(copy), /needs a scheduler with use_dynamic_shifting/);
  undo();
  undo = edit('vae/config.json', { latent_channels: 16 });
  await tt.rejects(loadPipeline(copy), /AutoencoderKLFlux2: weight 'encoder\.conv_out\.weight' has shape \[64, 32, 3, 3\], the config needs \[32, 32, 3, 3\]/);
  undo();
  undo = edit('transformer/config.json', { num_single_layers: 1 });
  await tt.rejects(loadPipeline(copy), /Flux2Transformer2DModel: the checkpoint holds 4 tensor\(s\) this config does not use: single_transformer_blocks\.1\./);
  undo();
  const p = await loadPipeline(copy);
  tt.ok(p instanceof Flux2KleinPipeline, 'restored folder loads');
  p.dispose();
});
