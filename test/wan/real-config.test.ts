// Real Wan2.1 checkpoints, shapes-wise: model folders with the real configs of every component
// (1536-wide DiT with 12 heads and ffn 8960, 4096-wide UMT5 with the 256384-token vocabulary, the
// 96-channel VAE), the real tensor names and stored dtypes (transformer fp32 in two shards, text
// encoder bf16, VAE fp32), reduced to 2 DiT blocks and 2 UMT5 layers. The 1.3B folder is loaded and
// runs a generation with CFG; the full 40-block 14B transformer loads (config level).
//
// Writing 1.7 GB of random values would dominate the test's time while proving nothing more about
// names and shapes, so the files are sparse: every tensor of up to RANDOM_LIMIT elements (norms,
// biases, modulation tables, relative position biases, most VAE convolutions) holds seeded random
// values, larger matrices are holes of the file that read as zeros (the computation over them runs at
// full size all the same). The UMT5 embedding (256384 x 4096 bf16 = 2.1 GB) is a hole except the rows
// the test tokenizer can produce (the real UMT5 tokenizer is not a fixture; the golden T5 tokenizer's
// 278 ids are used): memory-mapped, only the looked-up rows are ever read. The 14B transformer is all
// holes: loading checks every name, shape and dtype and touches no data.
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

import * as E from '../../lib/engine/index.js';
import { parseComponentConfig } from '../../lib/io/configs.js';
import { umt5EncoderTensorShapes } from '../../lib/models/t5/layout.js';
import { type TensorShapes, wanTransformerTensorShapes, wanVaeTensorShapes } from '../../lib/models/wan/layout.js';
import { WanTransformer3DModel } from '../../lib/models/wan/transformer.js';
import { loadPipeline } from '../../lib/pipelines/load.js';
import { WanPipeline } from '../../lib/pipelines/wan.js';
import { type SparseFill, type SparseTensor, writeSparseSafetensors } from '../helpers/sparse-safetensors.js';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures');
const REAL = join(FIXTURES, 'real-configs');
const REAL_13B = join(REAL, 'Wan2.1-T2V-1.3B-Diffusers');
const REAL_14B = join(REAL, 'Wan2.1-T2V-14B-Diffusers');
const TOKENIZER = join(FIXTURES, 'golden', 'wan21-t2v', 'model', 'tokenizer');
/** rows of the UMT5 embedding the test tokenizer can reach */
const TOKENIZER_ROWS = 278;
/** tensors up to this many elements get random values, larger ones are holes (zeros) */
const RANDOM_LIMIT = 1 << 20;

const tmp = mkdtempSync(join(tmpdir(), 'nd-wan-real-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

const readJson = (p: string) => JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;
const writeJson = (p: string, v: unknown) => writeFileSync(p, `${JSON.stringify(v, null, 2)}\n`);
const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MB`;

/** Values shaped like a trained network's: norm gains 1, norm biases 0, matrices 1/sqrt(fan_in). */
function fillFor(name: string, shape: number[], seed: number, random: boolean): SparseFill {
  if (/(norm[^.]*|norm_[qk])\.(weight|gamma)$/.test(name) || name.endsWith('.gamma')) return { kind: 'ones' };
  if (/norm[^.]*\.bias$/.test(name) || !random) return { kind: 'zeros' };
  if (name === 'shared.weight') return { kind: 'randn', std: 1, seed, rows: TOKENIZER_ROWS };
  if (shape.reduce((a, b) => a * b, 1) > RANDOM_LIMIT) return { kind: 'zeros' };
  if (name.endsWith('.bias')) return { kind: 'randn', std: 0.02, seed };
  if (name.endsWith('scale_shift_table')) return { kind: 'randn', std: 1 / Math.sqrt(shape[shape.length - 1]!), seed };
  if (name.endsWith('relative_attention_bias.weight')) return { kind: 'randn', std: 0.5, seed };
  return { kind: 'randn', std: 1 / Math.sqrt(shape.slice(1).reduce((a, b) => a * b, 1)), seed };
}

/**
 * Writes a component's tensors as safetensors shards of at most shardBytes each (diffusers'
 * max_shard_size), with the index when there is more than one; returns the bytes of data written.
 */
function writeComponent(dir: string, stem: string, shapes: TensorShapes, dtype: SparseTensor['dtype'], seedBase: number, random: boolean, shardBytes: number): number {
  const tensors: SparseTensor[] = shapes.map(([name, shape], i) => ({ name, dtype, shape, fill: fillFor(name, shape, seedBase + i, random) }));
  const shards: SparseTensor[][] = [[]];
  let size = 0;
  for (const tensor of tensors) {
    const bytes = tensor.shape.reduce((a, b) => a * b, 1) * E.elementSize(dtype);
    if (size > 0 && size + bytes > shardBytes) {
      shards.push([]);
      size = 0;
    }
    shards[shards.length - 1]!.push(tensor);
    size += bytes;
  }
  let written = 0;
  if (shards.length === 1) return writeSparseSafetensors(join(dir, `${stem}.safetensors`), tensors);
  const weightMap: Record<string, string> = {};
  let total = 0;
  shards.forEach((part, s) => {
    const file = `${stem}-${String(s + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
    for (const tensor of part) {
      weightMap[tensor.name] = file;
      total += tensor.shape.reduce((a, b) => a * b, 1) * E.elementSize(dtype);
    }
    written += writeSparseSafetensors(join(dir, file), part);
  });
  writeJson(join(dir, `${stem}.safetensors.index.json`), { metadata: { total_size: total }, weight_map: weightMap });
  return written;
}

/** The shared (non-transformer) components of a real Wan2.1 folder; UMT5 reduced to 2 layers. */
function writeSharedComponents(dir: string): number {
  mkdirSync(join(dir, 'scheduler'), { recursive: true });
  cpSync(join(REAL_13B, 'scheduler', 'scheduler_config.json'), join(dir, 'scheduler', 'scheduler_config.json'));
  cpSync(TOKENIZER, join(dir, 'tokenizer'), { recursive: true });
  const te = { ...readJson(join(REAL_13B, 'text_encoder', 'config.json')), num_layers: 2 };
  mkdirSync(join(dir, 'text_encoder'));
  writeJson(join(dir, 'text_encoder', 'config.json'), te);
  const teShapes = umt5EncoderTensorShapes(parseComponentConfig('UMT5EncoderModel', te, 'te'));
  // 2 layers of bf16 fit one 5 GB shard in the real layout's naming (model-0000x-of-0000y)
  let written = writeComponent(join(dir, 'text_encoder'), 'model', teShapes, 'bfloat16', 1, true, 5e9);
  const vae = readJson(join(REAL_13B, 'vae', 'config.json'));
  mkdirSync(join(dir, 'vae'));
  writeJson(join(dir, 'vae', 'config.json'), vae);
  written += writeComponent(join(dir, 'vae'), 'diffusion_pytorch_model', wanVaeTensorShapes(parseComponentConfig('AutoencoderKLWan', vae, 'vae')), 'float32', 10_000, true, 5e9);
  return written;
}

t.test('Wan2.1-T2V-1.3B real configs, 2 blocks / 2 UMT5 layers: loads and generates with CFG', async (tt) => {
  const dir = join(tmp, 'Wan2.1-T2V-1.3B-2blocks');
  mkdirSync(dir);
  const t0 = performance.now();
  cpSync(join(REAL_13B, 'model_index.json'), join(dir, 'model_index.json'));
  let written = writeSharedComponents(dir);
  const tr = { ...readJson(join(REAL_13B, 'transformer', 'config.json')), num_layers: 2 };
  mkdirSync(join(dir, 'transformer'));
  writeJson(join(dir, 'transformer', 'config.json'), tr);
  const trShapes = wanTransformerTensorShapes(parseComponentConfig('WanTransformer3DModel', tr, 'tr'));
  // two shards, as the real checkpoint
  const trBytes = trShapes.reduce((a, [, s]) => a + s.reduce((x, y) => x * y, 1) * 4, 0);
  written += writeComponent(join(dir, 'transformer'), 'diffusion_pytorch_model', trShapes, 'float32', 20_000, true, Math.ceil(trBytes / 2) + (64 << 20));
  const embedding = statSync(join(dir, 'text_encoder', 'model.safetensors'));
  tt.ok(embedding.size > 2.1e9, `text encoder file is real size (${mb(embedding.size)} apparent)`);
  tt.ok(embedding.blocks * 512 < 64e6, `and sparse (${mb(embedding.blocks * 512)} on disk)`);
  tt.comment(`folder written in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${mb(written)} of data`);

  const rssBefore = process.resourceUsage().maxRSS * 1024;
  const t1 = performance.now();
  const p = await loadPipeline(dir);
  t.teardown(() => p.dispose());
  tt.ok(p instanceof WanPipeline);
  tt.match(p.info, { pipelineClass: 'WanPipeline', taskType: 'T2V', ditPrecision: 'fp32', vaePrecision: 'fp32' });
  tt.match(p.info.defaults, { width: 832, height: 480, numFrames: 81, fps: 16, numInferenceSteps: 50, guidanceScale: 3 });
  const loadMs = performance.now() - t1;

  const r = await p.generate({
    prompt: 'A red fox in the snow',
    negativePrompt: 'blurry',
    width: 32,
    height: 32,
    numFrames: 5,
    numInferenceSteps: 1,
    outputType: 'float',
  });
  const latents = r.latents!.toFloat32();
  const video = r.floatOutput!.toFloat32();
  tt.same(r.latents!.shape, [1, 16, 2, 4, 4]);
  tt.same(r.floatOutput!.shape, [1, 5, 32, 32, 3]);
  tt.ok(latents.every(Number.isFinite) && video.every((v) => v >= 0 && v <= 1), 'finite latents, video in [0, 1]');
  tt.equal(r.outputs[0]!.length, 5);
  E.disposeAll([r.latents, r.floatOutput]);
  const peak = process.resourceUsage().maxRSS * 1024;
  tt.comment(
    `load ${loadMs.toFixed(0)} ms; ${Object.entries(r.timings).map(([k, v]) => `${k} ${v.toFixed(0)} ms`).join(', ')}; ` +
      `peak tensors ${r.peakMemoryMb.toFixed(0)} MB; peak RSS ${mb(peak)} (${mb(rssBefore)} before loading)`,
  );
});

t.test('Wan2.1-T2V-14B real config: the full 40-block transformer loads; the pipeline takes the 14B defaults', async (tt) => {
  const dir = join(tmp, 'Wan2.1-T2V-14B');
  mkdirSync(join(dir, 'transformer'), { recursive: true });
  cpSync(join(REAL_14B, 'model_index.json'), join(dir, 'model_index.json'));
  writeSharedComponents(dir);
  // the 14B's scheduler differs from the 1.3B's by its shift (SGLang: flow_shift 5.0)
  const scheduler = { ...readJson(join(dir, 'scheduler', 'scheduler_config.json')), flow_shift: 5.0 };
  writeJson(join(dir, 'scheduler', 'scheduler_config.json'), scheduler);
  const tr = readJson(join(REAL_14B, 'transformer', 'config.json'));
  writeJson(join(dir, 'transformer', 'config.json'), tr);
  const shapes = wanTransformerTensorShapes(parseComponentConfig('WanTransformer3DModel', tr, 'tr'));
  tt.equal(shapes.length, 1095);
  writeComponent(join(dir, 'transformer'), 'diffusion_pytorch_model', shapes, 'float32', 0, false, 5e9);

  const model = await WanTransformer3DModel.load(join(dir, 'transformer'));
  tt.equal(model.innerDim, 5120);
  tt.equal(model.config.num_layers, 40);
  model.dispose();

  const p = await loadPipeline(dir);
  t.teardown(() => p.dispose());
  tt.match(p.info.defaults, { width: 1280, height: 720, numFrames: 81, guidanceScale: 5 });
  tt.match(p.validate({ prompt: 'x' }), { width: 1280, height: 720, numFrames: 81, numInferenceSteps: 50, guidanceScale: 5 });
});
