// LoraManager on real DiTs (the golden Wan transformer, float32; the golden Z-Image transformer kept in
// its stored bf16, so the base weights are views of the memory-mapped checkpoint): merged weights
// against a float64 reference, unmerge restoring the weights bit for bit, re-merge and switching
// reproducing a fresh merge exactly, the adapter cache (no second file read, LRU bound), and failed
// requests leaving weights, active sets and cache unchanged.
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

import * as E from '../../lib/engine/index.js';
import { SafetensorsFile, writeSafetensors } from '../../lib/io/safetensors.js';
import { LoraError } from '../../lib/lora/request.js';
import { LoraManager, weightsChecksum } from '../../lib/lora/manager.js';
import { WanTransformer3DModel } from '../../lib/models/wan/transformer.js';
import { Flux2Transformer2DModel } from '../../lib/models/flux2/transformer.js';
import { ZImageTransformer2DModel } from '../../lib/models/zimage/transformer.js';
import { relL2 } from '../helpers/numeric.js';

const GOLDEN = join(import.meta.dirname, '..', 'fixtures', 'golden');
const WAN_DIR = join(GOLDEN, 'wan21-t2v', 'model', 'transformer');
const ZIMAGE_DIR = join(GOLDEN, 'zimage-turbo', 'model', 'transformer');
const tmp = mkdtempSync(join(tmpdir(), 'nd-lora-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

/** A PEFT LoRA file over the given modules with seeded weights; returns its path. */
function writePeft(name: string, modules: Record<string, [number, number]>, rank: number, alpha: number, seed: number): string {
  const tensors: Record<string, E.Tensor> = {};
  let s = seed;
  for (const [m, [out, inp]] of Object.entries(modules)) {
    tensors[`transformer.${m}.lora_A.weight`] = E.mul(E.randn([rank, inp], { seed: s++ }), 0.3);
    tensors[`transformer.${m}.lora_B.weight`] = E.mul(E.randn([out, rank], { seed: s++ }), 0.3);
  }
  const path = join(tmp, `${name}.safetensors`);
  writeSafetensors(path, tensors, { lora_adapter_metadata: JSON.stringify({ 'transformer.r': rank, 'transformer.lora_alpha': alpha }) });
  for (const x of Object.values(tensors)) x.dispose();
  return path;
}

/** W + sum strength * alpha/rank * B A in float64, from the file's tensors and the base weight. */
function reference(base: Float32Array, shape: number[], terms: Array<{ a: Float32Array; b: Float32Array; rank: number; scale: number }>): Float64Array {
  const [out, inp] = shape as [number, number];
  const r = Float64Array.from(base);
  for (const { a, b, rank, scale } of terms)
    for (let o = 0; o < out; ++o)
      for (let i = 0; i < inp; ++i) {
        let acc = 0;
        for (let k = 0; k < rank; ++k) acc += (b[o * rank + k] as number) * (a[k * inp + i] as number);
        r[o * inp + i] += scale * acc;
      }
  return r;
}

function readPeft(path: string, module: string): { a: Float32Array; b: Float32Array } {
  const file = SafetensorsFile.open(path);
  try {
    const read = (key: string) => {
      const x = file.tensor(key);
      try {
        return x.toFloat32();
      } finally {
        x.dispose();
      }
    };
    return { a: read(`transformer.${module}.lora_A.weight`), b: read(`transformer.${module}.lora_B.weight`) };
  } finally {
    file.dispose();
  }
}

const MODULES_A: Record<string, [number, number]> = {
  'blocks.0.attn1.to_q': [24, 24],
  'blocks.1.ffn.net.0.proj': [48, 24],
  'blocks.1.attn2.to_out.0': [24, 24],
};
const MODULES_B: Record<string, [number, number]> = {
  'blocks.0.attn1.to_q': [24, 24],
  'blocks.0.ffn.net.2': [24, 48],
};

t.test('Wan: merge against float64, bit-exact unmerge, re-merge and switching equal a fresh merge', async (tt) => {
  const pathA = writePeft('a', MODULES_A, 4, 8, 100);
  const pathB = writePeft('b', MODULES_B, 2, 2, 200);
  const model = await WanTransformer3DModel.load(WAN_DIR);
  const lora = new LoraManager({ transformer: model });
  tt.teardown(() => {
    lora.dispose();
    model.dispose();
  });
  const baseSum = weightsChecksum(model);
  const baseQ = model.parameter('blocks.0.attn1.to_q.weight').toFloat32();
  const baseBytes = Object.fromEntries(Object.keys({ ...MODULES_A, ...MODULES_B }).map((m) => [m, model.parameter(`${m}.weight`).bytes()]));

  await lora.setLora({ lora_nickname: 'a', lora_path: pathA, strength: 0.7 });
  for (const [m, shape] of Object.entries(MODULES_A)) {
    const { a, b } = readPeft(pathA, m);
    const base = new Float32Array(baseBytes[m]!.buffer.slice(0));
    const ref = reference(base, shape, [{ a, b, rank: 4, scale: 0.7 * (8 / 4) }]);
    const err = relL2(model.parameter(`${m}.weight`).toFloat32(), ref);
    tt.ok(err < 1e-6, `${m}: merged rel-L2 ${err.toExponential(2)} vs float64`);
  }
  const mergedA = weightsChecksum(model);
  tt.not(mergedA, baseSum, 'merging changes the checksum');
  tt.same(lora.checksums(), { transformer: mergedA }, 'checksums() covers the transformer');
  tt.same(lora.checksums(['transformer', 'vae']), { transformer: mergedA, vae: 'not_found' });

  await lora.unmergeLora();
  tt.equal(weightsChecksum(model), baseSum, 'unmerge restores the checksum exactly');
  for (const m of Object.keys(MODULES_A)) tt.same(model.parameter(`${m}.weight`).bytes(), baseBytes[m], `${m}: base bytes back`);
  tt.same(lora.list().active.transformer, [{ nickname: 'a', path: pathA, merged: false, strength: 0.7 }], 'still set, not merged');

  await lora.mergeLora();
  tt.equal(weightsChecksum(model), mergedA, 'merge_lora_weights without strength reproduces the set merge bit for bit');
  await lora.mergeLora('transformer', 1.5);
  {
    const m = 'blocks.0.attn1.to_q';
    const { a, b } = readPeft(pathA, m);
    const err = relL2(model.parameter(`${m}.weight`).toFloat32(), reference(baseQ, [24, 24], [{ a, b, rank: 4, scale: 1.5 * 2 }]));
    tt.ok(err < 1e-6, `merge at strength 1.5: rel-L2 ${err.toExponential(2)}`);
  }
  tt.equal(lora.list().active.transformer![0]!.strength, 1.5);

  // switch to B without unmerging: layers only A changed get their base back
  await lora.setLora({ lora_nickname: 'b', lora_path: pathB, strength: 0.9 });
  tt.same(model.parameter('blocks.1.ffn.net.0.proj.weight').bytes(), baseBytes['blocks.1.ffn.net.0.proj'], 'a layer only A changed is back to base');
  const mergedB = weightsChecksum(model);

  const fresh = await WanTransformer3DModel.load(WAN_DIR);
  const freshLora = new LoraManager({ transformer: fresh });
  await freshLora.setLora({ lora_nickname: 'b', lora_path: pathB, strength: 0.9 });
  tt.equal(weightsChecksum(fresh), mergedB, 'A then B equals B merged into a fresh model, bit for bit');
  await freshLora.setLora({ lora_nickname: ['a', 'b'], lora_path: [pathA, pathB], strength: [0.7, 0.9] });
  {
    const m = 'blocks.0.attn1.to_q';
    const ta = readPeft(pathA, m);
    const tb = readPeft(pathB, m);
    const ref = reference(baseQ, [24, 24], [
      { ...ta, rank: 4, scale: 0.7 * 2 },
      { ...tb, rank: 2, scale: 0.9 * 1 },
    ]);
    const err = relL2(fresh.parameter(`${m}.weight`).toFloat32(), ref);
    tt.ok(err < 1e-6, `two adapters on one layer: rel-L2 ${err.toExponential(2)}`);
  }
  freshLora.dispose();
  tt.equal(weightsChecksum(fresh), baseSum, 'dispose() restores the base weights');
  fresh.dispose();

  // back to A (cached: no file read) equals the first A merge
  const reads = lora.stats.fileReads;
  await lora.setLora({ lora_nickname: 'a', lora_path: pathA, strength: 0.7 });
  tt.equal(lora.stats.fileReads, reads, 'switching back to a cached adapter reads no file');
  tt.equal(weightsChecksum(model), mergedA, 'A -> B -> A equals the first A merge');
  await lora.unmergeLora('all');
  tt.equal(weightsChecksum(model), baseSum, 'and unmerges exactly');
});

t.test('the cache: no second read (even with the file deleted), re-activation by nickname, LRU bound, active adapters kept', async (tt) => {
  const model = await WanTransformer3DModel.load(WAN_DIR);
  const lora = new LoraManager({ transformer: model }, { maxLoras: 2 });
  tt.teardown(() => {
    lora.dispose();
    model.dispose();
  });
  const dir = join(tmp, 'cache');
  mkdirSync(dir);
  const paths = ['x', 'y', 'z'].map((n, i) => {
    const p = writePeft(`cache-${n}`, { 'blocks.0.attn1.to_k': [24, 24] }, 2, 2, 300 + 10 * i);
    copyFileSync(p, join(dir, `${n}.safetensors`));
    return join(dir, `${n}.safetensors`);
  });
  await lora.setLora({ lora_nickname: 'x', lora_path: paths[0] });
  const mergedX = weightsChecksum(model);
  await lora.setLora({ lora_nickname: 'y', lora_path: paths[1] });
  tt.equal(lora.stats.fileReads, 2);
  rmSync(paths[0]!);
  await lora.setLora({ lora_nickname: 'x', lora_path: paths[0] });
  tt.equal(lora.stats.fileReads, 2, 'x again with its file deleted: served from memory');
  tt.equal(weightsChecksum(model), mergedX);
  await lora.setLora({ lora_nickname: 'y' });
  tt.equal(lora.stats.fileReads, 2, 'nickname only: cached');

  await lora.setLora({ lora_nickname: 'z', lora_path: paths[2] });
  tt.same(lora.list().loaded_adapters.map((a) => a.nickname), ['y', 'z'], 'maxLoras 2: x (least recently used) evicted');
  await tt.rejects(lora.setLora({ lora_nickname: 'x' }), /LoRA adapter 'x' is not loaded: give its lora_path/);
  await tt.rejects(lora.setLora({ lora_nickname: ['p', 'q', 'r'], lora_path: paths }), /at most 2 can be held/);

  // a new path under a cached nickname replaces it
  await lora.setLora({ lora_nickname: 'y', lora_path: paths[2] });
  tt.same(lora.list().loaded_adapters, [{ nickname: 'y', path: paths[2] }, { nickname: 'z', path: paths[2] }], 'y re-read from its new path');
  tt.equal(lora.list().active.transformer![0]!.path, paths[2]);
});

t.test('failed requests change nothing: corrupt file, another model\'s LoRA, unknown key, bad target, list lengths', async (tt) => {
  const model = await WanTransformer3DModel.load(WAN_DIR);
  const lora = new LoraManager({ transformer: model });
  tt.teardown(() => {
    lora.dispose();
    model.dispose();
  });
  const good = writePeft('good', { 'blocks.0.attn1.to_v': [24, 24] }, 2, 4, 400);
  await lora.setLora({ lora_nickname: 'good', lora_path: good, strength: 0.5 });
  const sum = weightsChecksum(model);
  const listing = JSON.stringify(lora.list());

  const corrupt = join(tmp, 'corrupt.safetensors');
  copyFileSync(good, corrupt);
  truncateSync(corrupt, 200);
  const notSafetensors = join(tmp, 'junk.safetensors');
  writeFileSync(notSafetensors, 'not a safetensors file at all');
  const unknownKey = join(tmp, 'unknown-key.safetensors');
  writeSafetensors(unknownKey, {
    'transformer.blocks.0.attn1.to_q.lora_A.weight': E.zeros([2, 24]),
    'transformer.blocks.0.attn1.to_q.lora_B.weight': E.zeros([24, 2]),
    'transformer.blocks.0.attn1.to_q.lora_C.weight': E.zeros([2, 2]),
  });
  const wrongSize = writePeft('wrong-size', { 'blocks.0.attn1.to_q': [32, 32] }, 2, 2, 500);
  const folder = join(tmp, 'two-files');
  mkdirSync(folder);
  copyFileSync(good, join(folder, 'one.safetensors'));
  copyFileSync(good, join(folder, 'two.safetensors'));

  const attempts: Array<[string, Parameters<LoraManager['setLora']>[0], RegExp, string | null]> = [
    ['truncated file', { lora_nickname: 'bad', lora_path: corrupt }, /not a readable safetensors file/, null],
    ['not safetensors', { lora_nickname: 'bad', lora_path: notSafetensors }, /not a readable safetensors file/, null],
    ["Z-Image's LoRA", { lora_nickname: 'bad', lora_path: join(GOLDEN, 'zimage-turbo', 'lora_peft.safetensors') }, /does not have/, 'transformer.context_refiner.0.attention.to_k.lora_A.weight'],
    ['unknown key', { lora_nickname: 'bad', lora_path: unknownKey }, /not a LoRA tensor/, 'transformer.blocks.0.attn1.to_q.lora_C.weight'],
    ['another model size', { lora_nickname: 'bad', lora_path: wrongSize }, /takes 24 inputs/, 'transformer.blocks.0.attn1.to_q.lora_A.weight'],
    ['missing file', { lora_nickname: 'bad', lora_path: join(tmp, 'nope.safetensors') }, /not an existing file or folder/, null],
    ['ambiguous folder', { lora_nickname: 'bad', lora_path: folder }, /2 \.safetensors files/, null],
    ['second adapter bad', { lora_nickname: ['fine', 'bad'], lora_path: [good, unknownKey] }, /not a LoRA tensor/, 'transformer.blocks.0.attn1.to_q.lora_C.weight'],
    ['target the model lacks', { lora_nickname: 'good', target: 'transformer_2' }, /target 'transformer_2' is not a module of this model/, null],
    ['unknown target', { lora_nickname: 'good', target: 'vae' }, /target must be one of all, transformer, transformer_2, critic/, null],
    ['list lengths', { lora_nickname: ['good', 'x'], lora_path: [good, good], strength: [1, 2, 3] }, /lora_nickname has 2 entries but strength has 3/, null],
    ['one path for two', { lora_nickname: ['good', 'x'], lora_path: good }, /lists must have the same length/, null],
    ['NaN strength', { lora_nickname: 'good', strength: Number.NaN }, /strength must be a finite number/, null],
  ];
  for (const [what, args, msg, key] of attempts) {
    const err = await lora.setLora(args).then(
      () => null,
      (e: unknown) => e,
    );
    tt.ok(err instanceof LoraError, `${what}: LoraError`);
    tt.match((err as Error).message, msg, `${what}: ${(err as Error).message}`);
    tt.equal((err as LoraError).key, key, `${what}: first offending key`);
    tt.equal(weightsChecksum(model), sum, `${what}: weights unchanged`);
    tt.equal(JSON.stringify(lora.list()), listing, `${what}: adapters and active set unchanged`);
  }
  await tt.rejects(lora.mergeLora('transformer_2'), /not a module of this model/);
  await tt.rejects(lora.unmergeLora('critic'), /not a module of this model/);
  tt.equal(weightsChecksum(model), sum);
  // good; then Z-Image's, unknown-key, wrong-size, and fine + unknown-key (read, then refused when matched)
  tt.equal(lora.stats.fileReads, 6, 'a file is counted once it was read; the unreadable ones never were');
});

t.test('Z-Image in its stored bf16: the merged weights are bf16 copies, the mapped base views come back untouched', async (tt) => {
  const model = await ZImageTransformer2DModel.load(ZIMAGE_DIR);
  const lora = new LoraManager({ transformer: model });
  tt.teardown(() => {
    lora.dispose();
    model.dispose();
  });
  const name = 'layers.0.attention.to_q.weight';
  const view = model.parameter(name);
  tt.equal(view.dtype, 'bfloat16');
  const baseSum = weightsChecksum(model);
  const baseBytes = view.bytes();
  await lora.setLora({ lora_nickname: ['peft', 'kohya'], lora_path: [join(GOLDEN, 'zimage-turbo', 'lora_peft.safetensors'), join(GOLDEN, 'zimage-turbo', 'lora_kohya.safetensors')], strength: [0.7, 0.9] });
  tt.equal(model.parameter(name), view, 'the model keeps the same tensor object');
  tt.equal(view.dtype, 'bfloat16', 'merged in the weight dtype');
  tt.not(Buffer.compare(Buffer.from(view.bytes()), Buffer.from(baseBytes)), 0, 'it now holds merged values');
  tt.same(Object.keys(lora.list().active), ['transformer']);
  await lora.unmergeLora();
  tt.same(view.bytes(), baseBytes, 'base bytes back');
  tt.equal(weightsChecksum(model), baseSum, 'checksum back');
});

t.test('FLUX.2 in the BFL naming: the fused qkv split over to_q/to_k/to_v, the final layer with its halves exchanged', async (tt) => {
  const model = await Flux2Transformer2DModel.load(join(GOLDEN, 'flux2-klein', 'model', 'transformer'), { dtype: 'float32' });
  const lora = new LoraManager({ transformer: model });
  tt.teardown(() => {
    lora.dispose();
    model.dispose();
  });
  const shape = (n: string) => model.parameter(n).shape as [number, number];
  const d = shape('transformer_blocks.0.attn.to_q.weight')[0];
  const [normRows, normIn] = shape('norm_out.linear.weight');
  const qkvUp = E.keep(E.randn([3 * d, 2], { seed: 1 }));
  const qkvDown = E.keep(E.randn([2, d], { seed: 2 }));
  const normUp = E.keep(E.randn([normRows, 2], { seed: 3 }));
  const normDown = E.keep(E.randn([2, normIn], { seed: 4 }));
  const file = join(tmp, 'flux-bfl.safetensors');
  writeSafetensors(file, {
    'diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight': qkvDown,
    'diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight': qkvUp,
    'diffusion_model.final_layer.adaLN_modulation.1.lora_A.weight': normDown,
    'diffusion_model.final_layer.adaLN_modulation.1.lora_B.weight': normUp,
  });
  const bases = Object.fromEntries(['q', 'k', 'v'].map((p) => [p, model.parameter(`transformer_blocks.0.attn.to_${p}.weight`).toFloat32()]));
  const normBase = model.parameter('norm_out.linear.weight').toFloat32();
  await lora.setLora({ lora_nickname: 'bfl', lora_path: file, strength: 0.5 });
  const up = qkvUp.toFloat32();
  ['q', 'k', 'v'].forEach((p, i) => {
    const ref = reference(bases[p]!, [d, d], [{ a: qkvDown.toFloat32(), b: up.slice(i * d * 2, (i + 1) * d * 2), rank: 2, scale: 0.5 }]);
    const err = relL2(model.parameter(`transformer_blocks.0.attn.to_${p}.weight`).toFloat32(), ref);
    tt.ok(err < 1e-6, `to_${p} takes rows ${i * d}..${(i + 1) * d - 1} of the fused B: rel-L2 ${err.toExponential(2)}`);
  });
  const nu = normUp.toFloat32();
  const half = (normRows / 2) * 2;
  const swapped = new Float32Array([...nu.slice(half), ...nu.slice(0, half)]);
  const err = relL2(model.parameter('norm_out.linear.weight').toFloat32(), reference(normBase, [normRows, normIn], [{ a: normDown.toFloat32(), b: swapped, rank: 2, scale: 0.5 }]));
  tt.ok(err < 1e-6, `norm_out.linear: (shift, scale) rows of the BFL layer exchanged: rel-L2 ${err.toExponential(2)}`);
  E.disposeAll([qkvUp, qkvDown, normUp, normDown]);
});
