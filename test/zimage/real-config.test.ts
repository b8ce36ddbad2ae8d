// Real Z-Image-Turbo checkpoints, shapes-wise: a model folder with the real configs of every
// component (3840-wide DiT with 30 heads, the Qwen3-4B text encoder with its 151936-token vocabulary,
// the FLUX VAE), the real tensor names and stored dtypes (bf16 transformer in two shards with an index,
// bf16 Qwen3 in the Qwen3ForCausalLM layout, fp32 VAE), reduced to 2 main layers, 2 refiner layers
// each and 2 Qwen3 layers. The folder loads and runs one denoising step at 64x64, then decodes.
//
// The files are sparse: tensors of up to RANDOM_LIMIT elements hold seeded random values, larger ones
// are holes that read as zeros (the computation over them still runs at full size). The Qwen3
// embedding (151936 x 2560 bf16 = 778 MB) is a hole except the rows of the tokens the test prompt
// produces: memory-mapped, only the looked-up rows are ever read.
import { closeSync, cpSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

import * as E from '../../lib/engine/index.js';
import { parseComponentConfig } from '../../lib/io/configs.js';
import { tokenizeQwenChatPrompts } from '../../lib/io/prompt-tokens.js';
import { readSafetensorsHeader } from '../../lib/io/safetensors.js';
import { loadTokenizer } from '../../lib/io/tokenizer.js';
import { Qwen3TextEncoder } from '../../lib/models/qwen3/encoder.js';
import { qwen3TensorShapes } from '../../lib/models/qwen3/layout.js';
import { klAutoencoderTensorShapes, klStructure } from '../../lib/models/vae/layout.js';
import { zimageTransformerTensorShapes } from '../../lib/models/zimage/layout.js';
import { loadPipeline } from '../../lib/pipelines/load.js';
import { ZIMAGE_MAX_SEQUENCE_LENGTH, ZImagePipeline } from '../../lib/pipelines/zimage.js';
import { type SparseFill, type SparseTensor, writeSparseSafetensors } from '../helpers/sparse-safetensors.js';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures');
const REAL = join(FIXTURES, 'real-configs', 'Z-Image-Turbo');
const TOKENIZER = join(FIXTURES, 'golden', 'zimage-turbo', 'model', 'tokenizer');
const PROMPT = 'A red fox trotting through fresh snow at dawn';
/** tensors up to this many elements get random values, larger ones are holes (zeros) */
const RANDOM_LIMIT = 1 << 20;

const tmp = mkdtempSync(join(tmpdir(), 'nd-zimage-real-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

const readJson = (p: string) => JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;
const writeJson = (p: string, v: unknown) => writeFileSync(p, `${JSON.stringify(v, null, 2)}\n`);
const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MB`;
type Shapes = Array<[string, number[]]>;

/** Values shaped like a trained network's: 1-D gains 1, norm biases 0, matrices 1/sqrt(fan_in); big ones zero. */
function fillFor(name: string, shape: number[], seed: number): SparseFill {
  const numel = shape.reduce((a, b) => a * b, 1);
  if (shape.length === 1 && name.endsWith('.weight')) return { kind: 'ones' };
  if (/(norm[^.]*|group_norm)\.bias$/.test(name) || numel > RANDOM_LIMIT) return { kind: 'zeros' };
  if (name.endsWith('.bias')) return { kind: 'randn', std: 0.02, seed };
  return { kind: 'randn', std: 1 / Math.sqrt(shape.slice(1).reduce((a, b) => a * b, 1)), seed };
}

/** Writes a component as `shards` sparse safetensors files (with the diffusers index when more than one); returns the bytes written. */
function writeComponent(dir: string, stem: string, shapes: Shapes, dtype: SparseTensor['dtype'], seedBase: number, shards: number): number {
  const tensors: SparseTensor[] = shapes.map(([name, shape], i) => ({ name, dtype, shape, fill: fillFor(name, shape, seedBase + i) }));
  if (shards === 1) return writeSparseSafetensors(join(dir, `${stem}.safetensors`), tensors);
  const bytesOf = (x: SparseTensor) => x.shape.reduce((a, b) => a * b, 1) * E.elementSize(dtype);
  const total = tensors.reduce((a, x) => a + bytesOf(x), 0);
  const parts: SparseTensor[][] = Array.from({ length: shards }, () => []);
  let acc = 0;
  for (const x of tensors) {
    parts[Math.min(shards - 1, Math.floor((acc * shards) / total))]!.push(x);
    acc += bytesOf(x);
  }
  const weightMap: Record<string, string> = {};
  let written = 0;
  parts.forEach((part, s) => {
    const file = `${stem}-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    for (const x of part) weightMap[x.name] = file;
    written += writeSparseSafetensors(join(dir, file), part);
  });
  writeJson(join(dir, `${stem}.safetensors.index.json`), { metadata: { total_size: total }, weight_map: weightMap });
  return written;
}

/** Fills rows of a 2-D bf16 tensor of a written file with seeded normal values; returns the bytes written. */
function writeRows(path: string, name: string, rows: number[], std: number, seed: number): number {
  const info = readSafetensorsHeader(path).tensors.get(name)!;
  const width = info.shape[1]!;
  const fd = openSync(path, 'r+');
  try {
    rows.forEach((row, i) => {
      const bytes = E.scope(() => E.mul(E.randn([width], { seed, offset: i * width }), std).to('bfloat16').bytes());
      writeSync(fd, bytes, 0, bytes.length, info.fileOffset + row * width * 2);
    });
  } finally {
    closeSync(fd);
  }
  return rows.length * width * 2;
}

t.test('Z-Image-Turbo real configs, 2 layers each: loads, runs one step at 64x64 and decodes', async (tt) => {
  const dir = join(tmp, 'Z-Image-Turbo-2layers');
  const t0 = performance.now();
  for (const c of ['scheduler', 'text_encoder', 'transformer', 'vae']) mkdirSync(join(dir, c), { recursive: true });
  cpSync(join(REAL, 'model_index.json'), join(dir, 'model_index.json'));
  cpSync(join(REAL, 'scheduler', 'scheduler_config.json'), join(dir, 'scheduler', 'scheduler_config.json'));
  cpSync(TOKENIZER, join(dir, 'tokenizer'), { recursive: true });

  const te = { ...readJson(join(REAL, 'text_encoder', 'config.json')), num_hidden_layers: 2 };
  writeJson(join(dir, 'text_encoder', 'config.json'), te);
  const teConfig = parseComponentConfig('Qwen3Model', te, 'text_encoder');
  const teFile = join(dir, 'text_encoder', 'model.safetensors');
  let written = writeComponent(join(dir, 'text_encoder'), 'model', qwen3TensorShapes(teConfig, 'model.'), 'bfloat16', 1, 1);
  const tokenizer = await loadTokenizer(join(dir, 'tokenizer'));
  const [encoding] = tokenizeQwenChatPrompts(tokenizer, [PROMPT], { maxLength: ZIMAGE_MAX_SEQUENCE_LENGTH, enableThinking: true });
  const rows = [...new Set(encoding!.ids.filter((_, i) => encoding!.mask[i] === 1))];
  written += writeRows(teFile, 'model.embed_tokens.weight', rows, 1, 7);

  const tr = { ...readJson(join(REAL, 'transformer', 'config.json')), n_layers: 2, n_refiner_layers: 2 };
  writeJson(join(dir, 'transformer', 'config.json'), tr);
  const trShapes = zimageTransformerTensorShapes(parseComponentConfig('ZImageTransformer2DModel', tr, 'transformer'));
  written += writeComponent(join(dir, 'transformer'), 'diffusion_pytorch_model', trShapes, 'bfloat16', 10_000, 2);

  const vae = readJson(join(REAL, 'vae', 'config.json'));
  writeJson(join(dir, 'vae', 'config.json'), vae);
  const vaeShapes = klAutoencoderTensorShapes(klStructure(parseComponentConfig('AutoencoderKL', vae, 'vae'), 'AutoencoderKL'));
  written += writeComponent(join(dir, 'vae'), 'diffusion_pytorch_model', vaeShapes, 'float32', 20_000, 1);

  const embedding = statSync(teFile);
  tt.ok(embedding.size > 778e6, `text encoder file is real size (${mb(embedding.size)} apparent)`);
  tt.ok(embedding.blocks * 512 < 64e6, `and sparse (${mb(embedding.blocks * 512)} on disk)`);
  const index = readJson(join(dir, 'transformer', 'diffusion_pytorch_model.safetensors.index.json'));
  tt.same(new Set(Object.values(index.weight_map as Record<string, string>)).size, 2, 'transformer in 2 shards with an index');
  tt.comment(`folder written in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${mb(written)} of data, ${rows.length} embedding rows`);

  const partial = await Qwen3TextEncoder.load(join(dir, 'text_encoder'), { maxHiddenState: -2 });
  tt.equal(partial.loadedLayers, 1, 'hidden_states[-2] of 2 layers: only layer 1 is loaded');
  partial.dispose();

  const rssBefore = process.resourceUsage().maxRSS * 1024;
  const t1 = performance.now();
  const p = await loadPipeline(dir);
  t.teardown(() => p.dispose());
  tt.ok(p instanceof ZImagePipeline);
  tt.match(p.info, { pipelineClass: 'ZImagePipeline', taskType: 'T2I', ditPrecision: 'bf16', vaePrecision: 'fp32' });
  tt.same(p.info.defaults, { width: 1024, height: 1024, numFrames: 1, fps: 0, numInferenceSteps: 9, guidanceScale: 0, negativePrompt: '' });
  const loadMs = performance.now() - t1;

  const r = await p.generate({ prompt: PROMPT, width: 64, height: 64, numInferenceSteps: 1, outputType: 'float' });
  tt.same(r.latents!.shape, [1, 16, 8, 8]);
  tt.same(r.floatOutput!.shape, [1, 64, 64, 3]);
  const latents = r.latents!.toFloat32();
  const image = r.floatOutput!.toFloat32();
  tt.ok(latents.every(Number.isFinite), 'finite latents');
  tt.ok(image.every((v) => v >= 0 && v <= 1), 'image in [0, 1]');
  tt.same([r.outputs.length, r.outputs[0]![0]!.width, r.outputs[0]![0]!.height], [1, 64, 64]);
  E.disposeAll([r.latents, r.floatOutput]);
  const peak = process.resourceUsage().maxRSS * 1024;
  tt.comment(
    `load ${loadMs.toFixed(0)} ms; ${Object.entries(r.timings).map(([k, v]) => `${k} ${v.toFixed(0)} ms`).join(', ')}; ` +
      `peak tensors ${r.peakMemoryMb.toFixed(0)} MB; peak RSS ${mb(peak)} (${mb(rssBefore)} before loading)`,
  );
});
