// LoRA switching on the real-config Z-Image-Turbo DiT: the transformer folder of the real-config test
// (the real config and tensor names, bf16 weights in two sparse shards, memory-mapped; 2 main layers
// and the real 2 + 2 refiner layers) and a rank-32 kohya LoRA (bf16, alpha 16) on every attention
// projection and feed-forward matrix of those 6 blocks (quick mode: the attention projections only).
// Measured from the unmerged model: set_lora with an uncached adapter (file read + key matching +
// merge) and with a cached one (merge only), a switch between two cached adapters (re-merge in place),
// unmerge, and the sha256 weight checksum. The merge's GFLOP/s count the rank-32 products and the adds.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import * as E from '../../lib/engine/index.js';
import { parseComponentConfig } from '../../lib/io/configs.js';
import { writeSafetensors } from '../../lib/io/safetensors.js';
import { LoraManager, weightsChecksum } from '../../lib/lora/manager.js';
import { zimageTransformerTensorShapes } from '../../lib/models/zimage/layout.js';
import { ZImageTransformer2DModel } from '../../lib/models/zimage/transformer.js';
import { type SparseTensor, writeSparseSafetensors } from '../../test/helpers/sparse-safetensors.js';
import { type BenchCase, type BenchRow, timeIt } from '../lib.js';

const here = dirname(fileURLToPath(import.meta.url));
const REAL = join(here, '..', '..', 'test', 'fixtures', 'real-configs', 'Z-Image-Turbo', 'transformer', 'config.json');
const RANK = 32;
const FULL_BLOCKS = 30 + 2 + 2;

/** The real-config test's transformer folder: real config, 2 + 2 + 2 blocks, bf16 in two sparse shards. */
function writeTransformer(dir: string): ReturnType<typeof parseComponentConfig<'ZImageTransformer2DModel'>> {
  const raw = { ...(JSON.parse(readFileSync(REAL, 'utf8')) as Record<string, unknown>), n_layers: 2 };
  const config = parseComponentConfig('ZImageTransformer2DModel', raw, REAL);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(raw));
  const shapes = zimageTransformerTensorShapes(config);
  const tensors: SparseTensor[] = shapes.map(([name, shape], i) => ({
    name,
    dtype: 'bfloat16',
    shape,
    fill: shape.length === 1 ? { kind: 'ones' } : shape.reduce((a, b) => a * b, 1) > 1 << 20 ? { kind: 'zeros' } : { kind: 'randn', std: 0.02, seed: i + 1 },
  }));
  const half = Math.ceil(tensors.length / 2);
  const files = ['diffusion_pytorch_model-00001-of-00002.safetensors', 'diffusion_pytorch_model-00002-of-00002.safetensors'];
  writeSparseSafetensors(join(dir, files[0]!), tensors.slice(0, half));
  writeSparseSafetensors(join(dir, files[1]!), tensors.slice(half));
  const weightMap = Object.fromEntries(tensors.map((t, i) => [t.name, files[i < half ? 0 : 1]]));
  writeFileSync(join(dir, 'diffusion_pytorch_model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  return config;
}

/** A kohya LoRA over the given modules ([out, in] each); returns the multiply-adds of merging it. */
function writeLora(path: string, modules: Array<[string, number[]]>, seed: number): number {
  const tensors: Record<string, E.Tensor> = {};
  let flops = 0;
  modules.forEach(([m, [out, inp]], i) => {
    const k = `lora_unet_${m.replace(/\./g, '_')}`;
    tensors[`${k}.lora_down.weight`] = E.scope(() => E.mul(E.randn([RANK, inp!], { seed: seed + 2 * i }), 0.01).to('bfloat16'));
    tensors[`${k}.lora_up.weight`] = E.scope(() => E.mul(E.randn([out!, RANK], { seed: seed + 2 * i + 1 }), 0.01).to('bfloat16'));
    tensors[`${k}.alpha`] = E.tensor([16], []);
    flops += 2 * out! * inp! * RANK + out! * inp!;
  });
  writeSafetensors(path, tensors);
  E.disposeAll(tensors);
  return flops;
}

const lora: BenchCase = async (ctx) => {
  const tmp = mkdtempSync(join(tmpdir(), 'nd-bench-lora-'));
  const rows: BenchRow[] = [];
  const dir = join(tmp, 'transformer');
  try {
    mkdirSync(dir);
    writeTransformer(dir);
    const model = await ZImageTransformer2DModel.load(dir);
    const layers = ctx.quick ? /\.attention\.(to_q|to_k|to_v|to_out\.0)\.weight$/ : /\.(attention\.(to_q|to_k|to_v|to_out\.0)|feed_forward\.w[123])\.weight$/;
    const targets = model
      .parameterNames()
      .filter((n) => layers.test(n))
      .map((n): [string, number[]] => [n.slice(0, -'.weight'.length), model.parameter(n).shape]);
    const blocks = new Set(targets.map(([m]) => m.split('.').slice(0, 2).join('.'))).size;
    const pathA = join(tmp, 'a.safetensors');
    const pathB = join(tmp, 'b.safetensors');
    const flops = writeLora(pathA, targets, 1);
    writeLora(pathB, targets, 1000);
    const fileMb = readFileSync(pathA).length / 2 ** 20;
    const params = targets.reduce((a, [, [o, i]]) => a + o! * i!, 0);
    const what = `rank ${RANK} on ${targets.length} matrices of ${blocks} blocks (${(params / 1e6).toFixed(0)}M bf16 weights, ${fileMb.toFixed(0)} MB file)`;
    const manager = new LoraManager({ transformer: model }, { maxLoras: 64 });
    try {
      let serial = 0;
      const reps = ctx.quick ? 2 : 3;
      // uncached: a new nickname each time, so the file is read and matched again (one warm-up run first)
      const setFresh = async () => {
        await manager.unmergeLora();
        const t0 = performance.now();
        await manager.setLora({ lora_nickname: `fresh${++serial}`, lora_path: pathA });
        return performance.now() - t0;
      };
      await setFresh();
      const uncached = await medianOf(reps, setFresh);
      rows.push({ group: 'lora', name: `set_lora uncached (read + match + merge), ${what}`, ms: uncached, gflops: flops / uncached / 1e6 });
      await manager.setLora({ lora_nickname: 'a', lora_path: pathA });
      await manager.setLora({ lora_nickname: 'b', lora_path: pathB });
      const cached = await medianOf(reps, async () => {
        await manager.unmergeLora();
        const t0 = performance.now();
        await manager.setLora({ lora_nickname: 'a' });
        return performance.now() - t0;
      });
      rows.push({ group: 'lora', name: `set_lora cached (merge into new copies), ${what}`, ms: cached, gflops: flops / cached / 1e6 });
      let next = 'b';
      const swap = await medianOf(reps, async () => {
        const t0 = performance.now();
        await manager.setLora({ lora_nickname: next });
        next = next === 'a' ? 'b' : 'a';
        return performance.now() - t0;
      });
      rows.push({
        group: 'lora',
        name: `switch between two cached adapters (re-merge in place), ${what}`,
        ms: swap,
        gflops: flops / swap / 1e6,
        note: `full Turbo (${FULL_BLOCKS} blocks) ~${((swap * FULL_BLOCKS) / blocks / 1000).toFixed(1)} s`,
      });
      const unmerge = await medianOf(reps, async () => {
        await manager.setLora({ lora_nickname: 'a' });
        const t0 = performance.now();
        await manager.unmergeLora();
        return performance.now() - t0;
      });
      rows.push({ group: 'lora', name: `unmerge (swap the base views back), ${what}`, ms: unmerge });
      const bytes = model.parameterNames().reduce((a, n) => a + model.parameter(n).numel * E.elementSize(model.parameter(n).dtype), 0);
      const sumMs = await timeIt(() => void weightsChecksum(model), 1, 0);
      rows.push({ group: 'lora', name: `weights checksum (sha256 of the ${(bytes / 2 ** 30).toFixed(2)} GiB DiT)`, ms: sumMs, gbps: bytes / sumMs / 1e6 });
    } finally {
      manager.dispose();
      model.dispose();
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return rows;
};

async function medianOf(reps: number, run: () => Promise<number>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < reps; ++i) times.push(await run());
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

export default lora;
