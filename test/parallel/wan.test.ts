// The Wan2.1 golden model on several rank processes: the DiT with its tokens split (golden inputs,
// and odd token counts that need padding) and the whole pipeline (prompt embeddings shared by rank 0,
// sequence-parallel and CFG-parallel denoising, VAE decode on rank 0) give what one rank gives.
import { join } from 'node:path';
import t from 'tap';

import { SafetensorsFile } from '../../lib/io/safetensors.js';
import { loadPipeline } from '../../lib/pipelines/load.js';
import { WanPipeline } from '../../lib/pipelines/wan.js';
import { relL2 } from '../helpers/numeric.js';
import { GOLDEN, pipelineParams } from './algorithms.scenarios.js';
import { startRanks } from './ranks.js';

type TransformerResult = { tokens: number; relToSingle: number; relToGolden: number | null };
type PipelineResult = { latents: Float32Array; video: Float32Array | null };

// The single-rank pipeline and the golden outputs to compare with.
const io = SafetensorsFile.open(join(GOLDEN, 'io.safetensors'));
const goldenLatents = io.tensor('pipeline/latents').toFloat32();
const goldenVideo = io.tensor('pipeline/video').toFloat32();
const single = await (async () => {
  const p = await loadPipeline(join(GOLDEN, 'model'), { device: 'cpu' });
  if (!(p instanceof WanPipeline)) throw new Error('not a WanPipeline');
  try {
    const run = await p.run(pipelineParams(io.tensor('pipeline/initial_latents')));
    return { latents: run.latents.toFloat32(), video: (run.video as NonNullable<typeof run.video>).toFloat32() };
  } finally {
    p.dispose();
  }
})();
io.dispose();

const LAYOUTS: Record<number, Array<Record<string, number | boolean>>> = {
  2: [{ ulyssesDegree: 2 }, { ringDegree: 2 }, { enableCfgParallel: true }],
  4: [{ ulyssesDegree: 2, ringDegree: 2 }, { ringDegree: 4 }, { enableCfgParallel: true, ulyssesDegree: 2 }, { enableCfgParallel: true, ringDegree: 2 }],
};

for (const size of [2, 4]) {
  t.test(`${size} ranks`, async (t) => {
    const pool = await startRanks(size, 'algorithms.scenarios.ts');
    t.teardown(() => pool.close());

    t.test('the golden DiT with split tokens equals one rank (rel-L2 <= 1e-5) and the golden output', async (t) => {
      for (const layout of LAYOUTS[size]!.filter((l) => !l.enableCfgParallel)) {
        const golden = await pool.run<TransformerResult>('transformer', layout);
        for (const g of golden) {
          t.ok(g.relToSingle <= 1e-5, `${JSON.stringify(layout)}: ${g.tokens} tokens, rel-L2 to one rank ${g.relToSingle.toExponential(2)}`);
          t.ok((g.relToGolden as number) <= 1e-4, `rel-L2 to the golden sample ${(g.relToGolden as number).toExponential(2)} (tolerance 1e-4)`);
        }
        // 15 tokens (a padded last shard) and 5 tokens (on 4 ranks, a shard of padding only)
        for (const latentShape of [[1, 16, 1, 6, 10], [1, 16, 1, 2, 10]]) {
          const odd = await pool.run<TransformerResult>('transformer', { ...layout, latentShape });
          for (const g of odd) t.ok(g.relToSingle <= 1e-5, `${JSON.stringify(layout)}: ${g.tokens} tokens, rel-L2 ${g.relToSingle.toExponential(2)}`);
        }
      }
    });

    t.test('the golden pipeline equals one rank (rel-L2 <= 1e-5); only rank 0 decodes', async (t) => {
      for (const layout of LAYOUTS[size]!) {
        const got = await pool.run<PipelineResult>('pipeline', layout);
        const what = JSON.stringify(layout);
        got.forEach((g, r) => {
          const e = relL2(g.latents, single.latents);
          t.ok(e <= 1e-5, `${what}: latents on rank ${r}, rel-L2 ${e.toExponential(2)}`);
          if (r > 0) t.equal(g.video, null, `rank ${r} does not decode`);
        });
        const video = got[0]!.video as Float32Array;
        const e = relL2(video, single.video);
        t.ok(e <= 1e-5, `${what}: video rel-L2 to one rank ${e.toExponential(2)}`);
        t.ok(relL2(got[0]!.latents, goldenLatents) <= 1e-3 && relL2(video, goldenVideo) <= 1e-3, `${what}: within the golden tolerance`);
      }
    });
  });
}
