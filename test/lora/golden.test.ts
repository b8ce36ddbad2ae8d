// The golden `lora` checks (lora_peft, lora_kohya, lora_two) of the Wan and Z-Image cases, as
// `node-diffusion check` runs them: fused weights within 1e-6 and the fused transformer forward within
// 1e-4 of the reference (diffusers load_lora_weights + fuse_lora), and the key -> module mapping, rank
// and alpha read from each file equal to what case.json records. The measured errors are printed.
import { join } from 'node:path';
import t from 'tap';

import '../../lib/check/all.js';
import { formatError, runCase } from '../../lib/check/run.js';

const GOLDEN = join(import.meta.dirname, '..', 'fixtures', 'golden');

for (const [dir, pipelineClass] of [['wan21-t2v', 'WanPipeline'], ['zimage-turbo', 'ZImagePipeline']] as const) {
  t.test(`${dir}: lora_peft, lora_kohya and lora_two pass`, async (tt) => {
    const result = await runCase(join(GOLDEN, dir), { only: ['lora_peft', 'lora_kohya', 'lora_two'] });
    tt.equal(result.pipelineClass, pipelineClass);
    tt.equal(result.checks.length, 3);
    for (const r of result.checks) {
      tt.ok(r.pass, `${r.name}: ${r.reason ?? 'pass'}`);
      const fused = r.outputs.filter((o) => o.output.startsWith('merged_weight:'));
      const forward = r.outputs.find((o) => o.output === 'transformer_output');
      tt.ok(fused.length >= 5, `${r.name}: ${fused.length} fused weights compared`);
      tt.ok(forward, `${r.name}: the forward is compared`);
      for (const o of r.outputs) for (const e of o.errors) tt.ok(e <= o.max!, `${r.name}/${o.output}: rel-L2 ${formatError(e)} <= ${o.max}`);
      const worstFused = Math.max(...fused.flatMap((o) => o.errors));
      tt.comment(`${dir} ${r.name}: fused weights worst rel-L2 ${formatError(worstFused)}, forward ${forward!.errors.map(formatError).join(', ')}`);
    }
  });
}
