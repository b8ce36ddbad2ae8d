// Per-item seeds (GenerateRequest.seeds), what request batching builds on: item j's noise is exactly
// what a request of its own with seed seeds[j] draws, so several requests run as one pipeline batch
// (their prompts repeated per output, one seed per item) give each request its own outputs alone, up
// to float rounding of the batched GEMMs. Checked on every pipeline's demo model, with the previews
// of item ranges the runtime streams per request, and the RequestErrors of bad seeds.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';

import { relL2Error } from '../../lib/check/run.js';
import * as E from '../../lib/engine/index.js';
import { itemSeeds, seededNoise } from '../../lib/pipelines/common.js';
import { loadPipeline } from '../../lib/pipelines/load.js';
import type { GenerateRequest, GenerateResult, Pipeline, RgbImage } from '../../lib/pipelines/types.js';
import { expectRequestErrors } from '../helpers/pipeline.js';

const tmp = mkdtempSync(join(tmpdir(), 'nd-seeds-'));
process.env.ND_DEMO_CACHE = join(tmp, 'demo');
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

t.test('seededNoise: item j is exactly randn with seeds[j]; itemSeeds defaults to seed + j', async (tt) => {
  const shape = [3, 4, 2, 5];
  const noise = seededNoise(shape, [7, 8, 1000], 'cpu');
  const alone = [7, 8, 1000].map((seed) => E.randn([4, 2, 5], { seed }));
  for (let j = 0; j < 3; ++j) tt.same(E.scope(() => noise.select(0, j).contiguous().toArray()), alone[j]!.toArray(), `item ${j}`);
  E.disposeAll([noise, ...alone]);
  tt.same(itemSeeds({ seed: 5 }, 3), [5, 6, 7]);
  tt.same(itemSeeds({ seed: 5, seeds: [9, 1, 4] }, 3), [9, 1, 4]);
  tt.throws(() => itemSeeds({ seed: 5, seeds: [9] }, 3), /seeds must be a list of 3 seeds, got 1/);
  tt.throws(() => seededNoise([2, 3], [1], 'cpu'), /1 seeds for a batch of 2/);
});

const maxLevelDiff = (a: RgbImage[], b: RgbImage[]) =>
  a.reduce((m, img, f) => img.data.reduce((mm, v, i) => Math.max(mm, Math.abs(v - b[f]!.data[i]!)), m), 0);

/** The float outputs of items [from, from + count) of a result, flattened. */
function floatItems(r: GenerateResult, from: number, count: number): Float32Array {
  const out = r.floatOutput!;
  return E.scope(() => out.slice(0, from, from + count).contiguous().toFloat32());
}

/**
 * Request A (2 outputs from seed 7) and request B (seed 100, another prompt) run alone, then as one
 * batch of three items ([A, A, B], seeds [7, 8, 100], one output each): the same outputs per item.
 */
async function expectBatchAsAlone(tt: Test, pipeline: Pipeline, base: GenerateRequest): Promise<void> {
  const a = await pipeline.generate({ ...base, prompt: 'a red fox trotting through snow', seed: 7, numOutputs: 2, outputType: 'float' });
  const b = await pipeline.generate({ ...base, prompt: 'a lighthouse at night', seed: 100, outputType: 'float' });
  const seen: string[] = [];
  const batch = await pipeline.generate({
    ...base,
    prompt: ['a red fox trotting through snow', 'a red fox trotting through snow', 'a lighthouse at night'],
    seeds: [7, 8, 100],
    outputType: 'float',
    onProgress: (p) => {
      if (p.stage !== 'denoise' || p.step !== 1 || !p.preview) return;
      // the previews of one request's items, as the runtime streams them per request
      const last = p.preview(2, 1);
      const firstTwo = p.preview(0, 2);
      seen.push(`${last.length}:${last[0]!.width}x${last[0]!.height}`, `${firstTwo.length}`);
      tt.throws(() => p.preview!(2, 2), /items \[2, 4\) are outside the batch of 3/);
    },
  });
  const frames = base.numFrames ?? 1;
  tt.same(seen, frames > 1 ? [`${frames}:48x32`, `${frames}`] : ['1:48x32', '2'], 'previews of item ranges');
  tt.equal(batch.outputs.length, 3);
  tt.ok(relL2Error(floatItems(batch, 0, 2), floatItems(a, 0, 2)) <= 1e-5, 'A: float outputs as alone');
  tt.ok(relL2Error(floatItems(batch, 2, 1), floatItems(b, 0, 1)) <= 1e-5, 'B: float outputs as alone');
  tt.ok(maxLevelDiff(batch.outputs[0]!, a.outputs[0]!) <= 1 && maxLevelDiff(batch.outputs[1]!, a.outputs[1]!) <= 1, 'A: pixels within 1/255');
  tt.ok(maxLevelDiff(batch.outputs[2]!, b.outputs[0]!) <= 1, 'B: pixels within 1/255');
  tt.ok(maxLevelDiff(a.outputs[0]!, b.outputs[0]!) > 1, 'the two requests differ');
  E.disposeAll([a.latents, a.floatOutput, b.latents, b.floatOutput, batch.latents, batch.floatOutput]);

  expectRequestErrors(tt, pipeline, { ...base, prompt: 'x' }, [
    [{ seeds: [1, 2] }, 'seeds', /seeds must be a list of 1 seeds \(one per output: prompts x n\), got 2/],
    [{ seeds: [1], numOutputs: 2 }, 'seeds', /list of 2 seeds/],
    [{ seeds: 'abc' as never }, 'seeds', /list of 1 seeds .* got string/],
    [{ seeds: [-1] }, 'seeds', /seeds\[0\] must be an integer in \[0, 9007199254740991\], got -1/],
    [{ seeds: [1.5] }, 'seeds', /seeds\[0\] must be an integer/],
    [{ seeds: [Number.NaN] }, 'seeds', /seeds\[0\] must be an integer/],
    [{ prompt: ['x', 'y'], seeds: [1, 2, 3] }, 'seeds', /list of 2 seeds/],
  ]);
  tt.same(pipeline.validate({ ...base, prompt: ['x', 'y'], numOutputs: 2, seed: 3 }).seeds, [3, 4, 5, 6], 'resolved: seed + j');
}

for (const [model, base] of [
  ['demo:zimage', { width: 48, height: 32, numInferenceSteps: 2 }],
  ['demo:flux2-klein', { width: 48, height: 32, numInferenceSteps: 2 }],
  ['demo:wan', { width: 48, height: 32, numFrames: 5, numInferenceSteps: 2 }],
] as Array<[string, Omit<GenerateRequest, 'prompt'>]>) {
  t.test(`${model}: a batch of requests with per-item seeds gives each its outputs alone`, async (tt) => {
    const pipeline = await loadPipeline(model);
    try {
      await expectBatchAsAlone(tt, pipeline, { prompt: '', ...base });
    } finally {
      pipeline.dispose();
    }
  });
}
