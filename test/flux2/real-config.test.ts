// Real FLUX.2-klein-4B checkpoints, shapes-wise: a model folder with the real configs of every
// component (the 3072-wide, 24-head Flux2Transformer2DModel with joint_attention_dim 7680, the
// Qwen3-4B text encoder with its 151936-token vocabulary, the 32-channel AutoencoderKLFlux2 with its
// batch norm), the real tensor names and stored dtypes (a single bf16 transformer file, bf16 Qwen3 in
// the Qwen3ForCausalLM layout in two shards with an index, an fp32 VAE with the int64 step counter),
// reduced to 2 double- and 2 single-stream blocks. The folder loads and runs one denoising step at
// 64x64, without and with a reference image, then decodes.
//
// The text encoder: the pipeline stacks hidden states 9, 18 and 27 of the 36-layer Qwen3-4B (3 x 2560
// = 7680 features). Running 27 real-width layers over 512 tokens costs ~2.8 TFLOP per prompt, too
// slow for a unit test, so the encoder keeps 4 layers and model_index.json selects hidden states
// 1, 2, 3 through `_text_encoder_out_layers` (the pipeline's text_encoder_out_layers argument): still
// three pre-norm intermediate layers stacked into exactly the 7680 features the real transformer takes,
// and layer 4 is never loaded, as layers 28-36 of the real encoder are not.
//
// The files are sparse: tensors of up to RANDOM_LIMIT elements hold seeded random values, larger ones
// are holes that read as zeros (the computation over them still runs at full size). The Qwen3
// embedding (151936 x 2560 bf16 = 778 MB) is a hole except the rows of the tokens the prompt uses.
import { closeSync, cpSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';

import * as E from '../../lib/engine/index.js';
import { parseComponentConfig } from '../../lib/io/configs.js';
import { tokenizeQwenChatPrompts } from '../../lib/io/prompt-tokens.js';
import { readSafetensorsHeader } from '../../lib/io/safetensors.js';
import { loadTokenizer } from '../../lib/io/tokenizer.js';
import { flux2TransformerTensorShapes, flux2VaeTensorShapes } from '../../lib/models/flux2/layout.js';
import { qwen3TensorShapes } from '../../lib/models/qwen3/layout.js';
import { FLUX2_MAX_SEQUENCE_LENGTH, Flux2KleinPipeline } from '../../lib/pipelines/flux2-klein.js';
import { loadPipeline } from '../../lib/pipelines/load.js';
import type { RgbImage } from '../../lib/pipelines/types.js';
import { type SparseFill, type SparseTensor, writeSparseSafetensors } from '../helpers/sparse-safetensors.js';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures');
const REAL = join(FIXTURES, 'real-configs', 'FLUX.2-klein-4B');
const TOKENIZER = join(FIXTURES, 'golden', 'flux2-klein', 'model', 'tokenizer');
const PROMPT = 'A red fox trotting through fresh snow at dawn';
/** tensors up to this many elements get random values, larger ones are holes (zeros) */
const RANDOM_LIMIT = 1 << 20;

const tmp = mkdtempSync(join(tmpdir(), 'nd-flux2-real-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

const readJson = (p: string) => JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;
const writeJson = (p: string, v: unknown) => writeFileSync(p, `${JSON.stringify(v, null, 2)}\n`);
const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MB`;
type Shapes = Array<[string, number[]]>;

/** Values shaped like a trained network's: 1-D gains 1, biases 0.02, matrices 1/sqrt(fan_in), running variances 1; big ones zero. */
function fillFor(name: string, shape: number[], seed: number): SparseFill {
  const numel = shape.reduce((a, b) => a * b, 1);
  if ((shape.length === 1 && name.endsWith('.weight')) || name === 'bn.running_var') return { kind: 'ones' };
  if (/(norm[^.]*|group_norm)\.bias$/.test(name) || name.startsWith('bn.') || numel > RANDOM_LIMIT) return { kind: 'zeros' };
  if (name.endsWith('.bias')) return { kind: 'randn', std: 0.02, seed };
  return { kind: 'randn', std: 1 / Math.sqrt(shape.slice(1).reduce((a, b) => a * b, 1)), seed };
}

/** Writes a component as `shards` sparse safetensors files (with the index when more than one); returns the bytes written. */
function writeComponent(dir: string, stem: string, shapes: Shapes, dtype: 'float32' | 'bfloat16', seedBase: number, shards: number): number {
  const tensors: SparseTensor[] = shapes.map(([name, shape], i) => ({
    name,
    dtype: name === 'bn.num_batches_tracked' ? 'int64' : dtype,
    shape,
    fill: fillFor(name, shape, seedBase + i),
  }));
  if (shards === 1) return writeSparseSafetensors(join(dir, `${stem}.safetensors`), tensors);
  const per = Math.ceil(tensors.length / shards);
  const weightMap: Record<string, string> = {};
  let written = 0;
  let total = 0;
  for (let s = 0; s < shards; ++s) {
    const file = `${stem}-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const part = tensors.slice(s * per, (s + 1) * per);
    for (const x of part) {
      weightMap[x.name] = file;
      total += x.shape.reduce((a, b) => a * b, 1) * E.elementSize(x.dtype);
    }
    written += writeSparseSafetensors(join(dir, file), part);
  }
  writeJson(join(dir, `${stem}.safetensors.index.json`), { metadata: { total_size: total }, weight_map: weightMap });
  return written;
}

/** Fills rows of a 2-D bf16 tensor of a written file with seeded normal values; returns the bytes written. */
function writeRows(path: string, name: string, rows: number[], seed: number): number {
  const info = readSafetensorsHeader(path).tensors.get(name)!;
  const width = info.shape[1]!;
  const fd = openSync(path, 'r+');
  try {
    rows.forEach((row, i) => {
      const bytes = E.scope(() => E.randn([width], { seed, offset: i * width }).to('bfloat16').bytes());
      writeSync(fd, bytes, 0, bytes.length, info.fileOffset + row * width * 2);
    });
  } finally {
    closeSync(fd);
  }
  return rows.length * width * 2;
}

function gradient(width: number, height: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; ++i) data.set([i % 256, (i * 7) % 256, (i * 13) % 256], i * 3);
  return { width, height, data };
}

t.test('FLUX.2-klein-4B real configs, 2+2 blocks: loads, runs one step at 64x64 with and without a reference image', async (tt) => {
  const dir = join(tmp, 'FLUX.2-klein-4B-2+2');
  const t0 = performance.now();
  for (const c of ['scheduler', 'text_encoder', 'transformer', 'vae']) mkdirSync(join(dir, c), { recursive: true });
  writeJson(join(dir, 'model_index.json'), { ...readJson(join(REAL, 'model_index.json')), _text_encoder_out_layers: [1, 2, 3] });
  cpSync(join(REAL, 'scheduler', 'scheduler_config.json'), join(dir, 'scheduler', 'scheduler_config.json'));
  cpSync(TOKENIZER, join(dir, 'tokenizer'), { recursive: true });

  const te = { ...readJson(join(REAL, 'text_encoder', 'config.json')), num_hidden_layers: 4, layer_types: Array(4).fill('full_attention') };
  writeJson(join(dir, 'text_encoder', 'config.json'), te);
  const teShapes = qwen3TensorShapes(parseComponentConfig('Qwen3ForCausalLM', te, 'text_encoder'), 'model.');
  let written = writeComponent(join(dir, 'text_encoder'), 'model', teShapes, 'bfloat16', 1, 2);
  const index = readJson(join(dir, 'text_encoder', 'model.safetensors.index.json')).weight_map as Record<string, string>;
  const embeddingFile = join(dir, 'text_encoder', index['model.embed_tokens.weight']!);
  const tokenizer = await loadTokenizer(join(dir, 'tokenizer'));
  const [encoding] = tokenizeQwenChatPrompts(tokenizer, [PROMPT], { maxLength: FLUX2_MAX_SEQUENCE_LENGTH, enableThinking: false });
  const rows = [...new Set(encoding!.ids)]; // padded rows are encoded too: the pad token's row as well
  written += writeRows(embeddingFile, 'model.embed_tokens.weight', rows, 7);

  const tr = { ...readJson(join(REAL, 'transformer', 'config.json')), num_layers: 2, num_single_layers: 2 };
  writeJson(join(dir, 'transformer', 'config.json'), tr);
  const trShapes = flux2TransformerTensorShapes(parseComponentConfig('Flux2Transformer2DModel', tr, 'transformer'));
  written += writeComponent(join(dir, 'transformer'), 'diffusion_pytorch_model', trShapes, 'bfloat16', 10_000, 1);

  const vae = readJson(join(REAL, 'vae', 'config.json'));
  writeJson(join(dir, 'vae', 'config.json'), vae);
  const vaeShapes = flux2VaeTensorShapes(parseComponentConfig('AutoencoderKLFlux2', vae, 'vae'));
  written += writeComponent(join(dir, 'vae'), 'diffusion_pytorch_model', vaeShapes, 'float32', 20_000, 1);

  const transformerFile = statSync(join(dir, 'transformer', 'diffusion_pytorch_model.safetensors'));
  tt.ok(transformerFile.size > 1.4e9, `transformer file is real size for 2+2 blocks (${mb(transformerFile.size)} apparent)`);
  tt.ok(transformerFile.blocks * 512 < 64e6, `and sparse (${mb(transformerFile.blocks * 512)} on disk)`);
  tt.same(readSafetensorsHeader(join(dir, 'vae', 'diffusion_pytorch_model.safetensors')).tensors.get('bn.num_batches_tracked')?.dtype, 'int64');
  tt.comment(`folder written in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${mb(written)} of data, ${rows.length} embedding rows`);

  const rssBefore = process.resourceUsage().maxRSS * 1024;
  const t1 = performance.now();
  const p = await loadPipeline(dir);
  t.teardown(() => p.dispose());
  tt.ok(p instanceof Flux2KleinPipeline);
  const pipeline = p as Flux2KleinPipeline;
  tt.match(p.info, { pipelineClass: 'Flux2KleinPipeline', taskType: 'TI2I', ditPrecision: 'bf16', vaePrecision: 'fp32', maxInputImages: 4 });
  tt.same(p.info.defaults, { width: 1024, height: 1024, numFrames: 1, fps: 0, numInferenceSteps: 4, guidanceScale: 1, negativePrompt: '' }, 'klein-4B (distilled)');
  tt.same(pipeline.settings.textEncoderOutLayers, [1, 2, 3]);
  const loadMs = performance.now() - t1;

  const embeds = await pipeline.encodePrompts([PROMPT]);
  tt.same(embeds.shape, [1, 512, 7680], '3 stacked 2560-wide hidden states = joint_attention_dim');
  tt.ok(embeds.toFloat32().every(Number.isFinite), 'finite prompt embeddings');
  embeds.dispose();

  const plain = await p.generate({ prompt: PROMPT, width: 64, height: 64, numInferenceSteps: 1, outputType: 'float' });
  tt.same([plain.latents!.shape, plain.floatOutput!.shape], [[1, 32, 8, 8], [1, 64, 64, 3]]);
  tt.ok(plain.latents!.toFloat32().every(Number.isFinite), 'finite latents');
  tt.ok(plain.floatOutput!.toFloat32().every((v) => v >= 0 && v <= 1), 'image in [0, 1]');
  const edit = await p.generate({ prompt: PROMPT, images: [gradient(64, 80)], numInferenceSteps: 1, outputType: 'float' });
  tt.same([edit.width, edit.height, edit.floatOutput!.shape], [64, 80, [1, 80, 64, 3]], 'the reference sets the size');
  tt.ok(edit.floatOutput!.toFloat32().every((v) => v >= 0 && v <= 1), 'edited image in [0, 1]');
  tt.ok(edit.timings.encode_images! > 0, 'reference image encoded');
  E.disposeAll([plain.latents, plain.floatOutput, edit.latents, edit.floatOutput]);
  const peak = process.resourceUsage().maxRSS * 1024;
  const fmt = (r: { timings: Record<string, number> }) => Object.entries(r.timings).map(([k, v]) => `${k} ${v.toFixed(0)} ms`).join(', ');
  tt.comment(`load ${loadMs.toFixed(0)} ms; text-to-image: ${fmt(plain)}; edit: ${fmt(edit)}`);
  tt.comment(`peak tensors ${Math.max(plain.peakMemoryMb, edit.peakMemoryMb).toFixed(0)} MB; peak RSS ${mb(peak)} (${mb(rssBefore)} before loading)`);
});
