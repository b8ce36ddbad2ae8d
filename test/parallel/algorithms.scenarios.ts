// Scenarios of algorithms.test.ts and wan.test.ts, run inside each rank process (ranks.ts).
import { join } from 'node:path';

import { add, mul, sub } from '../../lib/engine/ops/basic.js';
import { attention as localAttention } from '../../lib/engine/ops/linalg.js';
import { randn, scope, type Tensor } from '../../lib/engine/tensor.js';
import { SafetensorsFile } from '../../lib/io/safetensors.js';
import { WanTransformer3DModel } from '../../lib/models/wan/transformer.js';
import { combineGuidance } from '../../lib/parallel/cfg.js';
import type { Communicator } from '../../lib/parallel/communicator.js';
import { type ParallelOptions, resolveParallelConfig } from '../../lib/parallel/config.js';
import { ParallelGroups } from '../../lib/parallel/groups.js';
import { loadPipeline } from '../../lib/pipelines/load.js';
import { WanPipeline } from '../../lib/pipelines/wan.js';
import { relL2 } from '../helpers/numeric.js';

export const GOLDEN = join(import.meta.dirname, '..', 'fixtures', 'golden', 'wan21-t2v');

function groupsFor(world: Communicator, o: ParallelOptions): ParallelGroups {
  return ParallelGroups.create(world, resolveParallelConfig({ numGpus: world.size, ...o }));
}

const values = (t: Tensor) => t.contiguous().toDevice('cpu').toFloat32();

export interface AttentionArgs {
  ulysses: number;
  ring: number;
  dtype?: 'float32' | 'bfloat16';
  /** tokens, batch, heads, head dim */
  L: number;
  B: number;
  H: number;
  D: number;
  seed: number;
}

/** Sequence-parallel self-attention of L tokens vs the same attention on one rank. */
export function attention(world: Communicator, a: AttentionArgs) {
  const sp = groupsFor(world, { ulyssesDegree: a.ulysses, ringDegree: a.ring }).sequenceParallel;
  if (!sp) throw new Error('no sequence parallelism');
  return scope(() => {
    const opts = { dtype: a.dtype ?? 'float32', device: world.device } as const;
    const [q, k, v] = [0, 1, 2].map((i) => randn([a.B, a.L, a.H, a.D], { seed: a.seed + i, ...opts })) as [Tensor, Tensor, Tensor];
    const shard = sp.shard(a.L);
    const local = shard.attention(shard.take(q, 1), shard.take(k, 1), shard.take(v, 1));
    const gathered = shard.gather(local, 1);
    const reference = localAttention(q.permute(0, 2, 1, 3), k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)).transpose(1, 2);
    return {
      rel: relL2(values(gathered), values(reference)),
      shape: gathered.shape,
      localLength: shard.localLength,
      paddedLength: shard.paddedLength,
    };
  });
}

/** Which world ranks each of this rank's groups holds. */
export function layout(world: Communicator, o: ParallelOptions) {
  const g = groupsFor(world, o);
  return {
    place: g.place,
    cfg: [...g.cfg.worldRanks],
    sp: [...g.sp.worldRanks],
    ulysses: [...g.ulysses.worldRanks],
    ring: [...g.ring.worldRanks],
  };
}

/** CFG-parallel combination vs the single-rank formula (bit for bit). */
export function cfg(world: Communicator) {
  const g = groupsFor(world, { enableCfgParallel: true });
  return scope(() => {
    const cond = randn([2, 3, 5], { seed: 11 });
    const uncond = randn([2, 3, 5], { seed: 12 });
    const got = combineGuidance(g.cfg, g.place.cfgRank === 0 ? cond : uncond, 5);
    const want = add(uncond, mul(sub(cond, uncond), 5));
    const a = values(got);
    const b = values(want);
    return { identical: a.length === b.length && a.every((x, i) => Object.is(x, b[i])), cfgRank: g.place.cfgRank };
  });
}

export interface TransformerArgs extends ParallelOptions {
  /** golden inputs, or random latents of this shape [B, 16, F, H, W] with the golden text embeddings' first rows */
  latentShape?: number[];
}

/** The golden Wan DiT with its tokens split over the ranks vs one rank (and vs the golden output). */
export async function transformer(world: Communicator, a: TransformerArgs) {
  const { latentShape, ...layoutOpts } = a;
  const g = groupsFor(world, layoutOpts);
  const model = await WanTransformer3DModel.load(join(GOLDEN, 'model', 'transformer'), { device: world.device });
  const io = SafetensorsFile.open(join(GOLDEN, 'io.safetensors'));
  try {
    return scope(() => {
      const golden = latentShape === undefined;
      const x = (golden ? io.tensor('transformer/hidden_states') : randn(latentShape, { seed: 3 })).toDevice(world.device);
      const batch = x.size(0);
      const t = io.tensor('transformer/timestep').slice(0, 0, batch).toDevice(world.device);
      const text = io.tensor('transformer/encoder_hidden_states').slice(0, 0, batch).toDevice(world.device);
      const single = model.forward(x, t, text);
      const split = model.forward(x, t, text, { sequenceParallel: g.sequenceParallel });
      const tokens = (x.size(2) * x.size(3) * x.size(4)) / 4;
      return {
        tokens,
        relToSingle: relL2(values(split), values(single)),
        relToGolden: golden ? relL2(values(split), values(io.tensor('transformer/sample'))) : null,
      };
    });
  } finally {
    io.dispose();
    model.dispose();
  }
}

/** The golden pipeline case (3 steps, CFG 5, 5 frames of 48x32) on several ranks; rank 0 returns its outputs. */
export async function pipeline(world: Communicator, a: ParallelOptions) {
  const g = groupsFor(world, a);
  const p = await loadPipeline(join(GOLDEN, 'model'), { device: 'cpu', parallel: g });
  if (!(p instanceof WanPipeline)) throw new Error('not a WanPipeline');
  const io = SafetensorsFile.open(join(GOLDEN, 'io.safetensors'));
  try {
    const run = await p.run(pipelineParams(io.tensor('pipeline/initial_latents')));
    const out = { latents: values(run.latents), video: run.video ? values(run.video) : null };
    run.latents.dispose();
    run.video?.dispose();
    return out;
  } finally {
    io.dispose();
    p.dispose();
  }
}

/** The golden case's pipeline parameters (case.json, check 'pipeline'). */
export function pipelineParams(latents: Tensor) {
  return {
    prompts: ['A red fox trotting through fresh snow at dawn, cinematic lighting, shallow depth of field'],
    negativePrompt: 'blurry, low quality, static, watermark',
    width: 48,
    height: 32,
    numFrames: 5,
    numInferenceSteps: 3,
    guidanceScale: 5,
    numOutputs: 1,
    seed: 0,
    latents,
    decode: true,
  };
}
