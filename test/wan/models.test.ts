// UMT5 encoder and Wan DiT: golden parity, the checkpoint layouts against the real tensor lists,
// the relative position buckets, the exactness of encoding only the real prompt tokens, and
// errors for mismatched weights and inputs.
import { cpSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

import '../../lib/check/all.js';
import { runCase } from '../../lib/check/run.js';
import * as E from '../../lib/engine/index.js';
import { parseComponentConfig } from '../../lib/io/configs.js';
import { writeSafetensors } from '../../lib/io/safetensors.js';
import { openWeights } from '../../lib/io/weights.js';
import { umt5EncoderTensorShapes } from '../../lib/models/t5/layout.js';
import { promptLengths, relativePositionBucket, UMT5Encoder } from '../../lib/models/t5/umt5.js';
import { wanTransformerTensorShapes, wanVaeTensorShapes } from '../../lib/models/wan/layout.js';
import { WanTransformer3DModel } from '../../lib/models/wan/transformer.js';
import { WeightMismatchError } from '../../lib/models/weights.js';
import { relL2 } from '../helpers/numeric.js';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures');
const GOLDEN = join(FIXTURES, 'golden', 'wan21-t2v');
const MODEL = join(GOLDEN, 'model');
const REAL = join(FIXTURES, 'real-configs');
const tmp = mkdtempSync(join(tmpdir(), 'nd-wan-models-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

const json = (p: string) => JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;

t.test('golden wan21-t2v: text encoder, transformer, scheduler and full pipeline within tolerance', async (tt) => {
  const only = ['text_encode', 'transformer', 'scheduler', 'scheduler_step', 'pipeline'];
  const result = await runCase(GOLDEN, { only });
  for (const c of result.checks) {
    tt.ok(c.pass, `${c.name}: ${c.reason ?? 'pass'}`);
    for (const o of c.outputs) tt.comment(`${c.name}/${o.output}: rel-L2 ${o.errors.map((e) => e.toExponential(2)).join(', ')} (max ${o.max ?? 'exact'})`);
  }
  const worst = Object.fromEntries(result.checks.map((c) => [c.name, c.worstRelL2]));
  tt.ok(worst.text_encode! < 1e-5 && worst.transformer! < 1e-5 && worst.pipeline! < 1e-4, 'errors far below the tolerances');
});

/** name -> "[shape]" of a tensors.derived.tsv list. */
function tsv(path: string): Map<string, string> {
  return new Map(
    readFileSync(path, 'utf8')
      .split('\n')
      .filter((l) => l && !l.startsWith('#'))
      .map((l) => l.split('\t').map((x) => x.trim()) as [string, string]),
  );
}
const asMap = (shapes: Array<[string, number[]]>) => new Map(shapes.map(([n, s]) => [n, `[${s.join(', ')}]`]));

t.test('checkpoint layouts equal the real Wan2.1 tensor lists (names and shapes)', async (tt) => {
  for (const m of ['Wan2.1-T2V-1.3B-Diffusers', 'Wan2.1-T2V-14B-Diffusers']) {
    const cfg = parseComponentConfig('WanTransformer3DModel', json(join(REAL, m, 'transformer', 'config.json')), m);
    tt.same(asMap(wanTransformerTensorShapes(cfg)), tsv(join(REAL, m, 'transformer', 'tensors.derived.tsv')), `${m} transformer`);
  }
  const m = join(REAL, 'Wan2.1-T2V-1.3B-Diffusers');
  tt.same(asMap(wanVaeTensorShapes(parseComponentConfig('AutoencoderKLWan', json(join(m, 'vae', 'config.json')), 'vae'))), tsv(join(m, 'vae', 'tensors.derived.tsv')), 'VAE');
  tt.same(
    asMap(umt5EncoderTensorShapes(parseComponentConfig('UMT5EncoderModel', json(join(m, 'text_encoder', 'config.json')), 'te'))),
    tsv(join(m, 'text_encoder', 'tensors.derived.tsv')),
    'UMT5 text encoder',
  );
});

t.test('checkpoint layouts equal the golden tiny model files', async (tt) => {
  const layouts: Array<[string, 'WanTransformer3DModel' | 'AutoencoderKLWan' | 'UMT5EncoderModel']> = [
    ['transformer', 'WanTransformer3DModel'],
    ['vae', 'AutoencoderKLWan'],
    ['text_encoder', 'UMT5EncoderModel'],
  ];
  for (const [component, cls] of layouts) {
    const cfg = parseComponentConfig(cls, json(join(MODEL, component, 'config.json')), component);
    const shapes =
      cls === 'WanTransformer3DModel'
        ? wanTransformerTensorShapes(cfg as never)
        : cls === 'AutoencoderKLWan'
          ? wanVaeTensorShapes(cfg as never)
          : umt5EncoderTensorShapes(cfg as never);
    const w = await openWeights(join(MODEL, component));
    tt.same(asMap(shapes), new Map(w.names().map((n) => [n, `[${w.info(n).shape.join(', ')}]`])), component);
    w.dispose();
  }
});

t.test('relative position buckets: the T5 bidirectional table (32 buckets, max distance 128)', async (tt) => {
  const bucketOf = (d: number) => relativePositionBucket(d, 32, 128);
  // magnitudes: 0..7 exact, then logarithmic bins with the edges the reference produces
  const edges: Array<[number, number, number]> = [[8, 11, 8], [12, 15, 9], [16, 22, 10], [23, 31, 11], [32, 45, 12], [46, 63, 13], [64, 90, 14], [91, 600, 15]];
  for (let n = 0; n < 8; ++n) tt.equal(bucketOf(-n), n);
  for (const [lo, hi, b] of edges) {
    tt.equal(bucketOf(-lo), b, `-${lo}`);
    tt.equal(bucketOf(-hi), b, `-${hi}`);
    tt.equal(bucketOf(lo), b + 16, `+${lo} (keys after the query use the upper half)`);
  }
});

t.test('UMT5 encodePrompt: running only the real tokens is exact; padding rows are zero', async (tt) => {
  const enc = await UMT5Encoder.load(join(MODEL, 'text_encoder'));
  t.teardown(() => enc.dispose());
  const lens = [5, 12, 1];
  const L = 40;
  const ids = new BigInt64Array(3 * L);
  const mask = new BigInt64Array(3 * L);
  lens.forEach((n, b) => {
    for (let i = 0; i < n; ++i) {
      ids[b * L + i] = BigInt(3 + ((b * 31 + i * 7) % 270));
      mask[b * L + i] = 1n;
    }
  });
  E.scope(() => {
    const idsT = E.tensor(ids, [3, L]);
    const maskT = E.tensor(mask, [3, L]);
    const embeds = enc.encodePrompt(idsT, maskT, 64);
    tt.same(embeds.shape, [3, 64, 32]);
    const full = enc.forward(idsT, lens); // all 40 positions, padded keys masked
    lens.forEach((n, b) => {
      const a = embeds.select(0, b).slice(0, 0, n).toArray();
      const r = full.select(0, b).slice(0, 0, n).toArray();
      tt.ok(relL2(a, r) < 1e-6, `row ${b}: prefix-only equals the padded run (${relL2(a, r)})`);
      tt.ok(embeds.select(0, b).slice(0, n, 64).toArray().every((v) => v === 0), `row ${b}: zero padding`);
    });
    tt.throws(() => enc.encodePrompt(idsT, maskT, 8), /more than max_sequence_length 8/);
    const left = E.tensor(BigInt64Array.from({ length: 3 * L }, (_, i) => (i % L >= L - 3 ? 1n : 0n)), [3, L]);
    tt.throws(() => promptLengths(left, 3, L), /right-padded/);
    tt.throws(() => promptLengths(E.zeros([3, L], { dtype: 'int64' }), 3, L), /no real token/);
  });
});

t.test('Wan transformer: the chunked feed-forward equals the unchunked one; parameters are the mapped views', async (tt) => {
  const whole = await WanTransformer3DModel.load(join(MODEL, 'transformer'));
  const sliced = await WanTransformer3DModel.load(join(MODEL, 'transformer'), { ffnChunkTokens: 7 });
  t.teardown(() => {
    whole.dispose();
    sliced.dispose();
  });
  E.scope(() => {
    const x = E.randn([1, 16, 3, 8, 10], { seed: 1 }); // 60 tokens: 9 slices of 7 and one of 4
    const ts = E.tensor([321], [1], { dtype: 'int64' });
    const text = E.randn([1, 20, 32], { seed: 2 });
    // the same math; only the GEMM kernel chosen for a slice's row count may round differently
    const err = relL2(sliced.forward(x, ts, text).toArray(), whole.forward(x, ts, text).toArray());
    tt.ok(err < 1e-6, `equal outputs (rel-L2 ${err})`);
  });
  const w = await openWeights(join(MODEL, 'transformer'));
  const model = new WanTransformer3DModel(w, parseComponentConfig('WanTransformer3DModel', json(join(MODEL, 'transformer', 'config.json')), 'x'));
  const q = model.parameter('blocks.0.attn1.to_q.weight');
  tt.equal(q, w.get('blocks.0.attn1.to_q.weight'), 'a float32 matrix is the WeightSet view itself');
  tt.equal(E.storageInfo(q).kind, 'mapped');
  tt.same(model.parameter('patch_embedding.weight').shape, [24, 64], 'the patch embedding as the linear sees it');
  tt.throws(() => model.parameter('blocks.9.attn1.to_q.weight'), /no parameter 'blocks\.9\.attn1\.to_q\.weight'/);
  tt.throws(() => new WanTransformer3DModel(w, model.config, { ffnChunkTokens: 0 }), /ffnChunkTokens must be a positive integer/);
  model.dispose();
  w.dispose();
});

t.test('Wan transformer: input and weight mismatches are clear errors', async (tt) => {
  const model = await WanTransformer3DModel.load(join(MODEL, 'transformer'));
  t.teardown(() => model.dispose());
  E.scope(() => {
    const x = E.zeros([1, 16, 2, 4, 6]);
    const ts = E.tensor([500], [1], { dtype: 'int64' });
    const text = E.zeros([1, 7, 32]);
    tt.same(model.forward(x, ts, text).shape, [1, 16, 2, 4, 6], 'any text length works');
    tt.throws(() => model.forward(E.zeros([1, 8, 2, 4, 6]), ts, text), /hidden_states must be \[B, 16, F, H, W\]/);
    tt.throws(() => model.forward(E.zeros([1, 16, 2, 5, 6]), ts, text), /not a multiple of the patch/);
    tt.throws(() => model.forward(x, E.tensor([1, 2], [2], { dtype: 'int64' }), text), /timestep must have 1 values/);
    tt.throws(() => model.forward(x, ts, E.zeros([1, 7, 16])), /encoder_hidden_states must be \[1, S, 32\]/);
  });

  // a checkpoint with an extra block, and one with a wrong shape
  const extra = join(tmp, 'extra');
  cpSync(join(MODEL, 'transformer'), extra, { recursive: true });
  const cfg = json(join(extra, 'config.json'));
  const w = await openWeights(extra);
  const bigger = { ...cfg, num_layers: 1 };
  await tt.rejects(
    (async () => new WanTransformer3DModel(w, parseComponentConfig('WanTransformer3DModel', bigger, 'x')))(),
    WeightMismatchError,
  );
  await tt.rejects(
    (async () => new WanTransformer3DModel(w, parseComponentConfig('WanTransformer3DModel', { ...cfg, ffn_dim: 40 }, 'x')))(),
    /blocks\.0\.ffn\.net\.0\.proj\.weight' has shape \[48, 24\], the config needs \[40, 24\]/,
  );
  await tt.rejects(
    (async () => new WanTransformer3DModel(w, parseComponentConfig('WanTransformer3DModel', { ...cfg, image_dim: 1280 }, 'x')))(),
    /image conditioning/,
  );
  w.dispose();
  const missing = join(tmp, 'missing.safetensors');
  E.scope(() => writeSafetensors(missing, { 'patch_embedding.bias': E.zeros([24]) }));
  await tt.rejects(
    (async () => new WanTransformer3DModel(await openWeights(tmp), parseComponentConfig('WanTransformer3DModel', cfg, 'x')))(),
    /weight 'patch_embedding.weight' \[24, 16, 1, 2, 2\] is missing/,
  );
});
