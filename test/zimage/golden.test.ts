// The zimage-turbo golden case through `node-diffusion check`: every check except the LoRA ones
// (another issue) has a ZImagePipeline runner and passes within the case's tolerance; the measured
// errors are printed.
import { join } from 'node:path';
import t from 'tap';

import '../../lib/check/all.js';
import { findCheck } from '../../lib/check/registry.js';
import { formatError, runCase } from '../../lib/check/run.js';

const CASE = join(import.meta.dirname, '..', 'fixtures', 'golden', 'zimage-turbo');

t.test('every non-LoRA check of zimage-turbo passes', async (tt) => {
  const result = await runCase(CASE);
  tt.equal(result.pipelineClass, 'ZImagePipeline');
  const checked = result.checks.filter((r) => r.kind !== 'lora');
  tt.same(
    checked.map((r) => r.name),
    ['tokenize', 'text_encode', 'transformer', 'vae_decode', 'vae_encode', 'scheduler', 'scheduler_step', 'pipeline', 'pipeline_cfg'],
    'the checks of the case',
  );
  for (const r of checked) {
    tt.ok(findCheck('ZImagePipeline', r.kind), `${r.kind} has a runner`);
    tt.ok(r.pass, `${r.name}: ${r.reason ?? 'pass'}`);
    for (const o of r.outputs) {
      if (o.metric === 'exact') tt.equal(o.mismatches, 0, `${r.name}/${o.output} exact`);
      else for (const e of o.errors) tt.ok(e <= o.max!, `${r.name}/${o.output} rel-L2 ${formatError(e)} <= ${o.max}`);
    }
    tt.comment(`${r.name}: worst rel-L2 ${r.worstRelL2 === null ? '-' : formatError(r.worstRelL2)} (${r.ms.toFixed(0)} ms)`);
  }
});
