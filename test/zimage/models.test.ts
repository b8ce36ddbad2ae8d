// The Z-Image components beyond the golden checks: the tensor lists the model code expects equal the
// real checkpoints' (real-configs/Z-Image-Turbo/*/tensors.derived.tsv); Qwen3 hidden states as
// FLUX.2-klein reads them (layers 9/18/27 stacked, padded rows kept) against that golden case; partial
// layer loading; padding independence; and clear errors for inputs the models cannot take.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';

import { relL2Error } from '../../lib/check/run.js';
import * as E from '../../lib/engine/index.js';
import { parseComponentConfig } from '../../lib/io/configs.js';
import { SafetensorsFile } from '../../lib/io/safetensors.js';
import { Qwen3TextEncoder } from '../../lib/models/qwen3/encoder.js';
import { qwen3TensorShapes } from '../../lib/models/qwen3/layout.js';
import { AutoencoderKL } from '../../lib/models/vae/autoencoder-kl.js';
import { klAutoencoderTensorShapes, klStructure } from '../../lib/models/vae/layout.js';
import { zimageTransformerTensorShapes } from '../../lib/models/zimage/layout.js';
import { ZImageTransformer2DModel } from '../../lib/models/zimage/transformer.js';
import { promptLengths } from '../../lib/models/t5/umt5.js';
import { encodeZImagePrompt } from '../../lib/pipelines/zimage.js';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures');
const REAL = join(FIXTURES, 'real-configs', 'Z-Image-Turbo');
const GOLDEN = join(FIXTURES, 'golden', 'zimage-turbo');
const FLUX = join(FIXTURES, 'golden', 'flux2-klein');

const readJson = (p: string) => JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;
function derived(component: string): Array<[string, number[]]> {
  return readFileSync(join(REAL, component, 'tensors.derived.tsv'), 'utf8')
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const [name, shape] = l.split('\t') as [string, string];
      return [name, JSON.parse(shape) as number[]];
    });
}
const sorted = (s: Array<[string, number[]]>) => [...s].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));

t.test('tensor lists equal the real Z-Image-Turbo checkpoints', async (tt) => {
  const tc = parseComponentConfig('ZImageTransformer2DModel', readJson(join(REAL, 'transformer', 'config.json')), 'transformer');
  tt.same(sorted(zimageTransformerTensorShapes(tc)), sorted(derived('transformer')), 'transformer: 521 names and shapes');
  const vc = parseComponentConfig('AutoencoderKL', readJson(join(REAL, 'vae', 'config.json')), 'vae');
  tt.same(sorted(klAutoencoderTensorShapes(klStructure(vc, 'AutoencoderKL'))), sorted(derived('vae')), 'vae: names and shapes');
  const qc = parseComponentConfig('Qwen3Model', readJson(join(REAL, 'text_encoder', 'config.json')), 'text_encoder');
  tt.same(sorted(qwen3TensorShapes(qc, 'model.')), sorted(derived('text_encoder')), 'text encoder (Qwen3ForCausalLM layout, tied embeddings)');
});

t.test('Qwen3: FLUX.2-klein hidden states 9/18/27 with padded rows, as the flux2-klein golden case', async (tt) => {
  const io = SafetensorsFile.open(join(FLUX, 'io.safetensors'));
  const encoder = await Qwen3TextEncoder.load(join(FLUX, 'model', 'text_encoder'), { maxHiddenState: 27 });
  t.teardown(() => {
    encoder.dispose();
    io.dispose();
  });
  tt.equal(encoder.loadedLayers, 27, 'layer 28 of 28 is not loaded');
  const ids = io.tensor('tokenize/input_ids');
  const mask = io.tensor('tokenize/attention_mask');
  const lens = promptLengths(mask, 5, 512);
  const got = E.scope(() => {
    const states = encoder.hiddenStates(ids, lens, [9, 18, 27]);
    return E.stack(states, 2).reshape(5, 512, -1);
  });
  const err = relL2Error(got.toFloat32(), io.tensor('text_encode/prompt_embeds').toFloat32());
  tt.ok(err < 1e-4, `prompt_embeds rel-L2 ${err.toExponential(2)} < 1e-4 (tolerance of the case)`);
  tt.throws(() => encoder.hiddenStates(ids, lens, [28]), /needs 28 layers, only 27 were loaded/);
  tt.throws(() => encoder.hiddenStates(ids, lens, [29]), /hidden_states index 29 is out of range for 28 layers/);
  tt.throws(() => encoder.hiddenStates(ids, [3, 3], [1]), /seqLens \[3,3\] must give 1\.\.512 real tokens for each of the 5 rows/);
});

t.test('Qwen3: index conventions, final norm, and padding never reaching real tokens', async (tt) => {
  const io = SafetensorsFile.open(join(GOLDEN, 'io.safetensors'));
  const full = await Qwen3TextEncoder.load(join(GOLDEN, 'model', 'text_encoder'));
  const partial = await Qwen3TextEncoder.load(join(GOLDEN, 'model', 'text_encoder'), { maxHiddenState: -2 });
  t.teardown(() => {
    full.dispose();
    partial.dispose();
    io.dispose();
  });
  tt.same([full.loadedLayers, partial.loadedLayers], [3, 2]);
  const ids = io.tensor('tokenize/input_ids');
  const mask = io.tensor('tokenize/attention_mask');
  const lens = promptLengths(mask, 5, 512);
  E.scope(() => {
    const [a, b, last, normed] = full.hiddenStates(ids, lens, [-2, 2, 3, -1]) as [E.Tensor, E.Tensor, E.Tensor, E.Tensor];
    tt.equal(relL2Error(a.toFloat32(), b.toFloat32()), 0, 'hidden_states[-2] is layer 2 of 3');
    tt.equal(relL2Error(last.toFloat32(), normed.toFloat32()), 0, 'hidden_states[3] = hidden_states[-1]');
    const [ofPartial] = partial.hiddenStates(ids, lens, [-2]) as [E.Tensor];
    tt.equal(relL2Error(ofPartial.toFloat32(), a.toFloat32()), 0, 'a partly loaded encoder computes the same layer');
    // hidden_states[0] is the embedding lookup; hidden_states[-1] is RMS-normed by the final norm
    const weights = SafetensorsFile.open(join(GOLDEN, 'model', 'text_encoder', 'model.safetensors'));
    const [emb] = full.hiddenStates(ids, lens, [0]) as [E.Tensor];
    tt.equal(relL2Error(emb.toFloat32(), E.embedding(weights.tensor('embed_tokens.weight'), ids).to('float32').toFloat32()), 0, 'hidden_states[0] = embeddings');
    const unscaled = E.div(normed, weights.tensor('norm.weight').to('float32'));
    const rms = E.sqrt(E.mean(E.square(unscaled), -1)).toFloat32();
    tt.ok(rms.every((v) => Math.abs(v - 1) < 1e-3), 'hidden_states[-1] has unit RMS per row before the final gain');
    weights.dispose();
    // Z-Image's prompt embeddings: the same rows whether the encoder sees 512 padded tokens or the longest prefix
    const viaPrefix = encodeZImagePrompt(partial, ids, mask);
    viaPrefix.forEach((rows, i) => {
      const padded = a.select(0, i).slice(0, 0, lens[i]!).contiguous();
      tt.ok(relL2Error(rows.toFloat32(), padded.toFloat32()) < 1e-6, `prompt ${i}: prefix run equals the padded run`);
    });
  });
  tt.throws(() => partial.hiddenStates(ids, lens, [3]), /only 2 were loaded/);
});

t.test('ZImageTransformer2DModel: items of different sizes batch like single runs; bad inputs are refused', async (tt) => {
  const model = await ZImageTransformer2DModel.load(join(GOLDEN, 'model', 'transformer'));
  t.teardown(() => model.dispose());
  E.scope(() => {
    // 8x12 latents (24 tokens -> padded to 32) and 12x20 latents (60 -> 64): the image sequences differ in length
    const a = E.randn([16, 1, 8, 12], { seed: 1 });
    const b = E.randn([16, 1, 12, 20], { seed: 2 });
    const capA = E.randn([7, 12], { seed: 3 });
    const capB = E.randn([40, 12], { seed: 4 });
    const t2 = E.tensor([0.25, 0.75], [2]);
    const [ba, bb] = model.forward([a, b], t2, [capA, capB]) as [E.Tensor, E.Tensor];
    const [sa] = model.forward([a], t2.slice(0, 0, 1), [capA]) as [E.Tensor];
    const [sb] = model.forward([b], t2.slice(0, 1, 2), [capB]) as [E.Tensor];
    tt.same(ba.shape, [16, 1, 8, 12]);
    tt.same(bb.shape, [16, 1, 12, 20]);
    tt.ok(relL2Error(ba.toFloat32(), sa.toFloat32()) < 1e-6, 'item 0 of the batch = alone');
    tt.ok(relL2Error(bb.toFloat32(), sb.toFloat32()) < 1e-6, 'item 1 of the batch = alone');

    const t1 = E.tensor([0.5], [1]);
    tt.throws(() => model.forward([E.randn([8, 1, 8, 12], { seed: 5 })], t1, [capA]), /latents 0 must be \[16, F, H, W\], got \[8,1,8,12\]/);
    tt.throws(() => model.forward([E.randn([16, 1, 7, 12], { seed: 5 })], t1, [capA]), /latents 0 of size 1x7x12 are not a multiple of the patch 1x2x2/);
    tt.throws(() => model.forward([a], t1, [E.randn([5, 10], { seed: 6 })]), /caption embedding 0 must be \[L, 12\], got \[5,10\]/);
    tt.throws(() => model.forward([a, b], t1, [capA, capB]), /t must have 2 values/);
    tt.throws(() => model.forward([a], t1, [capA, capB]), /1 latents but 2 caption embeddings/);
    tt.throws(() => model.forward([a], t1, [capA], 4), /patch size 4-1 is not one of the model's \(2-1\)/);
    // frame positions start after the caption: 1024 rotary positions on that axis
    tt.throws(() => model.forward([a], t1, [E.randn([1000, 12], { seed: 7 })]), /exceed the rotary tables \(axes_lens \[1024,512,512\]\)/);
  });
});

t.test('AutoencoderKL: shapes, latent scaling, bad inputs', async (tt) => {
  const vae = await AutoencoderKL.load(join(GOLDEN, 'model', 'vae'));
  t.teardown(() => vae.dispose());
  tt.equal(vae.scaleFactor, 8);
  E.scope(() => {
    const z = E.randn([2, 16, 4, 6], { seed: 1 });
    tt.same(vae.decode(z).shape, [2, 3, 32, 48]);
    const { mean, logvar } = vae.encode(E.randn([1, 3, 32, 48], { seed: 2 }));
    tt.same([mean.shape, logvar.shape], [[1, 16, 4, 6], [1, 16, 4, 6]]);
    const roundTrip = vae.denormalizeLatents(vae.normalizeLatents(mean));
    tt.ok(relL2Error(roundTrip.toFloat32(), mean.toFloat32()) < 1e-6, 'normalize and denormalize are inverses');
    const z1 = vae.denormalizeLatents(E.tensor([0, 0.3611], [2])).toFloat32();
    tt.ok(Math.abs(z1[0]! - 0.1159) < 1e-6 && Math.abs(z1[1]! - 1.1159) < 1e-6, 'z / 0.3611 + 0.1159');
    tt.throws(() => vae.decode(E.randn([1, 8, 4, 4], { seed: 3 })), /latents must be \[B, 16, h, w\], got \[1,8,4,4\]/);
    tt.throws(() => vae.encode(E.randn([1, 3, 30, 48], { seed: 3 })), /image size 30x48 is not a multiple of 8/);
  });
});

t.test('ZImageTransformer2DModel: the chunked feed-forward equals the whole one; parameter() is the tensor in use', async (tt) => {
  const whole = await ZImageTransformer2DModel.load(join(GOLDEN, 'model', 'transformer'));
  const chunked = await ZImageTransformer2DModel.load(join(GOLDEN, 'model', 'transformer'), { ffnChunkTokens: 7 });
  t.teardown(() => {
    whole.dispose();
    chunked.dispose();
  });
  E.scope(() => {
    const x = [E.randn([16, 1, 8, 12], { seed: 1 })];
    const cap = [E.randn([9, 12], { seed: 2 })];
    const t1 = E.tensor([0.4], [1]);
    const [a] = whole.forward(x, t1, cap) as [E.Tensor];
    const [b] = chunked.forward(x, t1, cap) as [E.Tensor];
    tt.ok(relL2Error(b.toFloat32(), a.toFloat32()) < 1e-6, 'same output with 7-token slices');
    const q = whole.parameter('layers.1.attention.to_q.weight');
    tt.same([q.dtype, q.shape], ['bfloat16', [64, 64]], 'the stored bf16 matrix');
    tt.equal(E.storageInfo(q).kind, 'mapped', 'the mapped view itself');
    tt.same(whole.parameter('x_pad_token').dtype, 'float32');
    tt.throws(() => whole.parameter('layers.9.attention.to_q.weight'), /has no parameter 'layers\.9\.attention\.to_q\.weight'/);
  });
  await tt.rejects(ZImageTransformer2DModel.load(join(GOLDEN, 'model', 'transformer'), { ffnChunkTokens: 0 }), /ffnChunkTokens must be a positive integer/);
});
