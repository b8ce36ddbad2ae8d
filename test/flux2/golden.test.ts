// The flux2-klein golden case through `node-diffusion check`: every check (tokenize, stacked Qwen3
// encoding, both transformer forwards, VAE decode/encode with the batch norm, scheduler tables with
// the empirical mu, stepping, and the text-to-image (CFG and no CFG) and image-editing pipelines)
// has a Flux2KleinPipeline runner and passes within the case's tolerance; the errors are printed.
import { join } from 'node:path';
import t from 'tap';

import '../../lib/check/all.js';
import { findCheck } from '../../lib/check/registry.js';
import { formatError, runCase } from '../../lib/check/run.js';

const CASE = join(import.meta.dirname, '..', 'fixtures', 'golden', 'flux2-klein');

t.test('every check of flux2-klein passes', async (tt) => {
  const result = await runCase(CASE);
  tt.equal(result.pipelineClass, 'Flux2KleinPipeline');
  tt.same(
    result.checks.map((r) => r.name),
    ['tokenize', 'text_encode', 'transformer', 'transformer_ref', 'vae_decode', 'vae_encode', 'scheduler', 'scheduler_step', 'pipeline', 'pipeline_nocfg', 'pipeline_edit'],
    'the checks of the case',
  );
  for (const r of result.checks) {
    tt.ok(findCheck('Flux2KleinPipeline', r.kind), `${r.kind} has a runner`);
    tt.ok(r.pass, `${r.name}: ${r.reason ?? 'pass'}`);
    for (const o of r.outputs) {
      if (o.metric === 'exact') tt.equal(o.mismatches, 0, `${r.name}/${o.output} exact`);
      else for (const e of o.errors) tt.ok(e <= o.max!, `${r.name}/${o.output} rel-L2 ${formatError(e)} <= ${o.max}`);
    }
    tt.comment(`${r.name}: worst rel-L2 ${r.worstRelL2 === null ? '-' : formatError(r.worstRelL2)} (${r.ms.toFixed(0)} ms)`);
  }
  tt.ok(result.pass, 'the case passes');
});
