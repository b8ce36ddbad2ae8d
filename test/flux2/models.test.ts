// The FLUX.2 components beyond the golden checks: tensor lists equal the real FLUX.2-klein checkpoints
// (real-configs/*/tensors.derived.tsv); the transformer's batching, position-id forms, token-sliced
// feed-forward and guidance embedding; the VAE's 2x2 patchification and batch-norm normalisation;
// the token layout (packing, position ids); PIL-exact LANCZOS resizing and the reference-image
// preparation against Pillow outputs; the empirical mu; model_index.json settings; and clear errors
// for inputs the models cannot take.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';

import { relL2Error } from '../../lib/check/run.js';
import { resizeLanczos } from '../../lib/pipelines/pil-resample.js';
import * as E from '../../lib/engine/index.js';
import { parseComponentConfig } from '../../lib/io/configs.js';
import { SafetensorsFile } from '../../lib/io/safetensors.js';
import { openWeights } from '../../lib/io/weights.js';
import { flux2TransformerTensorShapes, flux2VaeTensorShapes } from '../../lib/models/flux2/layout.js';
import { concatIds, latentIds, packLatents, referenceIds, textIds, unpackLatents } from '../../lib/models/flux2/tokens.js';
import { Flux2Transformer2DModel } from '../../lib/models/flux2/transformer.js';
import { qwen3TensorShapes } from '../../lib/models/qwen3/layout.js';
import { AutoencoderKLFlux2, patchifyLatents, unpatchifyLatents } from '../../lib/models/vae/autoencoder-kl-flux2.js';
import type { WeightSource } from '../../lib/models/weights.js';
import { computeEmpiricalMu, flux2KleinSettings } from '../../lib/pipelines/flux2-klein.js';
import { checkReferenceImage, imageToTensor, prepareReferenceImage, referenceImageSize } from '../../lib/pipelines/flux2-reference-images.js';
import type { RgbImage } from '../../lib/pipelines/types.js';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures');
const REAL = join(FIXTURES, 'real-configs');
const GOLDEN = join(FIXTURES, 'golden', 'flux2-klein');
const PIL = join(FIXTURES, 'pil-lanczos');

const readJson = (p: string) => JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;
function derived(model: string, component: string): Array<[string, number[]]> {
  return readFileSync(join(REAL, model, component, 'tensors.derived.tsv'), 'utf8')
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const [name, shape] = l.split('\t') as [string, string];
      return [name, JSON.parse(shape) as number[]];
    });
}
const sorted = (s: Array<[string, number[]]>) => [...s].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));

t.test('tensor lists equal the real FLUX.2-klein checkpoints', async (tt) => {
  for (const model of ['FLUX.2-klein-4B', 'FLUX.2-klein-9B']) {
    const tc = parseComponentConfig('Flux2Transformer2DModel', readJson(join(REAL, model, 'transformer', 'config.json')), 'transformer');
    tt.same(sorted(flux2TransformerTensorShapes(tc)), sorted(derived(model, 'transformer')), `${model} transformer: names and shapes`);
  }
  const vc = parseComponentConfig('AutoencoderKLFlux2', readJson(join(REAL, 'FLUX.2-klein-4B', 'vae', 'config.json')), 'vae');
  tt.same(sorted(flux2VaeTensorShapes(vc)), sorted(derived('FLUX.2-klein-4B', 'vae')), 'AutoencoderKLFlux2 with the batch norm');
  const qc = parseComponentConfig('Qwen3ForCausalLM', readJson(join(REAL, 'FLUX.2-klein-4B', 'text_encoder', 'config.json')), 'text_encoder');
  tt.same(sorted(qwen3TensorShapes(qc, 'model.')), sorted(derived('FLUX.2-klein-4B', 'text_encoder')), 'Qwen3-4B text encoder (Qwen3ForCausalLM layout)');
});

t.test('Flux2Transformer2DModel: batching, position-id forms, rotary reuse, token slices, parameter()', async (tt) => {
  const dir = join(GOLDEN, 'model', 'transformer');
  const model = await Flux2Transformer2DModel.load(dir);
  const sliced = await Flux2Transformer2DModel.load(dir, { ffnChunkTokens: 5 });
  const io = SafetensorsFile.open(join(GOLDEN, 'io.safetensors'));
  t.teardown(() => {
    model.dispose();
    sliced.dispose();
    io.dispose();
  });
  tt.same([model.inner, model.mlpHidden, model.outChannels, model.inChannels], [32, 96, 128, 128]);
  E.scope(() => {
    const x = io.tensor('transformer/hidden_states');
    const ctx = io.tensor('transformer/encoder_hidden_states');
    const ts = io.tensor('transformer/timestep');
    const img = io.tensor('transformer/img_ids');
    const txt = io.tensor('transformer/txt_ids');
    const ref = io.tensor('transformer/sample').toFloat32();
    const both = model.forward(x, ctx, ts, img, txt);
    tt.ok(relL2Error(both.toFloat32(), ref) < 1e-5, 'the golden forward');
    // the pipeline's forms: ids as numbers from the token layout, rotary tables computed once
    const imgIds = latentIds(4, 6);
    const txtIds = textIds(40);
    tt.same(Array.from(imgIds), img.select(0, 0).toArray(), 'latentIds = the reference img_ids');
    tt.same(Array.from(txtIds), txt.select(0, 1).toArray(), 'textIds = the reference txt_ids');
    const rotary = model.rotaryTables(txtIds, imgIds, 'cpu');
    tt.same(rotary.cos.shape, [64, 8], '[text + image tokens, head_dim / 2]');
    const viaNumbers = model.forward(x, ctx, ts, imgIds, txtIds, null, rotary);
    tt.equal(relL2Error(viaNumbers.toFloat32(), both.toFloat32()), 0, 'Int32Array ids and given rotary tables: identical');
    for (let i = 0; i < 2; ++i) {
      const one = model.forward(x.slice(0, i, i + 1), ctx.slice(0, i, i + 1), ts.slice(0, i, i + 1), imgIds, txtIds);
      tt.ok(relL2Error(one.toFloat32(), both.slice(0, i, i + 1).toFloat32()) < 1e-6, `item ${i} of the batch = alone`);
    }
    const viaSlices = sliced.forward(x, ctx, ts, img, txt);
    tt.ok(relL2Error(viaSlices.toFloat32(), both.toFloat32()) < 1e-6, 'feed-forward in 5-token slices = whole');
    // reference tokens change the noisy tokens' output through attention only
    const refX = io.tensor('transformer_ref/hidden_states');
    const refIdsT = io.tensor('transformer_ref/img_ids');
    const refIds = concatIds([latentIds(4, 6), referenceIds([[5, 5]])]);
    tt.same(Array.from(refIds), refIdsT.select(0, 0).toArray(), 'reference ids: t = 10 over the 5x5 grid after the noise grid');
    const withRef = model.forward(refX, io.tensor('transformer_ref/encoder_hidden_states'), io.tensor('transformer_ref/timestep'), refIds, txtIds);
    tt.ok(relL2Error(withRef.toFloat32(), io.tensor('transformer_ref/sample').toFloat32()) < 1e-5, 'the golden forward with reference tokens');

    const q = model.parameter('transformer_blocks.1.attn.to_q.weight');
    tt.same([q.dtype, q.shape], ['bfloat16', [32, 32]], 'the stored bf16 matrix');
    tt.equal(E.storageInfo(q).kind, 'mapped', 'the mapped view itself (LoRA merges into it)');
    tt.same(model.parameter('single_transformer_blocks.0.attn.norm_q.weight').dtype, 'float32');
    tt.throws(() => model.parameter('transformer_blocks.7.attn.to_q.weight'), /has no parameter/);

    tt.throws(() => model.forward(E.randn([1, 24, 64], { seed: 1 }), ctx.slice(0, 0, 1), ts.slice(0, 0, 1), imgIds, txtIds), /hidden_states must be \[B, S, 128\], got \[1,24,64\]/);
    tt.throws(() => model.forward(x, E.randn([2, 40, 16], { seed: 1 }), ts, imgIds, txtIds), /encoder_hidden_states must be \[2, L, 24\]/);
    tt.throws(() => model.forward(x, ctx, ts.slice(0, 0, 1), imgIds, txtIds), /timestep must have 2 values/);
    tt.throws(() => model.forward(x, ctx, ts, latentIds(4, 5), txtIds), /img_ids give 20 positions for 24 image tokens/);
    tt.throws(() => model.forward(x, ctx, ts, imgIds, textIds(39)), /txt_ids give 39 positions for 40 text tokens/);
    tt.throws(() => model.forward(x, ctx, ts, E.zeros([24, 3], { dtype: 'int32' }), txtIds), /img_ids must be \[N, 4\] or \[B, N, 4\], got \[24,3\]/);
    tt.throws(() => model.forward(x, ctx, ts, imgIds, txtIds, null, model.rotaryTables(textIds(10), imgIds, 'cpu')), /rotary tables cover 34 tokens, the sequence has 64/);
  });
  await tt.rejects(Flux2Transformer2DModel.load(dir, { ffnChunkTokens: 0 }), /ffnChunkTokens must be a positive integer/);
});

/** The golden transformer's weights with a guidance embedder added (random), as a guidance-distilled config. */
function withGuidanceEmbedder(source: WeightSource, width: number, channels: number): WeightSource {
  const extra = new Map<string, E.Tensor>([
    ['time_guidance_embed.guidance_embedder.linear_1.weight', E.keep(E.mul(E.randn([width, channels], { seed: 11 }), 0.1))],
    ['time_guidance_embed.guidance_embedder.linear_2.weight', E.keep(E.mul(E.randn([width, width], { seed: 12 }), 0.1))],
  ]);
  return {
    get: (n) => extra.get(n) ?? source.get(n),
    has: (n) => extra.has(n) || source.has(n),
    info: (n) => (extra.has(n) ? { dtype: 'float32', shape: extra.get(n)!.shape } : source.info(n)),
    names: () => [...source.names(), ...extra.keys()],
  };
}

t.test('Flux2Transformer2DModel: guidance embedding (guidance_embeds) and unsupported configs', async (tt) => {
  const dir = join(GOLDEN, 'model', 'transformer');
  const config = parseComponentConfig('Flux2Transformer2DModel', readJson(join(dir, 'config.json')), 'transformer');
  const weights = await openWeights(dir);
  t.teardown(() => weights.dispose());
  const plain = new Flux2Transformer2DModel(weights, config);
  const guided = new Flux2Transformer2DModel(withGuidanceEmbedder(weights, 32, 256), { ...config, guidance_embeds: true });
  E.scope(() => {
    const x = E.randn([1, 6, 128], { seed: 1 });
    const ctx = E.randn([1, 3, 24], { seed: 2 });
    const ts = E.tensor([0.6], [1]);
    const [img, txt] = [latentIds(2, 3), textIds(3)];
    const base = plain.forward(x, ctx, ts, img, txt).toFloat32();
    tt.equal(relL2Error(plain.forward(x, ctx, ts, img, txt, E.tensor([4], [1])).toFloat32(), base), 0, 'without a guidance embedder, guidance is ignored');
    tt.equal(relL2Error(guided.forward(x, ctx, ts, img, txt).toFloat32(), base), 0, 'with one, no guidance = the timestep embedding alone');
    tt.ok(relL2Error(guided.forward(x, ctx, ts, img, txt, E.tensor([4], [1])).toFloat32(), base) > 1e-3, 'and a guidance value changes the output');
    tt.throws(() => guided.forward(x, ctx, ts, img, txt, E.tensor([4, 4], [2])), /guidance must have 1 values/);
  });
  plain.dispose();
  guided.dispose();
  tt.throws(() => new Flux2Transformer2DModel(weights, { ...config, guidance_embeds: true }), /guidance_embedder\.linear_1\.weight' \[32, 256\] is missing/);
  tt.throws(() => new Flux2Transformer2DModel(weights, { ...config, axes_dims_rope: [4, 4, 4, 2] }), /must add up to attention_head_dim 16/);
  tt.throws(() => new Flux2Transformer2DModel(weights, { ...config, axes_dims_rope: [8, 8] }), /axes_dims_rope must have 4 entries/);
  tt.throws(() => new Flux2Transformer2DModel(weights, { ...config, patch_size: 2 }), /patch_size 2 is not supported/);
});

t.test('AutoencoderKLFlux2: 2x2 patchification, batch-norm normalisation, decode of pipeline latents, bad inputs', async (tt) => {
  const dir = join(GOLDEN, 'model', 'vae');
  const vae = await AutoencoderKLFlux2.load(dir);
  const bn = SafetensorsFile.open(join(dir, 'diffusion_pytorch_model.safetensors'));
  t.teardown(() => {
    vae.dispose();
    bn.dispose();
  });
  tt.same([vae.scaleFactor, vae.latentChannels, vae.weightDtype], [8, 32, 'float32']);
  E.scope(() => {
    const z = E.randn([2, 32, 6, 8], { seed: 1 });
    const p = patchifyLatents(z);
    tt.same(p.shape, [2, 128, 3, 4]);
    const zv = z.toFloat32();
    const pv = p.contiguous().toFloat32();
    // channel c*4 + dy*2 + dx of patch (y, x) is z[c, 2y + dy, 2x + dx]
    const at = (b: number, c: number, y: number, x: number) => zv[((b * 32 + c) * 6 + y) * 8 + x]!;
    tt.equal(pv[((1 * 128 + (5 * 4 + 1 * 2 + 0)) * 3 + 2) * 4 + 3], at(1, 5, 2 * 2 + 1, 2 * 3 + 0), 'channel index c*4 + dy*2 + dx');
    tt.equal(relL2Error(unpatchifyLatents(p).contiguous().toFloat32(), zv), 0, 'unpatchify inverts patchify');
    const mean = bn.tensor('bn.running_mean').toFloat32();
    const variance = bn.tensor('bn.running_var').toFloat32();
    const n = vae.normalizePatchified(p).toFloat32();
    const k = (b: number, c: number, i: number) => (b * 128 + c) * 12 + i;
    let worst = 0;
    for (let c = 0; c < 128; ++c) {
      const std = Math.fround(Math.sqrt(Math.fround(variance[c]! + 1e-4)));
      const want = Math.fround(Math.fround(pv[k(0, c, 7)]! - mean[c]!) / std);
      worst = Math.max(worst, Math.abs(n[k(0, c, 7)]! - want));
    }
    tt.equal(worst, 0, '(x - running_mean) / sqrt(running_var + eps), float32 as the reference');
    tt.ok(relL2Error(vae.denormalizePatchified(vae.normalizePatchified(p)).toFloat32(), pv) < 1e-6, 'denormalize inverts normalize');
    tt.same(vae.decodePatchified(p).shape, [2, 3, 48, 64], 'patchified latents decode at 16x');
    tt.same(vae.encodeToPatchified(E.randn([1, 3, 32, 48], { seed: 2 })).shape, [1, 128, 2, 3]);
    tt.throws(() => patchifyLatents(E.randn([1, 32, 5, 8], { seed: 3 })), /even H and W, got \[1,32,5,8\]/);
    tt.throws(() => vae.normalizePatchified(E.randn([1, 64, 2, 2], { seed: 3 })), /patchified latents must be \[B, 128, h, w\], got \[1,64,2,2\]/);
    tt.throws(() => vae.decode(E.randn([1, 16, 4, 4], { seed: 3 })), /latents must be \[B, 32, h, w\], got \[1,16,4,4\]/);
    tt.throws(() => vae.encode(E.randn([1, 3, 30, 48], { seed: 3 })), /image size 30x48 is not a multiple of 8/);
  });
  const config = parseComponentConfig('AutoencoderKLFlux2', readJson(join(dir, 'config.json')), 'vae');
  const weights = await openWeights(dir);
  t.teardown(() => weights.dispose());
  const withoutCounter: WeightSource = {
    get: (n) => weights.get(n),
    has: (n) => n !== 'bn.num_batches_tracked' && weights.has(n),
    info: (n) => weights.info(n),
    names: () => weights.names().filter((n) => n !== 'bn.num_batches_tracked'),
  };
  const noCounter = new AutoencoderKLFlux2(withoutCounter, config);
  tt.pass('a checkpoint without bn.num_batches_tracked loads (nothing reads it)');
  noCounter.dispose();
  tt.throws(() => new AutoencoderKLFlux2(weights, { ...config, patch_size: [1, 1] }), /patch_size \[1,1\] is not supported/);
});

t.test('token layout: packing and position ids', async (tt) => {
  E.scope(() => {
    const x = E.randn([2, 128, 3, 5], { seed: 1 });
    const packed = packLatents(x);
    tt.same(packed.shape, [2, 15, 128]);
    tt.equal(packed.toFloat32()[(1 * 15 + 2 * 5 + 4) * 128 + 7], x.toFloat32()[((1 * 128 + 7) * 3 + 2) * 5 + 4], 'token y*w + x holds the channels of (y, x)');
    tt.equal(relL2Error(unpackLatents(packed, 3, 5).contiguous().toFloat32(), x.toFloat32()), 0, 'unpack inverts pack');
    tt.throws(() => unpackLatents(packed, 4, 5), /packed latents must be \[B, 20, C\] for a 4x5 grid/);
  });
  tt.same(Array.from(latentIds(2, 2)), [0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 1, 0]);
  tt.same(Array.from(referenceIds([[1, 2], [1, 1]])), [10, 0, 0, 0, 10, 0, 1, 0, 20, 0, 0, 0], 'image i at t = 10 (i + 1)');
  tt.same(Array.from(textIds(3)), [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2]);
});

interface PilCase {
  kind: 'resize' | 'reference';
  width: number;
  height: number;
  out_width: number;
  out_height: number;
  max_area?: number;
  file: string;
}

/** The test pattern the Pillow outputs were made from (cases.json). */
function pattern(width: number, height: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; ++y)
    for (let x = 0; x < width; ++x)
      for (let c = 0; c < 3; ++c)
        data[(y * width + x) * 3 + c] = (7 * x + 13 * y + 50 * c + ((x * y) % 31) + 90 * ((Math.floor(x / 5) + Math.floor(y / 3) + c) % 2)) % 256;
  return { width, height, data };
}

t.test('PIL LANCZOS resizing and reference-image preparation equal Pillow byte for byte', async (tt) => {
  const spec = readJson(join(PIL, 'cases.json')) as { pillow: string; cases: PilCase[] };
  for (const c of spec.cases) {
    const want = new Uint8Array(readFileSync(join(PIL, c.file)));
    const src = pattern(c.width, c.height);
    const got =
      c.kind === 'resize' ? resizeLanczos(src, c.out_width, c.out_height) : prepareReferenceImage(src, 16, c.max_area);
    tt.same([got.width, got.height], [c.out_width, c.out_height], `${c.file}: size`);
    let mismatches = 0;
    for (let i = 0; i < want.length; ++i) if (got.data[i] !== want[i]) ++mismatches;
    tt.equal(mismatches, 0, `${c.file}: identical bytes to Pillow ${spec.pillow}`);
    if (c.kind === 'reference') tt.same(referenceImageSize(c.width, c.height, 16, c.max_area), { width: c.out_width, height: c.out_height }, `${c.file}: referenceImageSize`);
  }
  const img = pattern(72, 100);
  tt.equal(resizeLanczos(img, 72, 100).data.length, img.data.length, 'same size: a copy');
  tt.throws(() => resizeLanczos(img, 0, 10), /positive integers, got 0x10/);
  // over the area limit: sides scaled by sqrt(1024^2 / area) and truncated, then floored to 16
  tt.same(referenceImageSize(2000, 1000, 16), { width: 1440, height: 720 }, '2000x1000 -> 1448x724 -> 1440x720');
  const cropped = prepareReferenceImage(img, 16);
  tt.same([cropped.width, cropped.height], [64, 96], 'centre crop to multiples of 16');
  tt.same(Array.from(cropped.data.slice(0, 3)), Array.from(img.data.slice((2 * 72 + 4) * 3, (2 * 72 + 4) * 3 + 3)), 'left (72-64)/2 = 4, top (100-96)/2 = 2');
  E.scope(() => {
    const x = imageToTensor({ width: 2, height: 1, data: Uint8Array.from([0, 255, 128, 1, 2, 3]) });
    tt.same(x.shape, [1, 3, 1, 2]);
    const f = Math.fround;
    tt.same(Array.from(x.toFloat32()), [0, 1, 255, 2, 128, 3].map((v) => f(2 * f(v / 255) - 1)), 'CHW, 2 (v / 255) - 1 in float32');
  });
  tt.throws(() => checkReferenceImage(pattern(63, 100), 'image'), /image is too small: 63x100; both sides must be at least 64 pixels/);
  tt.throws(() => checkReferenceImage(pattern(600, 64), 'image[1]'), /image\[1\] has an aspect ratio too extreme for FLUX\.2: 600x64 \(9\.4:1, at most 8:1\)/);
  checkReferenceImage(pattern(512, 64), 'image');
  tt.pass('8:1 is accepted');
});

t.test('empirical mu and model_index.json settings', async (tt) => {
  const spec = readJson(join(GOLDEN, 'case.json')) as { checks: Array<{ name: string; params: { entries?: Array<{ num_inference_steps: number; image_seq_len: number; mu: number }> } }> };
  for (const e of spec.checks.find((c) => c.name === 'scheduler')!.params.entries!)
    tt.equal(computeEmpiricalMu(e.image_seq_len, e.num_inference_steps), e.mu, `mu(${e.image_seq_len} tokens, ${e.num_inference_steps} steps)`);
  tt.same(flux2KleinSettings({ is_distilled: true }), {
    defaults: { width: 1024, height: 1024, numFrames: 1, fps: 0, numInferenceSteps: 4, guidanceScale: 1, negativePrompt: '' },
    isDistilled: true,
    textEncoderOutLayers: [9, 18, 27],
  });
  const base = flux2KleinSettings({ is_distilled: false, _sampling_defaults: { width: 64, guidance_scale: 2.5 }, _text_encoder_out_layers: [1, 2, 3] });
  tt.same([base.defaults.numInferenceSteps, base.defaults.guidanceScale, base.defaults.width, base.textEncoderOutLayers], [50, 2.5, 64, [1, 2, 3]]);
  tt.throws(() => flux2KleinSettings({ is_distilled: 'yes' }), /is_distilled must be a boolean/);
  tt.throws(() => flux2KleinSettings({ _sampling_defaults: { steps: 3 } }), /_sampling_defaults\.steps is not a sampling default/);
  tt.throws(() => flux2KleinSettings({ _sampling_defaults: { width: '64' } }), /_sampling_defaults\.width must be a number/);
  tt.throws(() => flux2KleinSettings({ _text_encoder_out_layers: [] }), /_text_encoder_out_layers must be a non-empty list/);
});
